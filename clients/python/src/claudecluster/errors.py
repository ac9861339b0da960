"""Exceptions. Every error answer of the API is ``{code, message}`` with an
HTTP status; :func:`from_response` turns it into a :class:`ClaudeClusterError`
of the class its status names, keeping the server's stable ``code`` (e.g.
``session_not_found``, ``session_busy``, ``push_refused``) for programs to
branch on.
"""

from __future__ import annotations

import json
from typing import Dict, Mapping, Optional, Type

__all__ = [
    "ClaudeClusterError",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "RateLimited",
    "ServerError",
    "Unavailable",
    "ServerUnreachable",
    "SessionFailed",
    "StreamError",
    "WebhookVerificationError",
    "from_response",
]


class ClaudeClusterError(Exception):
    """An error the server answered (``status`` is its HTTP status), or one
    met on the way to it (``status`` 0: see :class:`ServerUnreachable`,
    :class:`SessionFailed`, :class:`StreamError`).

    ``code`` is the server's stable machine code; ``message`` its text for
    people.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.status:
            return f"{self.status} {self.code}: {self.message}"
        return f"{self.code}: {self.message}"


class InvalidRequest(ClaudeClusterError):
    """400, 413, 415 or 422: the request was refused as it stands
    (``invalid_request``, ``invalid_option``, ``invalid_path``,
    ``idempotency_key_reused``, …)."""


class Unauthorized(ClaudeClusterError):
    """401: no token, or one the server does not know (``unauthorized``)."""


class Forbidden(ClaudeClusterError):
    """403: the token may not do this (``forbidden``, ``push_refused``,
    ``budget_exhausted``, ``forbidden_path``, …)."""


class NotFound(ClaudeClusterError):
    """404: ``session_not_found``, ``path_not_found``, ``not_found``."""


class Conflict(ClaudeClusterError):
    """409: the session's state forbids it now (``session_busy``,
    ``session_not_active``, ``push_rejected``), or a create with the same
    ``Idempotency-Key`` is still running (``idempotency_key_in_use``)."""


class RateLimited(ClaudeClusterError):
    """429: ``rate_limited``, ``too_many_streams``; ``retry_after`` is the
    server's ``Retry-After`` in seconds when it sent one."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class ServerError(ClaudeClusterError):
    """5xx: ``internal``, ``forge_refused`` (502), …"""


class Unavailable(ServerError):
    """503: ``unavailable`` (the store is down), ``session_moved`` (the
    session changed replicas; retrying reaches its new owner), ``not_ready``."""


class ServerUnreachable(ClaudeClusterError):
    """No HTTP answer at all: refused, timed out, DNS, TLS (``status`` 0,
    ``code`` ``unreachable``)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "unreachable", message)


class SessionFailed(ClaudeClusterError):
    """The session reached ``error`` (or ended) while the SDK waited for it
    to do something else (``status`` 0, ``code`` ``session_failed``);
    ``reason`` is the session's."""

    def __init__(self, session_id: str, state: str, reason: Optional[str]) -> None:
        text = f"session {session_id} is {state}"
        if reason:
            text += f": {reason}"
        super().__init__(0, "session_failed", text)
        self.session_id = session_id
        self.state = state
        self.reason = reason


class StreamError(ClaudeClusterError):
    """The server refused a message sent over the session's WebSocket (an
    ``error`` with ``seq`` 0 answering it: ``invalid_message``,
    ``session_busy``, …), or the stream could not be resumed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(0, code, message)


class WebhookVerificationError(Exception):
    """A webhook delivery whose signature, timestamp or body does not hold
    up; raised by :func:`claudecluster.webhooks.verify`. Answer the delivery
    with a 4xx and do not act on it."""


_BY_STATUS: Dict[int, Type[ClaudeClusterError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}

# What the body is cut to when it is not the API's `{code, message}` (a
# proxy's HTML page, say) and becomes the message instead.
_MAX_FOREIGN_BODY = 300


def from_response(
    status: int, body: bytes, headers: Optional[Mapping[str, str]] = None
) -> ClaudeClusterError:
    """The exception for an error answer: its class from ``status``, its
    ``code`` and ``message`` from the ``{code, message}`` body (``http_<status>``
    and the body's start when the body is something else)."""
    code = f"http_{status}"
    message = body[:_MAX_FOREIGN_BODY].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        code = parsed["code"]
        message = str(parsed.get("message", ""))
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ClaudeClusterError
    if cls is RateLimited:
        return RateLimited(status, code, message, _retry_after(headers))
    return cls(status, code, message)


def _retry_after(headers: Optional[Mapping[str, str]]) -> Optional[float]:
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None

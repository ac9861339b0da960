"""The REST transport: JSON over ``urllib.request``, bearer authentication,
and error answers turned into exceptions (:mod:`claudecluster.errors`)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from ._version import __version__
from .errors import ServerUnreachable, from_response

USER_AGENT = f"claudecluster-python/{__version__}"


@dataclass(frozen=True)
class Response:
    status: int
    headers: Dict[str, str]
    body: Any

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class Transport:
    def __init__(self, base_url: str, token: Optional[str], timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def auth_headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def url(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        url = self.base_url + path
        if query:
            pairs = {k: _query_value(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, Any]] = None,
        body: Optional[Any] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Sends one request; returns the decoded 2xx answer or raises the
        error it stands for."""
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        all_headers.update(self.auth_headers())
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        if headers:
            all_headers.update(headers)
        req = urllib.request.Request(
            self.url(path, query), data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
                resp_headers = dict(resp.headers.items())
        except urllib.error.HTTPError as e:
            raw = e.read() if e.fp is not None else b""
            raise from_response(e.code, raw, dict(e.headers.items()) if e.headers else {}) from None
        except urllib.error.URLError as e:
            raise ServerUnreachable(f"{self.base_url}: {e.reason}") from None
        except (socket.timeout, ConnectionError) as e:
            raise ServerUnreachable(f"{self.base_url}: {e}") from None
        parsed = json.loads(raw) if raw else None
        return Response(status=status, headers=resp_headers, body=parsed)


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)

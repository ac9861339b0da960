"""The client: one method per API call, plus :meth:`Client.run` (one turn,
start to end) and :meth:`Client.wait_for_state`."""

from __future__ import annotations

import os
import time
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Union

from ._http import Transport
from .errors import SessionFailed, StreamError
from .models import (
    CommandAccepted,
    CommandEvent,
    CreatedSession,
    DeletedSession,
    Diff,
    Directory,
    ErrorEvent,
    Event,
    File,
    Interrupted,
    Logs,
    PermissionAnswered,
    PullRequestOptions,
    PushResult,
    Session,
    SessionState,
    StatusEvent,
    Turn,
    decode_path,
)
from .stream import EventStream

__all__ = ["Client", "DEFAULT_URL"]

#: Where the server is when neither the argument nor ``CLAUDECLUSTER_URL``
#: says (the CLI's default too).
DEFAULT_URL = "http://127.0.0.1:8080"
#: How long one REST request may take.
DEFAULT_TIMEOUT_S = 60.0
#: How long :meth:`Client.run` waits for a turn: Claude Code turns that run
#: builds and tests take minutes.
DEFAULT_TURN_TIMEOUT_S = 1800.0
#: How often :meth:`Client.wait_for_state` reads the status.
POLL_INTERVAL_S = 0.5
#: States from which a session does not come back to ``ready``.
_ENDING = (SessionState.ERROR, SessionState.TERMINATING, SessionState.TERMINATED)
#: Errors a queued command can end with, instead of a turn.
_UNDELIVERED = frozenset({"command_not_delivered"})


def _path_id(session_id: str) -> str:
    return urllib.parse.quote(session_id, safe="")


class Client:
    """A ClaudeCluster server's API.

    ``url`` defaults to ``$CLAUDECLUSTER_URL``, then ``http://127.0.0.1:8080``;
    ``token`` (sent as ``Authorization: Bearer``) to ``$CLAUDECLUSTER_TOKEN``
    — the same variables as the ``claudecluster`` command line.

    Errors are :class:`~claudecluster.errors.ClaudeClusterError` subclasses
    (``NotFound``, ``Conflict``, …) carrying the server's ``code``.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        url = url or os.environ.get("CLAUDECLUSTER_URL") or DEFAULT_URL
        token = token or os.environ.get("CLAUDECLUSTER_TOKEN") or None
        self._http = Transport(url, token, timeout)

    @property
    def url(self) -> str:
        return self._http.base_url

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- sessions -------------------------------------------------------------

    def create_session(
        self,
        repo_url: str,
        claude_api_key: Optional[str] = None,
        *,
        branch: Optional[str] = None,
        repo_token: Optional[str] = None,
        memory: Union[str, float, None] = None,
        cpu: Union[str, float, None] = None,
        timeout: Optional[int] = None,
        idle_timeout: Optional[int] = None,
        egress: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> CreatedSession:
        """Creates a session on ``repo_url`` (``branch``, default the
        repository's). ``claude_api_key`` defaults to ``$ANTHROPIC_API_KEY``.

        ``memory`` (``"2g"``, MiB as a number), ``cpu`` (cores), ``timeout``
        (maximum lifetime, s), ``idle_timeout`` (s) and ``egress``
        (``none | allowlist | open``) are the session's limits, bounded by
        the server's. ``options`` is passed as the API's camelCase
        ``options`` object (``model``, ``permissionMode``, ``allowedTools``,
        ``maxBudgetUsd``, ``instructions``, …).

        With ``idempotency_key``, sending the same request again within 24 h
        returns the first answer (``replayed`` is then True) instead of a
        second session; the same key with another body is
        ``InvalidRequest`` (``idempotency_key_reused``).
        """
        key = claude_api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ValueError("claude_api_key is required (or set ANTHROPIC_API_KEY)")
        body: Dict[str, Any] = {"repoUrl": repo_url, "claudeApiKey": key}
        if branch is not None:
            body["branch"] = branch
        if repo_token is not None:
            body["repoToken"] = repo_token
        config = {
            k: v
            for k, v in (
                ("memory", memory),
                ("cpu", cpu),
                ("timeout", timeout),
                ("idleTimeout", idle_timeout),
                ("egress", egress),
            )
            if v is not None
        }
        if config:
            body["config"] = config
        if options is not None:
            body["options"] = dict(options)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        response = self._http.request("POST", "/api/v1/sessions/create", body=body, headers=headers)
        replayed = (response.header("Idempotent-Replayed") or "").lower() == "true"
        return CreatedSession.from_json(response.body, replayed=replayed)

    def get_session(self, session_id: str) -> Session:
        """The session's status."""
        r = self._http.request("GET", f"/api/v1/sessions/{_path_id(session_id)}")
        return Session.from_json(r.body)

    def list_sessions(self, all: bool = False) -> List[Session]:
        """Sessions you may see, newest first: live ones, or all with
        ``all=True``."""
        r = self._http.request("GET", "/api/v1/sessions", query={"all": True} if all else None)
        return [Session.from_json(s) for s in r.body]

    def delete_session(self, session_id: str) -> DeletedSession:
        """Ends the session; its container, network and volume are removed."""
        r = self._http.request("DELETE", f"/api/v1/sessions/{_path_id(session_id)}")
        return DeletedSession.from_json(r.body)

    def sleep_session(self, session_id: str) -> Session:
        """Puts a ``ready`` session to sleep: its container goes, its
        checkout and Claude Code's conversation stay. Any later use (a
        command, diff, files, push, :meth:`wake_session`) wakes it."""
        r = self._http.request("POST", f"/api/v1/sessions/{_path_id(session_id)}/sleep", body={})
        return Session.from_json(r.body)

    def wake_session(self, session_id: str) -> Session:
        """Wakes a sleeping session; it is ``starting`` in the answer (wait
        with :meth:`wait_for_state`)."""
        r = self._http.request("POST", f"/api/v1/sessions/{_path_id(session_id)}/wake", body={})
        return Session.from_json(r.body)

    def wait_for_state(
        self,
        session_id: str,
        state: Union[SessionState, str] = SessionState.READY,
        *,
        timeout: float = 300.0,
    ) -> Session:
        """Polls the status until the session is in ``state``; raises
        :class:`~claudecluster.errors.SessionFailed` when it reaches
        ``error`` or ends first, ``TimeoutError`` after ``timeout`` s."""
        want = str(state)
        deadline = time.monotonic() + timeout
        while True:
            s = self.get_session(session_id)
            if str(s.state) == want:
                return s
            if s.state in _ENDING and not (
                s.state == SessionState.TERMINATING and want == SessionState.TERMINATED
            ):
                raise SessionFailed(session_id, str(s.state), s.reason)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"session {session_id} is still {s.state} after {timeout} s (waiting for {want})"
                )
            time.sleep(POLL_INTERVAL_S)

    # -- turns ----------------------------------------------------------------

    def send_command(
        self,
        session_id: str,
        command: str,
        *,
        model: Optional[str] = None,
        permission_mode: Optional[str] = None,
    ) -> CommandAccepted:
        """Hands one turn to Claude Code (queued while the session starts)
        and returns at once; follow it with :meth:`stream`. ``model`` and
        ``permission_mode`` apply to this turn only."""
        body: Dict[str, Any] = {"command": command}
        if model is not None:
            body["model"] = model
        if permission_mode is not None:
            body["permissionMode"] = permission_mode
        r = self._http.request("POST", f"/api/v1/sessions/{_path_id(session_id)}/command", body=body)
        return CommandAccepted.from_json(r.body)

    def interrupt(self, session_id: str) -> Interrupted:
        """Stops the running turn; the session stays usable."""
        r = self._http.request("POST", f"/api/v1/sessions/{_path_id(session_id)}/interrupt", body={})
        return Interrupted.from_json(r.body)

    def answer_permission(
        self,
        session_id: str,
        request_id: str,
        allow: bool,
        *,
        message: Optional[str] = None,
        always: bool = False,
    ) -> PermissionAnswered:
        """Answers a question the running turn waits on (a
        :class:`~claudecluster.models.PermissionRequestEvent`, or one of
        :attr:`Session.pending_permissions`). ``message`` tells the model
        why, for a denial; ``always`` allows the tool for the rest of the
        session. A question already settled raises
        :class:`~claudecluster.errors.Conflict`."""
        body: Dict[str, Any] = {"allow": allow}
        if message is not None:
            body["message"] = message
        if always:
            body["always"] = True
        path = (
            f"/api/v1/sessions/{_path_id(session_id)}/permissions/"
            f"{urllib.parse.quote(request_id, safe='')}"
        )
        r = self._http.request("POST", path, body=body)
        return PermissionAnswered.from_json(r.body)

    def stream(
        self, session_id: str, since: Optional[int] = None, *, reconnect: bool = True
    ) -> EventStream:
        """The session's events as an iterator (see
        :class:`~claudecluster.stream.EventStream`). Without ``since``: the
        current ``status``, then live events; with ``since=N``: every event
        after ``N`` (``0``: the whole log), then live ones. A dropped
        connection is resumed from the last event yielded unless
        ``reconnect=False``. The iteration ends when the session has."""
        return EventStream(self._http, session_id, since, reconnect=reconnect)

    def run(
        self,
        session_id: str,
        command: str,
        *,
        model: Optional[str] = None,
        permission_mode: Optional[str] = None,
        timeout: float = DEFAULT_TURN_TIMEOUT_S,
    ) -> Turn:
        """Runs one turn to its end: sends ``command`` and returns every
        event from it to the session's next ``ready`` (waiting for a
        starting session first). Raises
        :class:`~claudecluster.errors.SessionFailed` when the session fails
        or ends, ``TimeoutError`` after ``timeout`` s."""
        start = self.get_session(session_id)
        if start.state in _ENDING:
            raise SessionFailed(session_id, str(start.state), start.reason)
        deadline = time.monotonic() + timeout
        with self.stream(session_id, since=start.last_seq) as events:
            self.send_command(session_id, command, model=model, permission_mode=permission_mode)
            seen: List[Event] = []
            started = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the turn did not end within {timeout} s")
                event = events.next_event(timeout=left)
                if event is None:
                    s = self.get_session(session_id)
                    raise SessionFailed(session_id, str(s.state), s.reason)
                seen.append(event)
                if isinstance(event, CommandEvent) and event.text == command:
                    started = True
                elif isinstance(event, StatusEvent):
                    if event.state in _ENDING:
                        raise SessionFailed(session_id, str(event.state), event.reason)
                    if started and event.state == SessionState.READY:
                        return Turn(seen)
                elif isinstance(event, ErrorEvent) and event.code in _UNDELIVERED:
                    raise StreamError(event.code or "error", event.message)

    def logs(self, session_id: str, since: int = 0, limit: Optional[int] = None) -> Logs:
        """Stored events after ``since`` (at most ``limit``; the server caps
        a page), the same messages the stream carries."""
        r = self._http.request(
            "GET",
            f"/api/v1/sessions/{_path_id(session_id)}/logs",
            query={"since": since, "limit": limit},
        )
        return Logs.from_json(r.body)

    # -- the work -------------------------------------------------------------

    def diff(self, session_id: str) -> Diff:
        """The session's changes against the commit it started from."""
        r = self._http.request("GET", f"/api/v1/sessions/{_path_id(session_id)}/diff")
        return Diff.from_json(r.body)

    def files(self, session_id: str, path: str = "") -> Union[Directory, File]:
        """A directory (``Directory``) or a file's first MiB (``File``) of
        the checkout; ``path`` is relative to it (``""``: its root)."""
        r = self._http.request(
            "GET",
            f"/api/v1/sessions/{_path_id(session_id)}/files",
            query={"path": path} if path else None,
        )
        return decode_path(r.body)

    def push(
        self,
        session_id: str,
        *,
        branch: Optional[str] = None,
        message: Optional[str] = None,
        pull_request: Union[bool, PullRequestOptions, None] = None,
    ) -> PushResult:
        """Commits uncommitted work (with ``message``) and pushes ``HEAD``
        to ``claudecluster/<session-id>`` (or ``branch``, under a prefix the
        admin allows), never forced. ``pull_request=True`` (or a
        :class:`~claudecluster.models.PullRequestOptions`) then opens a pull
        or merge request with the session's repository token."""
        body: Dict[str, Any] = {}
        if branch is not None:
            body["branch"] = branch
        if message is not None:
            body["message"] = message
        if pull_request is True:
            body["pullRequest"] = {}
        elif isinstance(pull_request, PullRequestOptions):
            body["pullRequest"] = pull_request.to_json()
        r = self._http.request("POST", f"/api/v1/sessions/{_path_id(session_id)}/push", body=body)
        return PushResult.from_json(r.body)

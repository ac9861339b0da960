"""A session's event stream over its WebSocket, as an iterator that resumes
by itself.

The server numbers every stored event of a session (``seq``, +1 each) and
replays everything after ``N`` to a connection opened with ``?since=N``. The
iterator remembers the ``seq`` of the last event it yielded; when the
connection drops it reconnects with ``since`` set to it, so the caller sees
every event exactly once across any number of drops. It ends when the
session has ended and its last event was yielded.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from typing import Any, Dict, Iterator, Optional

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from ._http import USER_AGENT, Transport
from .errors import ClaudeClusterError, ServerUnreachable, StreamError, from_response
from .models import Event, Session, SessionState, StatusEvent, decode_event

__all__ = ["EventStream"]

#: Consecutive failed (re)connection attempts before the stream gives up;
#: with the backoff below that is about half a minute, long enough for a
#: server restart or a replica's failover (6 s lease expiry + adoption).
MAX_RECONNECT_ATTEMPTS = 10
#: First wait between reconnection attempts; doubled per failure.
RECONNECT_BACKOFF_S = 0.25
#: Longest wait between reconnection attempts.
MAX_RECONNECT_BACKOFF_S = 5.0
#: How long the WebSocket handshake may take.
OPEN_TIMEOUT_S = 30.0
#: Handshake answers worth retrying: a busy user's stream cap, a proxy's
#: hiccup, a replica that is starting or handing the session over.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Session states after which no event follows.
_FINAL_STATES = frozenset({SessionState.TERMINATED, SessionState.ERROR})


class EventStream(Iterator[Event]):
    """Iterates over a session's events (see the module's description).

    Made by :meth:`claudecluster.Client.stream`. Also sends over the same
    socket: :meth:`send` (a command), :meth:`interrupt`, :meth:`keepalive`.
    Close it (or use it in a ``with`` block) when done.
    """

    def __init__(
        self,
        transport: Transport,
        session_id: str,
        since: Optional[int] = None,
        *,
        reconnect: bool = True,
    ) -> None:
        self._transport = transport
        self.session_id = session_id
        #: The ``seq`` of the last event yielded (or the ``since`` asked
        #: for); a reconnection replays from after it.
        self.last_seq: Optional[int] = since
        #: How many times the stream reconnected after a drop.
        self.reconnects = 0
        self._reconnect = reconnect
        self._ws: Optional[ClientConnection] = None
        # Guards `_ws`: one thread may iterate while another sends.
        self._lock = threading.Lock()
        self._closed = False
        self._last_state: Optional[SessionState] = None
        self._connected_once = False

    # -- iteration ----------------------------------------------------------

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        event = self.next_event()
        if event is None:
            raise StopIteration
        return event

    def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event; ``None`` once the session has ended and every
        event was read. Raises ``TimeoutError`` when none comes within
        ``timeout`` seconds (the stream stays usable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            try:
                ws = self._connection()
            except StreamError:
                if self._closed:  # closed by another thread
                    return None
                raise
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                raw = ws.recv(timeout=left)
            except TimeoutError:
                raise TimeoutError(f"no event within {timeout} s") from None
            except ConnectionClosed as closed:
                self._drop(ws)
                if not self._reconnect or self._ended(cleanly=isinstance(closed, ConnectionClosedOK)):
                    self._closed = True
                    return None
                continue
            if isinstance(raw, bytes):
                continue  # the API sends text frames only
            event = decode_event(json.loads(raw))
            if self.last_seq is None:
                # A connection without `since` starts with a status as of
                # the session's newest event: resume after that one.
                if event.seq or isinstance(event, StatusEvent):
                    self.last_seq = event.seq
            elif event.seq:
                if event.seq <= self.last_seq:
                    continue  # yielded before a reconnection
                self.last_seq = event.seq
            if isinstance(event, StatusEvent):
                self._last_state = event.state
            return event
        return None

    # -- sending ------------------------------------------------------------

    def send(
        self,
        command: str,
        *,
        model: Optional[str] = None,
        permission_mode: Optional[str] = None,
    ) -> None:
        """Hands a turn to Claude Code over the socket (queued while the
        session starts). A refusal arrives as an :class:`~claudecluster.models.ErrorEvent`
        with ``seq`` 0 in the stream."""
        data: Dict[str, Any] = {"command": command}
        if model is not None:
            data["model"] = model
        if permission_mode is not None:
            data["permissionMode"] = permission_mode
        self._send({"type": "command", "data": data})

    def interrupt(self) -> None:
        """Stops the running turn; the session stays usable."""
        self._send({"type": "interrupt"})

    def keepalive(self) -> None:
        """Counts as use of the session (its idle timer restarts); answered
        with a :class:`~claudecluster.models.KeepaliveEvent`."""
        self._send({"type": "keepalive"})

    def _send(self, message: Dict[str, Any]) -> None:
        text = json.dumps(message)
        ws = self._connection()
        try:
            ws.send(text)
        except ConnectionClosed:
            # A closed connection sent nothing: say it again on a new one.
            self._drop(ws)
            self._connection().send(text)

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._drop()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The WebSocket URL the next connection opens."""
        base = urllib.parse.urlsplit(self._transport.base_url)
        scheme = "wss" if base.scheme == "https" else "ws"
        path = f"{base.path}/api/v1/sessions/{urllib.parse.quote(self.session_id, safe='')}/stream"
        query = "" if self.last_seq is None else f"since={self.last_seq}"
        return urllib.parse.urlunsplit((scheme, base.netloc, path, query, ""))

    def _connection(self) -> ClientConnection:
        """The open connection, made (or remade, from ``last_seq``) if
        there is none."""
        with self._lock:
            if self._closed:
                raise StreamError("stream_closed", "the stream was closed")
            if self._ws is None:
                self._ws = self._open()
                if self._connected_once:
                    self.reconnects += 1
                self._connected_once = True
            return self._ws

    def _open(self) -> ClientConnection:
        """Connects, retrying what a later attempt can fix."""
        failures = 0
        while True:
            try:
                # Entered as a context manager, which every websockets
                # release since 13 supports and 17 asks for; the stream
                # closes the connection itself.
                connection = connect(
                    self.url,
                    additional_headers=self._transport.auth_headers(),
                    user_agent_header=USER_AGENT,
                    open_timeout=OPEN_TIMEOUT_S,
                    # Stored events can be large (a tool's raw result).
                    max_size=None,
                ).__enter__()
                assert isinstance(connection, ClientConnection)
                return connection
            except InvalidStatus as e:
                response = e.response
                err: ClaudeClusterError = from_response(
                    response.status_code, bytes(response.body or b""), dict(response.headers.raw_items())
                )
                if response.status_code not in _RETRY_STATUSES:
                    raise err from None
                last: ClaudeClusterError = err
            except InvalidURI as e:
                raise StreamError("invalid_url", str(e)) from None
            except (OSError, TimeoutError) as e:
                last = ServerUnreachable(f"{self.url}: {e}")
            except Exception as e:  # other handshake failures (a proxy's garbage)
                last = StreamError("handshake_failed", f"{self.url}: {e}")
            failures += 1
            if not self._reconnect or failures >= MAX_RECONNECT_ATTEMPTS:
                raise last
            time.sleep(min(MAX_RECONNECT_BACKOFF_S, RECONNECT_BACKOFF_S * 2 ** (failures - 1)))

    def _drop(self, which: Optional[ClientConnection] = None) -> None:
        """Forgets the connection (``which`` only if it is still the
        current one: another thread may have replaced it already)."""
        with self._lock:
            if which is not None and self._ws is not which:
                return
            ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _ended(self, cleanly: bool) -> bool:
        """Whether a closed connection means the end: the session's last
        event was yielded. The server closes cleanly when a session ends; a
        clean close of a live session (a replica stopping) is resumed."""
        if self._last_state in _FINAL_STATES:
            return True
        if not cleanly:
            return False
        session = self._status()
        return session.state in _FINAL_STATES and session.last_seq <= (self.last_seq or 0)

    def _status(self) -> Session:
        response = self._transport.request(
            "GET", f"/api/v1/sessions/{urllib.parse.quote(self.session_id, safe='')}"
        )
        return Session.from_json(response.body)

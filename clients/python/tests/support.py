"""Scripted local servers for the unit tests: an HTTP server that answers
from a table and records what it was sent, and a WebSocket server whose
handler a test writes. Both bind 127.0.0.1 on a free port."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.sync.server import ServerConnection, serve

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture(name: str) -> Any:
    """A JSON document the real server sent (see fixtures/README.md)."""
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


Answer = Tuple[int, Dict[str, str], Any]


class Recorded:
    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeHttp:
    """Answers ``(method, path-with-query)`` from ``routes``: ``(status,
    headers, body)``, the body JSON-encoded unless it is ``bytes``. Anything
    else is ``404 not_found``."""

    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], Answer] = {}
        self.requests: List[Recorded] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
                status, headers, payload = fake.routes.get(
                    (self.command, self.path),
                    (404, {}, {"code": "not_found", "message": "no such endpoint"}),
                )
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeWs:
    """A WebSocket server running ``handler(connection, query)`` per
    connection (``query``: the parsed query string). Plain HTTP requests are
    answered from ``rest``: path → ``(status, body)``; while ``refuse`` is
    set, upgrades are answered with it instead."""

    def __init__(self, handler: Callable[[ServerConnection, Dict[str, str]], None]) -> None:
        self.rest: Dict[str, Tuple[int, Any]] = {}
        self.refuse: Optional[Tuple[int, Any]] = None
        self.paths: List[str] = []
        self.headers: List[Dict[str, str]] = []
        fake = self

        def process_request(conn: ServerConnection, request: WsRequest) -> Optional[WsResponse]:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                fake.paths.append(request.path)
                fake.headers.append(dict(request.headers.raw_items()))
                if fake.refuse is not None:
                    return conn.respond(fake.refuse[0], json.dumps(fake.refuse[1]))
                return None
            path = request.path.split("?")[0]
            status, body = fake.rest.get(path, (404, {"code": "not_found", "message": "no"}))
            return conn.respond(status, json.dumps(body))

        def run(conn: ServerConnection) -> None:
            from urllib.parse import parse_qsl, urlsplit

            assert conn.request is not None
            query = dict(parse_qsl(urlsplit(conn.request.path).query))
            handler(conn, query)

        self._server = serve(run, "127.0.0.1", 0, process_request=process_request)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()


def envelope(kind: str, seq: int, **data: Any) -> str:
    """A server message as the server writes it."""
    return json.dumps({"type": kind, "data": {"seq": seq, "timestamp": 1_796_348_589_000 + seq, **data}})

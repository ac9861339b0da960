"""The SDK against a real ClaudeCluster: real session containers, Claude Code
answering from the model double, a repository on a local git server.

Runs when CLAUDECLUSTER_TEST_URL, CLAUDECLUSTER_TEST_TOKEN and
CLAUDECLUSTER_TEST_REPO are set (skipped otherwise); the Claude key
sessions use is CLAUDECLUSTER_TEST_CLAUDE_KEY (else ANTHROPIC_API_KEY).
crates/testkit/tests/e2e/python_sdk.rs starts that stack and sets them.
With CLAUDECLUSTER_TEST_WEBHOOK_PORT, a webhook receiver listens on that
port of 127.0.0.1 (which the server must allow endpoints on) and checks
real deliveries with `claudecluster.webhooks.verify`.
The model double's script decides what "Claude" does: `bash: CMD` runs CMD
with the Bash tool, `slow: MS TEXT` answers TEXT over MS milliseconds.

With CLAUDECLUSTER_TEST_FIXTURES_OUT set, one more test writes the raw
JSON answers of a session's calls there (tests/fixtures/ came from it).
"""

import json
import os
import re
import socket
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Optional, Tuple

from claudecluster import (
    Client,
    CommandEvent,
    Directory,
    Event,
    File,
    Forbidden,
    InvalidRequest,
    NotFound,
    OutputEvent,
    PermissionAnswerEvent,
    PermissionRequestEvent,
    SessionState,
    StatusEvent,
    TurnResultEvent,
    WebhookVerificationError,
    webhooks,
)
from claudecluster.stream import EventStream

URL = os.environ.get("CLAUDECLUSTER_TEST_URL", "")
TOKEN = os.environ.get("CLAUDECLUSTER_TEST_TOKEN", "")
REPO = os.environ.get("CLAUDECLUSTER_TEST_REPO", "")
CLAUDE_KEY = os.environ.get("CLAUDECLUSTER_TEST_CLAUDE_KEY") or os.environ.get("ANTHROPIC_API_KEY", "")
FIXTURES_OUT = os.environ.get("CLAUDECLUSTER_TEST_FIXTURES_OUT", "")
WEBHOOK_PORT = os.environ.get("CLAUDECLUSTER_TEST_WEBHOOK_PORT", "")

#: Generous, as the Rust end-to-end tests are: a loaded 2-core machine
#: starts containers slowly.
READY_TIMEOUT_S = 120.0
TURN_TIMEOUT_S = 120.0
#: The sessions' lifetime: whatever happens to this test, they end.
SESSION_TIMEOUT_S = 600


def configured() -> bool:
    return bool(URL and TOKEN and REPO)


def read_turn(events: EventStream, command: str, on_event: Any = None) -> List[Event]:
    """Events from ``command``'s `command` event to the next `ready`."""
    seen: List[Event] = []
    started = False
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while True:
        event = events.next_event(timeout=max(0.1, deadline - time.monotonic()))
        assert event is not None, f"the stream ended; read: {seen}"
        seen.append(event)
        if on_event is not None:
            on_event(event)
        if isinstance(event, CommandEvent) and event.text == command:
            started = True
        if isinstance(event, StatusEvent):
            assert event.state != SessionState.ERROR, f"the session failed: {event.reason}"
            if started and event.state == SessionState.READY:
                return seen


def text_of(events: List[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, OutputEvent))


def stored_seqs(client: Client, session_id: str, since: int) -> List[int]:
    seqs: List[int] = []
    while True:
        page = client.logs(session_id, since=since)
        if not page.events:
            return seqs
        seqs += [e.seq for e in page.events]
        since = page.next_since


@unittest.skipUnless(
    configured(), "set CLAUDECLUSTER_TEST_URL, CLAUDECLUSTER_TEST_TOKEN and CLAUDECLUSTER_TEST_REPO"
)
class RealServerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.assertTrue(CLAUDE_KEY, "set CLAUDECLUSTER_TEST_CLAUDE_KEY (the model double's key)")
        self.client = Client(URL, TOKEN)

    def new_session(self, **kwargs: Any) -> str:
        created = self.client.create_session(REPO, CLAUDE_KEY, timeout=SESSION_TIMEOUT_S, **kwargs)
        self.addCleanup(self.end, created.session_id)
        return created.session_id

    def end(self, session_id: str) -> None:
        try:
            self.client.delete_session(session_id)
        except NotFound:
            pass

    def test_a_whole_session(self) -> None:
        c = self.client
        sid = self.new_session()
        ready = c.wait_for_state(sid, "ready", timeout=READY_TIMEOUT_S)
        self.assertEqual(ready.state, SessionState.READY)
        self.assertEqual(ready.repo_url, REPO)
        start = ready.last_seq

        events = c.stream(sid, since=start)
        self.addCleanup(events.close)

        # Turn one, sent over the socket.
        one = "bash: echo written by the sdk > sdk.txt && cat sdk.txt"
        events.send(one)
        turn_one = read_turn(events, one)
        self.assertIn("written by the sdk", text_of(turn_one))
        results = [e for e in turn_one if isinstance(e, TurnResultEvent)]
        self.assertEqual(len(results), 1, turn_one)
        self.assertFalse(results[0].turn.is_error, results[0])
        self.assertGreaterEqual(results[0].totals.turns, 1)

        # Turn two, with the connection cut while Claude Code answers: the
        # iterator resumes with `since` and yields each event once.
        words = "alpha bravo charlie delta echo foxtrot"
        two = f"slow: 3000 {words}"
        cut: List[int] = []

        def cut_once(event: Event) -> None:
            if isinstance(event, CommandEvent) and not cut:
                # What a network failure does: the socket goes, no close frame.
                events._ws.socket.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                cut.append(event.seq)

        events.send(two)
        turn_two = read_turn(events, two, on_event=cut_once)
        self.assertEqual(events.reconnects, 1)
        self.assertTrue(cut)
        self.assertIn(words, text_of(turn_two))

        yielded = [e.seq for e in turn_one + turn_two if e.seq]
        self.assertEqual(yielded, list(range(start + 1, start + 1 + len(yielded))), "a gap or a repeat")
        self.assertEqual(yielded, stored_seqs(c, sid, start), "the stream and the log differ")

        # Turn three, the one-call way.
        turn = c.run(sid, "bash: cat sdk.txt", timeout=TURN_TIMEOUT_S)
        self.assertIn("written by the sdk", turn.text)
        self.assertIsNotNone(turn.result)
        self.assertFalse(turn.is_error)

        status = c.get_session(sid)
        self.assertEqual(status.state, SessionState.READY)
        self.assertGreaterEqual(status.usage.turns, 3)
        self.assertGreater(status.last_seq, start)

        # The work.
        diff = c.diff(sid)
        self.assertEqual([f.path for f in diff.files], ["sdk.txt"])
        self.assertIn("+written by the sdk", diff.diff)
        self.assertEqual(diff.insertions, 1)
        root = c.files(sid)
        self.assertIsInstance(root, Directory)
        assert isinstance(root, Directory)
        self.assertIn("README.md", root.names)
        self.assertIn("sdk.txt", root.names)
        self.assertNotIn(".git", root.names)
        f = c.files(sid, "sdk.txt")
        self.assertIsInstance(f, File)
        assert isinstance(f, File)
        self.assertEqual(f.text, "written by the sdk\n")
        self.assertEqual(f.size, len(f.data))
        with self.assertRaises(NotFound) as missing:
            c.files(sid, "no-such-file.txt")
        self.assertEqual(missing.exception.code, "path_not_found")
        with self.assertRaises(InvalidRequest) as outside:
            c.files(sid, "../etc/passwd")
        self.assertEqual(outside.exception.code, "invalid_path")
        with self.assertRaises(Forbidden) as git_dir:
            c.files(sid, ".git/config")
        self.assertEqual(git_dir.exception.code, "forbidden_path")

        pushed = c.push(sid, message="Written by the SDK's test")
        self.assertEqual(pushed.branch, f"claudecluster/{sid}")
        self.assertTrue(pushed.created)
        self.assertTrue(pushed.committed_changes)
        self.assertRegex(pushed.commit, r"^[0-9a-f]{40}$")
        self.assertIsNone(pushed.pull_request)
        with self.assertRaises(Forbidden) as base:
            c.push(sid, branch="main")
        self.assertEqual(base.exception.code, "push_refused")

        self.assertIn(sid, [s.session_id for s in c.list_sessions()])

        # Deleting ends the stream: the iterator stops after `terminated`.
        deleted = c.delete_session(sid)
        self.assertEqual(deleted.session_id, sid)
        rest: List[Event] = []
        while True:
            e = events.next_event(timeout=READY_TIMEOUT_S)
            if e is None:
                break
            rest.append(e)
        states = [e.state for e in rest if isinstance(e, StatusEvent)]
        self.assertEqual(states[-1], SessionState.TERMINATED, rest)
        self.assertNotIn(sid, [s.session_id for s in c.list_sessions()])
        self.assertIn(sid, [s.session_id for s in c.list_sessions(all=True)])

    def test_a_person_answers_a_permission_question(self) -> None:
        c = self.client
        sid = self.new_session(options={"permissionMode": "default"})
        ready = c.wait_for_state(sid, "ready", timeout=READY_TIMEOUT_S)
        events = c.stream(sid, since=ready.last_seq)
        self.addCleanup(events.close)
        command = "bash: echo allowed > asked.txt"
        events.send(command)
        deadline = time.monotonic() + TURN_TIMEOUT_S
        asked: Optional[PermissionRequestEvent] = None
        while asked is None:
            event = events.next_event(timeout=max(0.1, deadline - time.monotonic()))
            assert event is not None, "the stream ended before Claude Code asked"
            if isinstance(event, PermissionRequestEvent):
                asked = event
        self.assertEqual(asked.tool, "Bash")
        self.assertIn("asked.txt", json.dumps(asked.input))
        # The status says the turn waits for a person, and on what.
        pending = c.get_session(sid).pending_permissions
        self.assertEqual([p.request_id for p in pending], [asked.request_id])

        answered = c.answer_permission(sid, asked.request_id, True)
        self.assertEqual((answered.request_id, answered.tool, answered.allow), (asked.request_id, "Bash", True))
        # The rest of the turn (its command event was read above).
        rest: List[Event] = []
        deadline = time.monotonic() + TURN_TIMEOUT_S
        while True:
            event = events.next_event(timeout=max(0.1, deadline - time.monotonic()))
            assert event is not None, f"the stream ended; read: {rest}"
            rest.append(event)
            if isinstance(event, StatusEvent) and event.state == SessionState.READY:
                break
        answers = [e for e in rest if isinstance(e, PermissionAnswerEvent)]
        self.assertEqual([(a.request_id, a.allow, a.source) for a in answers], [(asked.request_id, True, "answer")])
        f = c.files(sid, "asked.txt")
        assert isinstance(f, File)
        self.assertEqual(f.text, "allowed\n")
        self.assertEqual(c.get_session(sid).pending_permissions, [])

    def test_an_unknown_session_is_not_found(self) -> None:
        unknown = str(uuid.uuid4())
        for call in (
            lambda: self.client.get_session(unknown),
            lambda: self.client.diff(unknown),
            lambda: self.client.send_command(unknown, "hi"),
            lambda: next(self.client.stream(unknown)),
        ):
            with self.assertRaises(NotFound) as caught:
                call()
            self.assertEqual(caught.exception.status, 404)
            self.assertEqual(caught.exception.code, "session_not_found")

    def test_a_bad_token_is_unauthorized(self) -> None:
        from claudecluster import Unauthorized

        with self.assertRaises(Unauthorized) as caught:
            Client(URL, "cct_not_a_real_token").list_sessions()
        self.assertEqual(caught.exception.code, "unauthorized")

    def test_create_with_an_idempotency_key(self) -> None:
        key = f"sdk-{uuid.uuid4()}"
        first = self.client.create_session(REPO, CLAUDE_KEY, timeout=SESSION_TIMEOUT_S, idempotency_key=key)
        self.addCleanup(self.end, first.session_id)
        again = self.client.create_session(REPO, CLAUDE_KEY, timeout=SESSION_TIMEOUT_S, idempotency_key=key)
        self.addCleanup(self.end, again.session_id)
        self.assertFalse(first.replayed)
        self.assertTrue(again.replayed)
        self.assertEqual(again.session_id, first.session_id)
        with self.assertRaises(InvalidRequest) as caught:
            self.client.create_session(REPO, CLAUDE_KEY, timeout=SESSION_TIMEOUT_S - 1, idempotency_key=key)
        self.assertEqual((caught.exception.status, caught.exception.code), (422, "idempotency_key_reused"))

    @unittest.skipUnless(WEBHOOK_PORT, "set CLAUDECLUSTER_TEST_WEBHOOK_PORT (a port the server allows webhooks on)")
    def test_a_real_delivery_verifies(self) -> None:
        # The request's own header object (names in any case, as a web
        # framework hands them over) and the raw body.
        received: List[Tuple[Any, bytes]] = []
        arrived = threading.Condition()

        class Receiver(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with arrived:
                    received.append((self.headers, body))
                    arrived.notify_all()
                self.send_response(204)
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", int(WEBHOOK_PORT)), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)

        # The SDK verifies deliveries; registering an endpoint is plain REST.
        hook = self.raw(
            "POST",
            "/api/v1/webhooks",
            {"url": f"http://127.0.0.1:{WEBHOOK_PORT}/hook", "events": ["session.created", "session.ready"]},
        )
        self.addCleanup(self.raw, "DELETE", f"/api/v1/webhooks/{hook['id']}")
        secret = hook["secret"]
        self.assertTrue(secret.startswith("whsec_"), hook)

        sid = self.new_session()
        self.client.wait_for_state(sid, "ready", timeout=READY_TIMEOUT_S)

        def mine() -> List[Tuple[Any, bytes]]:
            return [(h, b) for h, b in received if json.loads(b).get("sessionId") == sid]

        with arrived:
            self.assertTrue(arrived.wait_for(lambda: len(mine()) >= 2, timeout=READY_TIMEOUT_S), received)
            deliveries = mine()
        types = []
        for headers, body in deliveries:
            event = webhooks.verify(secret, body, headers)
            self.assertEqual(event["sessionId"], sid)
            self.assertEqual(event["id"], headers["ClaudeCluster-Webhook-Id"])
            types.append(event["type"])
            with self.assertRaises(WebhookVerificationError):
                webhooks.verify(secret, body + b" ", headers)
            with self.assertRaises(WebhookVerificationError):
                webhooks.verify("whsec_" + "0" * 64, body, headers)
            sent = int(headers["ClaudeCluster-Webhook-Timestamp"])
            with self.assertRaises(WebhookVerificationError):
                webhooks.verify(secret, body, headers, now=sent + 301)
        self.assertEqual(types, ["session.created", "session.ready"])

    def raw(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        """A REST call the SDK does not make, answered 2xx with JSON."""
        req = urllib.request.Request(
            URL + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:
            data = r.read()
        return json.loads(data) if data else None

    @unittest.skipUnless(FIXTURES_OUT, "set CLAUDECLUSTER_TEST_FIXTURES_OUT to capture fixtures")
    def test_capture_fixtures(self) -> None:
        """Writes the raw answers of one session's calls to FIXTURES_OUT."""
        os.makedirs(FIXTURES_OUT, exist_ok=True)

        def raw(method: str, path: str, body: Optional[Any] = None) -> Any:
            req = urllib.request.Request(
                URL + path,
                method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                return json.loads(e.read())

        def save(name: str, doc: Any) -> None:
            with open(os.path.join(FIXTURES_OUT, name), "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2, ensure_ascii=False)
                f.write("\n")

        created = raw(
            "POST",
            "/api/v1/sessions/create",
            {"repoUrl": REPO, "claudeApiKey": CLAUDE_KEY, "config": {"timeout": SESSION_TIMEOUT_S}},
        )
        save("created.json", created)
        sid = created["sessionId"]
        self.addCleanup(self.end, sid)
        self.client.wait_for_state(sid, "ready", timeout=READY_TIMEOUT_S)
        self.client.run(sid, "bash: mkdir -p docs && printf 'hello\\n' > docs/a.md && printf '\\x00\\x01' > blob.bin")
        save("status.json", raw("GET", f"/api/v1/sessions/{sid}"))
        save("list.json", raw("GET", "/api/v1/sessions"))
        save("logs.json", raw("GET", f"/api/v1/sessions/{sid}/logs?since=0"))
        save("diff.json", raw("GET", f"/api/v1/sessions/{sid}/diff"))
        save("files_dir.json", raw("GET", f"/api/v1/sessions/{sid}/files"))
        save("files_file.json", raw("GET", f"/api/v1/sessions/{sid}/files?path=docs/a.md"))
        save("files_binary.json", raw("GET", f"/api/v1/sessions/{sid}/files?path=blob.bin"))
        save("push.json", raw("POST", f"/api/v1/sessions/{sid}/push", {"message": "fixtures"}))
        save("error_404.json", raw("GET", f"/api/v1/sessions/{sid}/files?path=nope"))
        save("deleted.json", raw("DELETE", f"/api/v1/sessions/{sid}"))
        # Secrets the documents carry (session tokens in endpoints) are
        # short-lived and the stack is gone after the run; mask them anyway.
        for name in os.listdir(FIXTURES_OUT):
            path = os.path.join(FIXTURES_OUT, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r"token=[^\"&]+", "token=REDACTED", text)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


if __name__ == "__main__":
    unittest.main()

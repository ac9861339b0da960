"""The event iterator against a scripted WebSocket server: resumption with
`since` after a dropped connection (nothing lost, nothing repeated), the
end of a session, refusals at the handshake, and what it sends."""

import json
import socket
import threading
import unittest
from typing import Dict, List

from claudecluster import (
    Client,
    CommandEvent,
    KeepaliveEvent,
    NotFound,
    OutputEvent,
    StatusEvent,
    TurnResultEvent,
    Unauthorized,
)
from websockets.sync.server import ServerConnection

from support import FakeWs, envelope

SESSION = "s-1"


def drop(conn: ServerConnection) -> None:
    """Cuts the TCP connection without a close frame, as a network would."""
    conn.socket.shutdown(socket.SHUT_RDWR)


def log_events(n: int) -> List[str]:
    """A session's log: output events 1..n."""
    return [envelope("output", seq, text=f"line {seq}\n") for seq in range(1, n + 1)]


def status_json(state: str, last_seq: int) -> Dict[str, object]:
    return {
        "sessionId": SESSION,
        "containerId": None,
        "status": "terminated" if state == "terminated" else "ready",
        "state": state,
        "repoUrl": "http://git/repo",
        "limits": {"memoryBytes": 1, "cpu": 1.0, "timeoutSecs": 600},
        "createdAt": "2026-12-07T14:00:00Z",
        "updatedAt": "2026-12-07T14:00:00Z",
        "expiresAt": "2026-12-07T14:10:00Z",
        "lastSeq": last_seq,
        "endpoints": {"websocket": "ws://x", "http": "http://x"},
    }


class ResumeTest(unittest.TestCase):
    def serve(self, handler) -> FakeWs:  # type: ignore[no-untyped-def]
        fake = FakeWs(handler)
        self.addCleanup(fake.close)
        return fake

    def test_a_dropped_connection_resumes_after_the_last_event_yielded(self) -> None:
        log = log_events(10) + [envelope("status", 11, state="terminated", reason="deleted")]
        sinces: List[str] = []

        def handler(conn: ServerConnection, query: Dict[str, str]) -> None:
            since = int(query["since"])
            sinces.append(query["since"])
            if len(sinces) == 1:
                for m in log[since:4]:
                    conn.send(m)
                drop(conn)
                return
            # The server may repeat what the client already has; the client
            # must not yield it twice.
            for m in log[since - 2 :]:
                conn.send(m)
            conn.close()

        fake = self.serve(handler)
        with Client(fake.url, "t").stream(SESSION, since=0) as events:
            seqs = [e.seq for e in events]
            self.assertEqual(events.reconnects, 1)
            self.assertEqual(events.last_seq, 11)
        self.assertEqual(seqs, list(range(1, 12)))
        self.assertEqual(sinces, ["0", "4"])

    def test_several_drops_in_a_row_lose_and_repeat_nothing(self) -> None:
        log = log_events(20) + [envelope("status", 21, state="terminated")]

        def handler(conn: ServerConnection, query: Dict[str, str]) -> None:
            since = int(query["since"])
            for m in log[since : since + 3]:
                conn.send(m)
            if since + 3 >= len(log):
                conn.close()
            else:
                drop(conn)

        fake = self.serve(handler)
        events = Client(fake.url, "t").stream(SESSION, since=0)
        self.assertEqual([e.seq for e in events], list(range(1, 22)))
        self.assertEqual(events.reconnects, 6)

    def test_without_since_the_first_status_sets_the_position(self) -> None:
        sinces: List[str] = []

        def handler(conn: ServerConnection, query: Dict[str, str]) -> None:
            sinces.append(query.get("since", "-"))
            if len(sinces) == 1:
                conn.send(envelope("status", 7, state="ready"))
                conn.send(envelope("command", 8, text="go"))
                drop(conn)
            else:
                conn.send(envelope("status", 9, state="terminated"))
                conn.close()

        fake = self.serve(handler)
        events = list(Client(fake.url, "t").stream(SESSION))
        self.assertEqual([(type(e), e.seq) for e in events], [(StatusEvent, 7), (CommandEvent, 8), (StatusEvent, 9)])
        self.assertEqual(sinces, ["-", "8"])

    def test_a_clean_close_of_a_live_session_is_resumed_and_of_an_ended_one_ends(self) -> None:
        calls: List[str] = []

        def handler(conn: ServerConnection, query: Dict[str, str]) -> None:
            calls.append(query["since"])
            if len(calls) == 1:
                conn.send(envelope("output", 1, text="a"))
                conn.close()  # a replica stopping: the session lives on
            else:
                conn.send(envelope("output", 2, text="b"))
                fake.rest[f"/api/v1/sessions/{SESSION}"] = (200, status_json("terminated", 2))
                conn.close()

        fake = self.serve(handler)
        fake.rest[f"/api/v1/sessions/{SESSION}"] = (200, status_json("ready", 1))
        events = list(Client(fake.url, "t").stream(SESSION, since=0))
        self.assertEqual([e.seq for e in events], [1, 2])
        self.assertEqual(calls, ["0", "1"])

    def test_refusals_at_the_handshake_raise_their_errors(self) -> None:
        fake = self.serve(lambda conn, query: None)
        fake.refuse = (404, {"code": "session_not_found", "message": "session s-1 not found"})
        with self.assertRaises(NotFound) as caught:
            next(Client(fake.url, "t").stream(SESSION))
        self.assertEqual(caught.exception.code, "session_not_found")
        fake.refuse = (401, {"code": "unauthorized", "message": "unknown token"})
        with self.assertRaises(Unauthorized):
            next(Client(fake.url, "t").stream(SESSION))

    def test_it_authenticates_and_sends_the_seeds_envelopes(self) -> None:
        received: List[dict] = []
        got_all = threading.Event()

        def handler(conn: ServerConnection, query: Dict[str, str]) -> None:
            conn.send(envelope("status", 3, state="ready"))
            for _ in range(4):
                msg = json.loads(conn.recv())
                received.append(msg)
                if msg["type"] == "keepalive":
                    conn.send(json.dumps({"type": "keepalive", "data": {"timestamp": 5}}))
            got_all.set()
            conn.send(envelope("status", 4, state="terminated"))
            conn.close()

        fake = self.serve(handler)
        with Client(fake.url, "cct_secret").stream(SESSION) as events:
            first = next(events)
            self.assertIsInstance(first, StatusEvent)
            events.send("ls")
            events.send("plan it", model="claude-x", permission_mode="plan")
            events.interrupt()
            events.keepalive()
            rest = list(events)
        self.assertTrue(got_all.wait(5))
        self.assertEqual(
            received,
            [
                {"type": "command", "data": {"command": "ls"}},
                {"type": "command", "data": {"command": "plan it", "model": "claude-x", "permissionMode": "plan"}},
                {"type": "interrupt"},
                {"type": "keepalive"},
            ],
        )
        self.assertIsInstance(rest[0], KeepaliveEvent)
        self.assertEqual(rest[0].seq, 0)
        self.assertEqual(fake.headers[0].get("Authorization"), "Bearer cct_secret")
        self.assertEqual(fake.paths[0], f"/api/v1/sessions/{SESSION}/stream")

    def test_next_event_times_out_and_the_stream_stays_usable(self) -> None:
        go = threading.Event()

        def handler(conn: ServerConnection, query: Dict[str, str]) -> None:
            go.wait(5)
            conn.send(envelope("output", 1, text="late"))
            conn.send(
                json.dumps(
                    {
                        "type": "turnResult",
                        "data": {
                            "seq": 2,
                            "timestamp": 9,
                            "turn": {
                                "subtype": "success",
                                "isError": False,
                                "durationMs": 5,
                                "costUsd": 0.01,
                                "numTurns": 1,
                                "usage": {"inputTokens": 3, "outputTokens": 4, "cacheCreationInputTokens": 0, "cacheReadInputTokens": 0},
                            },
                            "totals": {"turns": 1, "erroredTurns": 0, "costUsd": 0.02, "durationMs": 5, "numTurns": 1, "inputTokens": 3, "outputTokens": 4, "cacheCreationInputTokens": 0, "cacheReadInputTokens": 0},
                        },
                    }
                )
            )
            conn.send(envelope("status", 3, state="terminated"))
            conn.close()

        fake = self.serve(handler)
        events = Client(fake.url, "t").stream(SESSION, since=0)
        with self.assertRaises(TimeoutError):
            events.next_event(timeout=0.2)
        go.set()
        out = events.next_event(timeout=5)
        self.assertIsInstance(out, OutputEvent)
        result = events.next_event(timeout=5)
        self.assertIsInstance(result, TurnResultEvent)
        assert isinstance(result, TurnResultEvent)
        self.assertEqual(result.totals.cost_usd, 0.02)
        self.assertEqual(result.turn.usage.output_tokens, 4)
        self.assertEqual([e.seq for e in events], [3])
        self.assertEqual(events.reconnects, 0)


if __name__ == "__main__":
    unittest.main()

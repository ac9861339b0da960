"""The models decode what the real server sends: tests/fixtures/ holds the
raw answers of one session's calls, captured from a server with the model
double (see fixtures/README.md). Each field is checked against its
camelCase source."""

import base64
import unittest

from claudecluster import (
    ClaudeEvent,
    CommandEvent,
    CreatedSession,
    DeletedSession,
    Diff,
    Directory,
    Egress,
    ErrorEvent,
    File,
    KeepaliveEvent,
    Logs,
    OutputEvent,
    PermissionAnswerEvent,
    PermissionRequestEvent,
    PushResult,
    SeedStatus,
    Session,
    SessionState,
    StatusEvent,
    Turn,
    TurnResultEvent,
    UnknownEvent,
)
from claudecluster.errors import NotFound, from_response
from claudecluster.models import decode_event, decode_path

from support import fixture


class SessionModelsTest(unittest.TestCase):
    def test_created(self) -> None:
        raw = fixture("created.json")
        c = CreatedSession.from_json(raw)
        self.assertEqual(c.session_id, raw["sessionId"])
        self.assertEqual(c.container_id, raw["containerId"])
        self.assertIsInstance(c.status, SeedStatus)
        self.assertIsInstance(c.state, SessionState)
        self.assertEqual(c.state, raw["state"])
        self.assertEqual(c.endpoints.websocket, raw["endpoints"]["websocket"])
        self.assertEqual(c.endpoints.http, raw["endpoints"]["http"])
        self.assertFalse(c.replayed)

    def test_status(self) -> None:
        raw = fixture("status.json")
        s = Session.from_json(raw)
        self.assertEqual(s.session_id, raw["sessionId"])
        self.assertEqual(s.container_id, raw["containerId"])
        self.assertEqual(s.state, SessionState.READY)
        self.assertIs(s.state, SessionState.READY)
        self.assertEqual(s.status, SeedStatus.READY)
        self.assertTrue(s.state.is_live)
        self.assertEqual(s.repo_url, raw["repoUrl"])
        self.assertEqual(s.branch, raw.get("branch"))
        self.assertEqual(s.limits.memory_bytes, raw["limits"]["memoryBytes"])
        self.assertEqual(s.limits.cpu, raw["limits"]["cpu"])
        self.assertEqual(s.limits.timeout_secs, raw["limits"]["timeoutSecs"])
        self.assertIsInstance(s.limits.egress, Egress)
        self.assertEqual(s.limits.idle_timeout_secs, raw["limits"].get("idleTimeoutSecs"))
        self.assertEqual((s.created_at, s.updated_at, s.expires_at), (raw["createdAt"], raw["updatedAt"], raw["expiresAt"]))
        self.assertEqual(s.last_seq, raw["lastSeq"])
        self.assertEqual(s.usage.turns, raw["usage"]["turns"])
        self.assertGreaterEqual(s.usage.turns, 1)
        self.assertEqual(s.usage.cost_usd, raw["usage"]["costUsd"])
        self.assertEqual(s.usage.input_tokens, raw["usage"]["inputTokens"])
        self.assertEqual(s.usage.output_tokens, raw["usage"]["outputTokens"])
        self.assertEqual(s.oom_kills, raw["oomKills"])
        if "resources" in raw:
            assert s.resources is not None
            self.assertEqual(s.resources.memory_limit_bytes, raw["resources"]["memoryLimitBytes"])
            self.assertEqual(s.resources.pids, raw["resources"]["pids"])

    def test_list_and_deleted(self) -> None:
        sessions = [Session.from_json(s) for s in fixture("list.json")]
        self.assertTrue(sessions)
        self.assertTrue(all(isinstance(s.state, SessionState) for s in sessions))
        raw = fixture("deleted.json")
        d = DeletedSession.from_json(raw)
        self.assertEqual(d.session_id, raw["sessionId"])
        self.assertEqual(d.state, raw["state"])
        self.assertFalse(SessionState(d.state).is_live)

    def test_an_error_answer(self) -> None:
        raw = fixture("error_404.json")
        self.assertEqual(set(raw), {"code", "message"})
        import json

        err = from_response(404, json.dumps(raw).encode())
        self.assertIsInstance(err, NotFound)
        self.assertEqual(err.code, "path_not_found")


class LogModelsTest(unittest.TestCase):
    def test_every_logged_event_decodes_to_its_type(self) -> None:
        raw = fixture("logs.json")
        logs = Logs.from_json(raw)
        self.assertEqual(logs.session_id, raw["sessionId"])
        self.assertEqual(logs.next_since, raw["nextSince"])
        self.assertEqual(len(logs.events), len(raw["events"]))
        kinds = {
            "output": OutputEvent,
            "status": StatusEvent,
            "command": CommandEvent,
            "claude": ClaudeEvent,
            "turnResult": TurnResultEvent,
            "error": ErrorEvent,
        }
        for event, source in zip(logs.events, raw["events"]):
            with self.subTest(source=source):
                self.assertIsInstance(event, kinds[source["type"]])
                self.assertEqual(event.type, source["type"])
                self.assertEqual(event.seq, source["data"]["seq"])
                self.assertEqual(event.timestamp, source["data"]["timestamp"])
        seqs = [e.seq for e in logs.events]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        # A whole session: it started, ran a command, and reported the turn.
        self.assertIn(SessionState.READY, [e.state for e in logs.events if isinstance(e, StatusEvent)])
        self.assertTrue(any(isinstance(e, CommandEvent) for e in logs.events))
        result = next(e for e in logs.events if isinstance(e, TurnResultEvent))
        source = next(r for r in raw["events"] if r["type"] == "turnResult")["data"]
        self.assertEqual(result.turn.subtype, source["turn"]["subtype"])
        self.assertEqual(result.turn.is_error, source["turn"]["isError"])
        self.assertEqual(result.turn.num_turns, source["turn"]["numTurns"])
        self.assertEqual(result.turn.usage.output_tokens, source["turn"]["usage"]["outputTokens"])
        self.assertEqual(result.totals.turns, source["totals"]["turns"])
        self.assertEqual(result.totals.cost_usd, source["totals"]["costUsd"])
        turn = Turn(logs.events)
        self.assertIs(turn.result, result.turn)
        self.assertTrue(turn.text)

    def test_what_this_sdk_does_not_know_is_kept_not_refused(self) -> None:
        e = decode_event({"type": "status", "data": {"seq": 4, "state": "hibernating", "timestamp": 1, "new": 1}})
        assert isinstance(e, StatusEvent)
        self.assertEqual(e.state, "hibernating")
        u = decode_event({"type": "hibernation", "data": {"seq": 5, "timestamp": 2, "depth": 3}})
        assert isinstance(u, UnknownEvent)
        self.assertEqual((u.type_name, u.seq, u.data["depth"]), ("hibernation", 5, 3))
        k = decode_event({"type": "keepalive", "data": {"timestamp": 3}})
        self.assertIsInstance(k, KeepaliveEvent)
        self.assertEqual(k.seq, 0)
        # `seq` beside `type` is read when `data` has none.
        o = decode_event({"type": "output", "seq": 9, "data": {"text": "x", "timestamp": 4}})
        self.assertEqual(o.seq, 9)


class PermissionModelsTest(unittest.TestCase):
    def test_questions_and_answers_decode(self) -> None:
        q = decode_event(
            {
                "type": "permissionRequest",
                "data": {"seq": 7, "timestamp": 5, "requestId": "r1", "tool": "Bash", "input": {"command": "ls"}},
            }
        )
        assert isinstance(q, PermissionRequestEvent)
        self.assertEqual((q.seq, q.request_id, q.tool, q.input), (7, "r1", "Bash", {"command": "ls"}))
        a = decode_event(
            {
                "type": "permissionAnswer",
                "data": {
                    "seq": 8,
                    "timestamp": 6,
                    "requestId": "r1",
                    "tool": "Bash",
                    "allow": False,
                    "always": False,
                    "source": "timeout",
                    "message": "Nobody answered within 3 s",
                },
            }
        )
        assert isinstance(a, PermissionAnswerEvent)
        self.assertEqual((a.allow, a.source, a.message, a.answered_by), (False, "timeout", "Nobody answered within 3 s", None))
        s = Session.from_json(
            dict(
                fixture("status.json"),
                pendingPermissions=[{"requestId": "r2", "tool": "Edit", "input": {}, "timestamp": 9}],
                resources={"cpuPercent": 1.5, "memoryBytes": 1, "memoryLimitBytes": 2, "networkRxBytes": 3,
                           "networkTxBytes": 4, "pids": 5, "workspaceBytes": 4096, "workspaceLimitBytes": 8192},
            )
        )
        self.assertEqual([(p.request_id, p.tool, p.timestamp) for p in s.pending_permissions], [("r2", "Edit", 9)])
        assert s.resources is not None
        self.assertEqual((s.resources.workspace_bytes, s.resources.workspace_limit_bytes), (4096, 8192))


class WorkModelsTest(unittest.TestCase):
    def test_diff(self) -> None:
        raw = fixture("diff.json")
        d = Diff.from_json(raw)
        self.assertEqual((d.base_commit, d.head_commit), (raw["baseCommit"], raw["headCommit"]))
        self.assertEqual([f.path for f in d.files], [f["path"] for f in raw["files"]])
        self.assertEqual([f.binary for f in d.files], [f["binary"] for f in raw["files"]])
        self.assertEqual([f.insertions for f in d.files], [f["insertions"] for f in raw["files"]])
        self.assertEqual((d.insertions, d.deletions), (raw["insertions"], raw["deletions"]))
        self.assertEqual((d.diff, d.patches, d.truncated), (raw["diff"], raw["patches"], raw["truncated"]))
        self.assertIn("docs/a.md", [f.path for f in d.files])

    def test_files(self) -> None:
        root = decode_path(fixture("files_dir.json"))
        assert isinstance(root, Directory)
        self.assertEqual(root.path, "")
        self.assertIn("README.md", root.names)
        docs = next(e for e in root.entries if e.name == "docs")
        self.assertEqual((docs.type, docs.size), ("dir", 0))
        text = decode_path(fixture("files_file.json"))
        assert isinstance(text, File)
        self.assertEqual((text.path, text.encoding, text.text, text.size), ("docs/a.md", "utf8", "hello\n", 6))
        self.assertFalse(text.truncated)
        raw = fixture("files_binary.json")
        binary = decode_path(raw)
        assert isinstance(binary, File)
        self.assertEqual(binary.encoding, "base64")
        self.assertEqual(binary.data, b"\x00\x01")
        self.assertEqual(binary.data, base64.b64decode(raw["content"]))

    def test_push(self) -> None:
        raw = fixture("push.json")
        p = PushResult.from_json(raw)
        self.assertEqual(p.session_id, raw["sessionId"])
        self.assertEqual(p.branch, f"claudecluster/{raw['sessionId']}")
        self.assertEqual((p.commit, p.created, p.committed_changes), (raw["commit"], raw["created"], raw["committedChanges"]))
        self.assertIsNone(p.pull_request)


if __name__ == "__main__":
    unittest.main()

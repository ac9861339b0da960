"""What the client sends for each call (method, path, query, headers, JSON
body in the API's camelCase) and how it reads the answers, against a
scripted HTTP server."""

import os
import unittest
from typing import Any, Dict
from unittest import mock

from claudecluster import (
    Client,
    CreatedSession,
    Directory,
    File,
    PullRequestOptions,
    SessionState,
)

from support import FakeHttp, fixture

CREATED = {
    "sessionId": "s1",
    "containerId": "c1",
    "status": "starting",
    "endpoints": {"websocket": "ws://h/api/v1/sessions/s1/stream?token=t", "http": "http://h/api/v1/sessions/s1"},
    "state": "creating",
}


class ClientTest(unittest.TestCase):
    def setUp(self) -> None:
        self.fake = FakeHttp()
        self.addCleanup(self.fake.close)
        self.client = Client(self.fake.url + "/", "cct_token")

    def route(self, method: str, path: str, body: Any, status: int = 200, headers: Dict[str, str] = {}) -> None:
        self.fake.routes[(method, path)] = (status, dict(headers), body)

    def test_create_sends_the_request_body_and_the_idempotency_key(self) -> None:
        self.route("POST", "/api/v1/sessions/create", CREATED, 201)
        created = self.client.create_session(
            "http://git/repo",
            "sk-ant-key",
            branch="dev",
            repo_token="ghp_x",
            memory="2g",
            cpu=0.5,
            timeout=600,
            idle_timeout=120,
            egress="none",
            options={"permissionMode": "plan", "maxTurns": 3},
            idempotency_key="key-1",
        )
        self.assertEqual(created, CreatedSession.from_json(CREATED))
        self.assertFalse(created.replayed)
        self.assertEqual(created.state, SessionState.CREATING)
        req = self.fake.requests[-1]
        self.assertEqual(req.header("Authorization"), "Bearer cct_token")
        self.assertEqual(req.header("Idempotency-Key"), "key-1")
        self.assertEqual(req.header("Content-Type"), "application/json")
        self.assertEqual(
            req.json(),
            {
                "repoUrl": "http://git/repo",
                "claudeApiKey": "sk-ant-key",
                "branch": "dev",
                "repoToken": "ghp_x",
                "config": {"memory": "2g", "cpu": 0.5, "timeout": 600, "idleTimeout": 120, "egress": "none"},
                "options": {"permissionMode": "plan", "maxTurns": 3},
            },
        )

    def test_create_reads_a_replayed_answer_and_sends_no_key_unless_given(self) -> None:
        self.route("POST", "/api/v1/sessions/create", CREATED, 201, {"Idempotent-Replayed": "true"})
        self.assertTrue(self.client.create_session("http://git/repo", "k", idempotency_key="k2").replayed)
        self.client.create_session("http://git/repo", "k")
        req = self.fake.requests[-1]
        self.assertIsNone(req.header("Idempotency-Key"))
        self.assertEqual(req.json(), {"repoUrl": "http://git/repo", "claudeApiKey": "k"})

    def test_create_takes_the_key_from_the_environment(self) -> None:
        self.route("POST", "/api/v1/sessions/create", CREATED, 201)
        with mock.patch.dict(os.environ, {"ANTHROPIC_API_KEY": "sk-ant-env"}):
            self.client.create_session("http://git/repo")
        self.assertEqual(self.fake.requests[-1].json()["claudeApiKey"], "sk-ant-env")
        with mock.patch.dict(os.environ, {"ANTHROPIC_API_KEY": ""}), self.assertRaises(ValueError):
            self.client.create_session("http://git/repo")

    def test_url_and_token_come_from_the_clis_variables(self) -> None:
        self.route("GET", "/api/v1/sessions", [])
        env = {"CLAUDECLUSTER_URL": self.fake.url, "CLAUDECLUSTER_TOKEN": "cct_env"}
        with mock.patch.dict(os.environ, env):
            client = Client()
        self.assertEqual(client.url, self.fake.url)
        self.assertEqual(client.list_sessions(), [])
        self.assertEqual(self.fake.requests[-1].header("Authorization"), "Bearer cct_env")
        with mock.patch.dict(os.environ, {"CLAUDECLUSTER_URL": "", "CLAUDECLUSTER_TOKEN": ""}):
            self.assertEqual(Client().url, "http://127.0.0.1:8080")
        # Without a token (a server in open mode) nothing is sent.
        with mock.patch.dict(os.environ, {"CLAUDECLUSTER_TOKEN": ""}):
            Client(self.fake.url).list_sessions()
        self.assertIsNone(self.fake.requests[-1].header("Authorization"))

    def test_session_calls(self) -> None:
        status = fixture("status.json")
        sid = status["sessionId"]
        self.route("GET", f"/api/v1/sessions/{sid}", status)
        self.route("GET", "/api/v1/sessions?all=true", [status])
        self.route("DELETE", f"/api/v1/sessions/{sid}", fixture("deleted.json"))
        self.route("POST", f"/api/v1/sessions/{sid}/command", {"sessionId": sid, "accepted": True, "state": "busy"}, 202)
        self.route("POST", f"/api/v1/sessions/{sid}/interrupt", {"sessionId": sid, "interrupted": False})
        self.route("GET", f"/api/v1/sessions/{sid}/logs?since=3&limit=2", fixture("logs.json"))

        self.assertEqual(self.client.get_session(sid).session_id, sid)
        self.assertEqual([s.session_id for s in self.client.list_sessions(all=True)], [sid])
        self.assertEqual(self.client.delete_session(sid).state, SessionState.TERMINATED)
        accepted = self.client.send_command(sid, "go", model="m", permission_mode="plan")
        self.assertTrue(accepted.accepted)
        self.assertEqual(self.fake.requests[-1].json(), {"command": "go", "model": "m", "permissionMode": "plan"})
        self.client.send_command(sid, "plain")
        self.assertEqual(self.fake.requests[-1].json(), {"command": "plain"})
        self.assertFalse(self.client.interrupt(sid).interrupted)
        self.assertEqual(self.client.logs(sid, since=3, limit=2).session_id, sid)

    def test_work_calls(self) -> None:
        sid = "s/1"  # quoted in the path
        self.route("GET", "/api/v1/sessions/s%2F1/diff", fixture("diff.json"))
        self.route("GET", "/api/v1/sessions/s%2F1/files", fixture("files_dir.json"))
        self.route("GET", "/api/v1/sessions/s%2F1/files?path=docs%2Fa+b.md", fixture("files_file.json"))
        self.route("POST", "/api/v1/sessions/s%2F1/push", fixture("push.json"))

        self.assertTrue(self.client.diff(sid).files)
        self.assertIsInstance(self.client.files(sid), Directory)
        self.assertIsInstance(self.client.files(sid, "docs/a b.md"), File)
        self.client.push(sid)
        self.assertEqual(self.fake.requests[-1].json(), {})
        self.client.push(sid, branch="claudecluster/x/y", message="m", pull_request=True)
        self.assertEqual(
            self.fake.requests[-1].json(), {"branch": "claudecluster/x/y", "message": "m", "pullRequest": {}}
        )
        self.client.push(sid, pull_request=PullRequestOptions(title="T", draft=True))
        self.assertEqual(self.fake.requests[-1].json(), {"pullRequest": {"title": "T", "draft": True}})


if __name__ == "__main__":
    unittest.main()

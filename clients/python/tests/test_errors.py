"""Error answers (`{code, message}` with a status) become exceptions of the
class the status names, over a real HTTP round trip too."""

import json
import unittest

from claudecluster import (
    ClaudeClusterError,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    ServerUnreachable,
    Unauthorized,
    Unavailable,
)
from claudecluster.errors import from_response

from support import FakeHttp


def body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


class FromResponseTest(unittest.TestCase):
    def test_each_status_has_its_class_and_keeps_code_and_message(self) -> None:
        # Codes the server emits (crates/server/src/api/error.rs, auth, push).
        cases = [
            (400, "invalid_request", InvalidRequest),
            (400, "invalid_path", InvalidRequest),
            (401, "unauthorized", Unauthorized),
            (403, "push_refused", Forbidden),
            (403, "budget_exhausted", Forbidden),
            (404, "session_not_found", NotFound),
            (404, "path_not_found", NotFound),
            (409, "session_busy", Conflict),
            (413, "payload_too_large", InvalidRequest),
            (415, "unsupported_media_type", InvalidRequest),
            (422, "idempotency_key_reused", InvalidRequest),
            (429, "rate_limited", RateLimited),
            (500, "internal", ServerError),
            (502, "forge_refused", ServerError),
            (503, "session_moved", Unavailable),
        ]
        for status, code, cls in cases:
            with self.subTest(status=status, code=code):
                err = from_response(status, body(code, f"the {code} message"))
                self.assertIs(type(err), cls)
                self.assertIsInstance(err, ClaudeClusterError)
                self.assertEqual((err.status, err.code, err.message), (status, code, f"the {code} message"))
                self.assertEqual(str(err), f"{status} {code}: the {code} message")

    def test_rate_limited_carries_retry_after(self) -> None:
        err = from_response(429, body("rate_limited", "slow down"), {"Retry-After": "7"})
        assert isinstance(err, RateLimited)
        self.assertEqual(err.retry_after, 7.0)
        other = from_response(429, body("too_many_streams", "x"))
        assert isinstance(other, RateLimited)
        self.assertIsNone(other.retry_after)

    def test_a_body_that_is_not_the_apis_keeps_its_start(self) -> None:
        err = from_response(502, b"<html>Bad Gateway</html>")
        self.assertIsInstance(err, ServerError)
        self.assertEqual(err.code, "http_502")
        self.assertEqual(err.message, "<html>Bad Gateway</html>")
        err = from_response(418, b"")
        self.assertIs(type(err), ClaudeClusterError)
        self.assertEqual(err.code, "http_418")


class OverHttpTest(unittest.TestCase):
    def setUp(self) -> None:
        self.fake = FakeHttp()
        self.addCleanup(self.fake.close)
        self.client = Client(self.fake.url, "cct_test")

    def test_a_404_answer_raises_not_found(self) -> None:
        self.fake.routes[("GET", "/api/v1/sessions/nope")] = (
            404,
            {},
            {"code": "session_not_found", "message": "session nope not found"},
        )
        with self.assertRaises(NotFound) as caught:
            self.client.get_session("nope")
        self.assertEqual(caught.exception.code, "session_not_found")
        self.assertEqual(caught.exception.message, "session nope not found")

    def test_a_429_answer_raises_rate_limited_with_retry_after(self) -> None:
        self.fake.routes[("GET", "/api/v1/sessions")] = (
            429,
            {"Retry-After": "3"},
            {"code": "rate_limited", "message": "too many requests; retry after 3 s"},
        )
        with self.assertRaises(RateLimited) as caught:
            self.client.list_sessions()
        self.assertEqual(caught.exception.retry_after, 3.0)

    def test_a_reused_idempotency_key_raises_invalid_request(self) -> None:
        self.fake.routes[("POST", "/api/v1/sessions/create")] = (
            422,
            {},
            {"code": "idempotency_key_reused", "message": "the key was used with another body"},
        )
        with self.assertRaises(InvalidRequest) as caught:
            self.client.create_session("https://x/y", "sk-ant-k", idempotency_key="k1")
        self.assertEqual(caught.exception.status, 422)
        self.assertEqual(caught.exception.code, "idempotency_key_reused")

    def test_no_server_raises_server_unreachable(self) -> None:
        url = self.fake.url
        self.fake.close()
        with self.assertRaises(ServerUnreachable) as caught:
            Client(url, "t", timeout=5).list_sessions()
        self.assertEqual((caught.exception.status, caught.exception.code), (0, "unreachable"))


if __name__ == "__main__":
    unittest.main()

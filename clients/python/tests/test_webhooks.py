"""Webhook verification against signatures computed here, independently of
the SDK's own signing, and one fixed vector (computed with
`openssl dgst -sha256 -hmac`)."""

import hashlib
import hmac
import json
import unittest

from claudecluster import WebhookVerificationError, webhooks

SECRET = "whsec_" + "0123456789abcdef" * 4
OTHER_SECRET = "whsec_" + "fedcba9876543210" * 4
BODY = json.dumps(
    {
        "id": "evt_01",
        "type": "session.ready",
        "sessionId": "3f9a",
        "time": "2026-12-07T14:00:00Z",
        "payload": {"state": "ready"},
    },
    separators=(",", ":"),
).encode()
NOW = 1_796_648_400
DELIVERY = "dlv_5b1d2c"


def signature(secret: str, delivery: str, ts: int, body: bytes) -> str:
    """The scheme, written out: HMAC-SHA256 keyed with the secret's UTF-8
    bytes over b"<timestamp>.<delivery id>." + body, lowercase hex."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(str(ts).encode("ascii"))
    mac.update(b".")
    mac.update(delivery.encode("utf-8"))
    mac.update(b".")
    mac.update(body)
    return mac.hexdigest()


def headers(sig: str, ts: int = NOW, delivery: str = DELIVERY) -> dict:
    return {
        "ClaudeCluster-Webhook-Id": delivery,
        "ClaudeCluster-Webhook-Timestamp": str(ts),
        "ClaudeCluster-Webhook-Signature": sig,
    }


class VerifyTest(unittest.TestCase):
    def test_a_good_delivery_returns_its_event(self) -> None:
        sig = "v1=" + signature(SECRET, DELIVERY, NOW, BODY)
        event = webhooks.verify(SECRET, BODY, headers(sig), now=NOW)
        self.assertEqual(event["type"], "session.ready")
        self.assertEqual(event["payload"], {"state": "ready"})

    def test_the_fixed_vector(self) -> None:
        # printf '1796648400.dlv_fixed.{"type":"session.created"}' \
        #   | openssl dgst -sha256 -hmac "whsec_$(printf '0123456789abcdef%.0s' 1 2 3 4)"
        body = b'{"type":"session.created"}'
        sig = "v1=1bb039cce0c52ab0b341a54e29f3f2df00bb5ac76adbc399e7798939831090fa"
        event = webhooks.verify(SECRET, body, headers(sig, NOW, "dlv_fixed"), now=NOW)
        self.assertEqual(event, {"type": "session.created"})
        self.assertEqual(webhooks.sign(SECRET, "dlv_fixed", NOW, body), sig)

    def test_the_servers_own_vector(self) -> None:
        # crates/core/src/webhook.rs signs this in its unit test.
        body = b'{"a":1}'
        sig = "v1=49d71c890ade61ec11fc11378665b6eb649d259dd41c352610007075ecad8f95"
        self.assertEqual(webhooks.sign("whsec_test", "whd_1", 1_700_000_000, body), sig)
        event = webhooks.verify("whsec_test", body, headers(sig, 1_700_000_000, "whd_1"), now=1_700_000_000)
        self.assertEqual(event, {"a": 1})

    def test_header_names_are_case_insensitive(self) -> None:
        sig = "v1=" + signature(SECRET, DELIVERY, NOW, BODY)
        lowered = {k.lower(): v for k, v in headers(sig).items()}
        upper = {k.upper(): v for k, v in headers(sig).items()}
        for h in (lowered, upper):
            self.assertEqual(webhooks.verify(SECRET, BODY, h, now=NOW)["id"], "evt_01")

    def test_any_of_several_signatures_passes_during_a_rotation(self) -> None:
        old = "v1=" + signature(OTHER_SECRET, DELIVERY, NOW, BODY)
        new = "v1=" + signature(SECRET, DELIVERY, NOW, BODY)
        for header in (f"{old} {new}", f"{new} {old}", f"v0=abc {new}"):
            with self.subTest(header=header):
                self.assertEqual(webhooks.verify(SECRET, BODY, headers(header), now=NOW)["id"], "evt_01")
        self.assertEqual(webhooks.verify(OTHER_SECRET, BODY, headers(f"{old} {new}"), now=NOW)["id"], "evt_01")

    def test_a_wrong_secret_or_changed_body_is_refused(self) -> None:
        sig = "v1=" + signature(OTHER_SECRET, DELIVERY, NOW, BODY)
        with self.assertRaises(WebhookVerificationError):
            webhooks.verify(SECRET, BODY, headers(sig), now=NOW)
        good = "v1=" + signature(SECRET, DELIVERY, NOW, BODY)
        with self.assertRaises(WebhookVerificationError):
            webhooks.verify(SECRET, BODY.replace(b"ready", b"error"), headers(good), now=NOW)

    def test_the_id_and_timestamp_are_signed(self) -> None:
        good = "v1=" + signature(SECRET, DELIVERY, NOW, BODY)
        with self.assertRaises(WebhookVerificationError):
            webhooks.verify(SECRET, BODY, headers(good, delivery="dlv_other"), now=NOW)
        with self.assertRaises(WebhookVerificationError):
            webhooks.verify(SECRET, BODY, headers(good, ts=NOW + 1), now=NOW)

    def test_timestamps_outside_the_tolerance_are_refused(self) -> None:
        for ts, ok in [
            (NOW - 300, True),
            (NOW + 300, True),
            (NOW - 301, False),
            (NOW + 301, False),
        ]:
            with self.subTest(offset=ts - NOW):
                sig = "v1=" + signature(SECRET, DELIVERY, ts, BODY)
                if ok:
                    webhooks.verify(SECRET, BODY, headers(sig, ts), now=NOW)
                else:
                    with self.assertRaisesRegex(WebhookVerificationError, "timestamp"):
                        webhooks.verify(SECRET, BODY, headers(sig, ts), now=NOW)
        sig = "v1=" + signature(SECRET, DELIVERY, NOW - 3600, BODY)
        webhooks.verify(SECRET, BODY, headers(sig, NOW - 3600), tolerance_s=7200, now=NOW)

    def test_missing_or_malformed_headers_are_refused(self) -> None:
        sig = "v1=" + signature(SECRET, DELIVERY, NOW, BODY)
        for name in ("ClaudeCluster-Webhook-Id", "ClaudeCluster-Webhook-Timestamp", "ClaudeCluster-Webhook-Signature"):
            with self.subTest(missing=name):
                h = headers(sig)
                del h[name]
                with self.assertRaisesRegex(WebhookVerificationError, name):
                    webhooks.verify(SECRET, BODY, h, now=NOW)
        bad = dict(headers(sig), **{"ClaudeCluster-Webhook-Timestamp": "yesterday"})
        with self.assertRaises(WebhookVerificationError):
            webhooks.verify(SECRET, BODY, bad, now=NOW)
        for header in ("v0=" + sig[3:], sig[3:], ""):
            with self.subTest(signature=header), self.assertRaises(WebhookVerificationError):
                webhooks.verify(SECRET, BODY, headers(header), now=NOW)

    def test_a_body_that_is_not_a_json_object_is_refused_even_when_signed(self) -> None:
        for body in (b"not json", b"[1,2]"):
            sig = "v1=" + signature(SECRET, DELIVERY, NOW, body)
            with self.subTest(body=body), self.assertRaises(WebhookVerificationError):
                webhooks.verify(SECRET, body, headers(sig), now=NOW)

    def test_the_body_must_be_bytes(self) -> None:
        with self.assertRaises(TypeError):
            webhooks.verify(SECRET, BODY.decode(), headers("v1=00"), now=NOW)  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()

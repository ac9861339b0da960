"""Verifying ClaudeCluster's webhook deliveries.

Each delivery is a POST whose headers carry::

    ClaudeCluster-Webhook-Id: <delivery id>
    ClaudeCluster-Webhook-Timestamp: <unix seconds>
    ClaudeCluster-Webhook-Signature: v1=<hex HMAC-SHA256> [v1=<hex> …]

The signature is HMAC-SHA256, keyed with the endpoint's secret (its UTF-8
bytes, ``whsec_…`` included), over ``f"{timestamp}.{delivery_id}."``
followed by the raw body bytes. During a secret rotation the header holds
one ``v1=`` value per secret; any match passes. Verify the raw body exactly
as received, before any JSON parsing, and answer a failed check with a 4xx.

    event = claudecluster.webhooks.verify(SECRET, request.body, request.headers)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Dict, List, Mapping, Optional

from .errors import WebhookVerificationError

__all__ = [
    "ID_HEADER",
    "TIMESTAMP_HEADER",
    "SIGNATURE_HEADER",
    "DEFAULT_TOLERANCE_S",
    "sign",
    "verify",
    "WebhookVerificationError",
]

ID_HEADER = "ClaudeCluster-Webhook-Id"
TIMESTAMP_HEADER = "ClaudeCluster-Webhook-Timestamp"
SIGNATURE_HEADER = "ClaudeCluster-Webhook-Signature"
#: How far a delivery's timestamp may be from now, either way: a captured
#: delivery cannot be replayed later than this, and a receiver whose clock
#: is a few minutes off still accepts fresh ones.
DEFAULT_TOLERANCE_S = 300
_SCHEME = "v1="


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1=<hex>`` signature of a delivery (for tests and for relaying
    deliveries onwards)."""
    return _SCHEME + _digest(secret, delivery_id, str(timestamp), body)


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: Optional[float] = None,
) -> Dict[str, Any]:
    """Checks a delivery's signature and timestamp and returns its parsed
    JSON event. ``headers`` is any mapping of the request's headers (names
    in any case); ``now`` (Unix seconds) defaults to the clock.

    Raises :class:`~claudecluster.errors.WebhookVerificationError` when a
    header is missing, the timestamp is further than ``tolerance_s`` from
    ``now``, no signature matches, or the body is not a JSON object.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("body must be the raw request body as bytes")
    body = bytes(body)
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    delivery_id = _header(lowered, ID_HEADER)
    timestamp = _header(lowered, TIMESTAMP_HEADER)
    signature = _header(lowered, SIGNATURE_HEADER)

    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not a Unix time: {timestamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        raise WebhookVerificationError(
            f"the delivery's timestamp {sent} is more than {tolerance_s} s from now ({int(current)})"
        )

    candidates = _signatures(signature)
    if not candidates:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} holds no {_SCHEME} signature")
    expected = _digest(secret, delivery_id, timestamp, body)
    # Every candidate is compared (constant time each), so the time taken
    # does not tell which one matched.
    matched = False
    for candidate in candidates:
        if hmac.compare_digest(expected.encode("ascii"), candidate.encode("ascii", "replace")):
            matched = True
    if not matched:
        raise WebhookVerificationError("no signature matches: wrong secret, or the body was changed")

    try:
        event = json.loads(body)
    except ValueError as e:
        raise WebhookVerificationError(f"the body is not JSON: {e}") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event


def _digest(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    message = f"{timestamp}.{delivery_id}.".encode("utf-8") + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _header(lowered: Mapping[str, str], name: str) -> str:
    value = lowered.get(name.lower())
    if value is None or not value.strip():
        raise WebhookVerificationError(f"the {name} header is missing")
    return value.strip()


def _signatures(header: str) -> List[str]:
    return [part[len(_SCHEME):].lower() for part in header.split() if part.startswith(_SCHEME)]

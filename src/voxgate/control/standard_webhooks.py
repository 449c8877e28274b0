"""Standard Webhooks signatures, as OpenAI signs `realtime.call.incoming` (and xAI the same shape). Pure.

Both ways through one module: voxgate *verifies* the webhooks OpenAI sends when an agent runs behind
OpenAI's SIP, and *signs* the ones it sends itself when it serves that call-control API for its own SIP
calls, so that an app's `client.webhooks.unwrap(...)` in the official SDK accepts them unchanged.

    webhook-id:        a delivery's id (retries of one event keep it: that is how duplicates are told)
    webhook-timestamp: unix seconds
    webhook-signature: space-separated "v1,<base64 HMAC-SHA256>" entries (several while a secret rotates)

The MAC is over f"{id}.{timestamp}.{raw body}" with the secret's bytes (a `whsec_` secret is base64 after
the prefix). A delivery passes when any entry matches (constant time) and the timestamp is within
`tolerance_s` of now, either way. A signature proves who sent it, not that it is new: `ReplayGuard`
remembers the ids it accepted for as long as their timestamps can pass, so a replayed delivery is refused.

Times come in as arguments (the caller's clock): nothing here reads a clock, a socket or the environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from voxgate.transports.replay_cache import ReplayCache

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "ReplayGuard",
    "SignedDelivery",
    "WebhookRejected",
    "secret_bytes",
    "sign",
    "verify",
]

DEFAULT_TOLERANCE_S = 300
MAX_ID_LENGTH = 256  # a webhook id longer than this is not one anybody sends; refuse before hashing
MAX_SIGNATURE_ENTRIES = 16  # a rotating sender sends two or three


class WebhookRejected(ValueError):
    """A delivery that must not be acted on; `reason` is a short code for metrics and the 4xx answer:
    `missing_header`, `malformed`, `stale`, `future`, `bad_signature`, `replayed`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedDelivery:
    """What a verified delivery's headers said."""

    webhook_id: str
    timestamp: int


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: base64 after a `whsec_` prefix, else the text's UTF-8. ValueError when empty or bad."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a whsec_ webhook secret must be base64 after its prefix") from exc
    else:
        key = secret.encode()
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _mac(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers that make `body` a signed delivery."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + _mac(secret_bytes(secret), webhook_id, str(timestamp), body),
    }


def verify(secrets: list[str], headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance_s: int = DEFAULT_TOLERANCE_S) -> SignedDelivery:
    """Check a delivery against any of `secrets` (more than one while a secret rotates). `headers` must
    be looked up case-insensitively (Starlette's and httpx's are). Raises WebhookRejected."""
    webhook_id, timestamp, signature = (headers.get(name) for name in
                                        ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not webhook_id or not timestamp or not signature:
        raise WebhookRejected("missing_header", "webhook-id, webhook-timestamp and webhook-signature are required")
    if len(webhook_id) > MAX_ID_LENGTH or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRejected("malformed", "webhook-id or webhook-timestamp is malformed")
    sent_at = int(timestamp)
    if now - sent_at > tolerance_s:
        raise WebhookRejected("stale", f"the webhook's timestamp is more than {tolerance_s} s old")
    if sent_at - now > tolerance_s:
        raise WebhookRejected("future", f"the webhook's timestamp is more than {tolerance_s} s ahead")
    entries = signature.split()
    if len(entries) > MAX_SIGNATURE_ENTRIES:
        raise WebhookRejected("malformed", "too many webhook-signature entries")
    offered = [entry[3:] for entry in entries if entry.startswith("v1,")]
    for secret in secrets:
        expected = _mac(secret_bytes(secret), webhook_id, timestamp, body)
        if any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in offered):
            return SignedDelivery(webhook_id, sent_at)
    raise WebhookRejected("bad_signature", "no webhook-signature entry matches")


class ReplayGuard:
    """The webhook ids accepted lately. `admit(delivery, now)` is False for an id seen before while its
    timestamp could still pass; ids older than that are forgotten (a replay of one fails as stale).
    Bounded: beyond `capacity` the oldest are forgotten first, which only ever refuses less."""

    def __init__(self, tolerance_s: int = DEFAULT_TOLERANCE_S, capacity: int = 100_000) -> None:
        self.tolerance_s = tolerance_s
        self._ids = ReplayCache(window_s=tolerance_s, max_keys=capacity)

    def __len__(self) -> int:
        return len(self._ids)

    def admit(self, delivery: SignedDelivery, now: float) -> bool:
        # Remembered as long as its timestamp passes the tolerance: a future-dated one, that much longer.
        return not self._ids.seen(delivery.webhook_id, now, until=max(now, delivery.timestamp) + self.tolerance_s)

    def release(self, webhook_id: str) -> None:
        """Forget an id whose handling failed, so the sender's retry (the same id) is taken."""
        self._ids.forget(webhook_id)

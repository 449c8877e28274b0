"""Carrier webhook signatures: Twilio's HMAC over URL + parameters, Telnyx's Ed25519 over timestamp|body.

Pure functions: the caller passes the URL the carrier requested, the raw parameters or body, and the
current time. Algorithms: ../shared/reference/telephony-protocols.md §1.5 and §2.4.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "SignatureError",
    "twilio_signature",
    "twilio_signature_valid",
    "verify_telnyx",
]

TELNYX_TOLERANCE_S = 300  # Telnyx's customary limit on a webhook's age
TELNYX_MAX_FUTURE_S = 30  # a timestamp ahead of our clock by more than skew is not Telnyx's
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


class SignatureError(ValueError):
    """A webhook that must not be trusted; `reason` is a short stable name (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- Twilio ----------------------------------------------------------------------------------------


def twilio_signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """base64(HMAC-SHA1(auth token, url + every parameter sorted by name as name+value))."""
    by_name: dict[str, list[str]] = {}
    for name, value in params:
        by_name.setdefault(name, []).append(value)
    payload = url + "".join(name + value for name in sorted(by_name) for value in sorted(by_name[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signature_valid(url: str, params: Iterable[tuple[str, str]], signature: str | None,
                           auth_token: str, body: bytes | None = None) -> bool:
    """Check `X-Twilio-Signature`, accepting the URL with and without its default port as Twilio does.

    For a JSON-body webhook pass the raw `body`: its SHA-256 must match the URL's `bodySHA256`
    parameter, and the URL alone is signed.
    """
    if not signature or not auth_token:
        return False
    pairs = list(params)
    if body is not None:
        query = dict(parse_qsl(urlsplit(url).query))
        expected_hash = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(query.get("bodySHA256", ""), expected_hash):
            return False
        pairs = []
    for candidate in {url, _with_port(url), _without_port(url)}:
        if hmac.compare_digest(twilio_signature(candidate, pairs, auth_token), signature):
            return True
    return False


def _with_port(url: str) -> str:
    parts = urlsplit(url)
    port = _DEFAULT_PORTS.get(parts.scheme)
    if parts.port is not None or port is None or parts.hostname is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{netloc[-1]}:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None or parts.port != _DEFAULT_PORTS.get(parts.scheme):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))


# -- Telnyx ----------------------------------------------------------------------------------------


def verify_telnyx(body: bytes, signature: str | None, timestamp: str | None, public_key: str, now: float,
                  tolerance_s: float = TELNYX_TOLERANCE_S, max_future_s: float = TELNYX_MAX_FUTURE_S) -> None:
    """Raise SignatureError unless `signature` is the Ed25519 signature of `timestamp|body`, made recently:
    at most `tolerance_s` before `now` and `max_future_s` after it (clock skew; Telnyx stamps as it sends).

    `public_key` is the portal's base64 of the raw 32-byte key; `body` the bytes exactly as received.
    """
    if not signature or not timestamp:
        raise SignatureError("missing", "telnyx-signature-ed25519 and telnyx-timestamp headers are required")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise SignatureError("malformed", "telnyx-timestamp is not a unix time") from exc
    if now - sent_at > tolerance_s:
        raise SignatureError("stale", f"telnyx-timestamp is {now - sent_at:.0f} s old, more than {tolerance_s:.0f} s")
    if sent_at - now > max_future_s:
        raise SignatureError("future", f"telnyx-timestamp is {sent_at - now:.0f} s ahead of our clock, "
                             f"more than {max_future_s:.0f} s")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("malformed", f"signature or public key is not base64 Ed25519: {exc}") from exc
    try:
        key.verify(raw_signature, timestamp.encode() + b"|" + body)
    except InvalidSignature as exc:
        raise SignatureError("invalid", "Ed25519 signature does not match the body") from exc


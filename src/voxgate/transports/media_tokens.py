"""Single-use media tokens: how a carrier's media socket proves it belongs to a call our webhook answered.

The signed webhook (Twilio's voice webhook, Telnyx's `call.initiated`) mints a token bound to what it
was told about the call (a `MediaGrant`: carrier, call id, account, agent, caller). The token travels to
the carrier in the answer (a TwiML `<Parameter>`, Telnyx's `stream_auth_token`) and comes back on the
media socket; the socket's `start` is accepted only with a live, unused token bound to the call id that
`start` names. Everything the call does afterwards (agent, REST commands) comes from the grant, never
from the stream, which anyone who reaches the socket can write.

Sans-IO: the caller passes the time. Only a SHA-256 of each token is held, at most `max_tokens` of
them (the oldest forgotten first). A token is usable for `ttl_s`; it is remembered for as long again,
so a late or second use is refused by name (`expired`, `reused`) rather than as `unknown`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["MediaGrant", "MediaTokenError", "MediaTokens"]


@dataclass(frozen=True)
class MediaGrant:
    """What the signed webhook said about a call: the only source of ids the call acts on."""

    carrier: str  # "twilio" | "telnyx"
    call_id: str  # Twilio CallSid, Telnyx call_control_id
    account_id: str = ""  # Twilio AccountSid (the REST URL and Basic-auth user)
    agent: str = ""
    from_number: str = ""
    to_number: str = ""
    # Said before the greeting when the call comes back to the agent (a transfer nobody answered).
    opening: str = ""


class MediaTokenError(Exception):
    """A media socket that must not get a call; `reason` is a short stable name (a metric label):
    `missing`, `unknown` (never minted, forged, or forgotten), `reused`, `expired`, `wrong_call`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Entry:
    grant: MediaGrant
    expires_at: float
    used: bool = False


class MediaTokens:
    """The live tokens of one gateway, by hash."""

    def __init__(self, ttl_s: float, max_tokens: int) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.ttl_s = ttl_s
        self.max_tokens = max_tokens
        # Oldest first (expiry order).
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def mint(self, grant: MediaGrant, now: float) -> str:
        """A new token for `grant`, usable once within `ttl_s` of `now`."""
        self._forget_expired(now)
        if len(self._entries) >= self.max_tokens:
            self._entries.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._entries[_digest(token)] = _Entry(grant, now + self.ttl_s)
        return token

    def redeem(self, token: str | None, carrier: str, call_id: str, now: float) -> MediaGrant:
        """The grant of `token` if it is live, unused and bound to this carrier's `call_id`; it is then
        used up. Raises MediaTokenError otherwise. A token presented for another call is not used up:
        whoever holds it and the right call id is the carrier."""
        if not token:
            raise MediaTokenError("missing", "no media token: streams are accepted only for calls our webhook answered")
        self._forget_expired(now)
        entry = self._entries.get(_digest(token))
        if entry is None:
            raise MediaTokenError("unknown", "unknown media token")
        if entry.used:
            raise MediaTokenError("reused", "media token already used")
        if now > entry.expires_at:
            raise MediaTokenError("expired", "media token expired")
        if entry.grant.carrier != carrier or entry.grant.call_id != call_id:
            raise MediaTokenError("wrong_call", "media token was minted for another call")
        entry.used = True
        return entry.grant

    def _forget_expired(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest, entry = next(iter(entries.items()))
            if entry.expires_at + self.ttl_s >= now:
                return
            del entries[oldest]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

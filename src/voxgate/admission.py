"""Admission control: how many live calls the gateway takes, in all, per key, and not while draining.

Every transport asks the one `Admission` before it starts a call — the Realtime WebSocket before it
accepts, WebRTC before it builds a peer connection, Twilio and Telnyx at their webhook (before the call
is answered) — and gets a `Ticket` to hold for the call's life or a `Refusal` to answer with. A call
beyond the limit is refused at once instead of slowing every call already up (30 local-engine callers on
2 cores waited 6.5 s for first audio where one waits 0.4 s).

A phone call is admitted at its webhook but its media socket arrives a moment later: the webhook
`reserve`s its ticket under the carrier's call id and the media socket `claim`s it. A reservation nobody
claims (the caller hung up first) lapses after `reservation_ttl_s`.

The core holds no timers and reads time only through `now`, so tests drive it with their own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from voxgate.observability import metrics

__all__ = ["Admission", "Refusal", "RefusalReason", "Ticket"]

RefusalReason = Literal["capacity", "key_limit", "draining"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call was not taken, and when to try again (seconds; the HTTP `Retry-After`)."""

    reason: RefusalReason
    message: str
    retry_after_s: int

    @property
    def code(self) -> str:
        """The machine-readable code clients see (Realtime `error.code`, HTTP problem `code`)."""
        return _CODES[self.reason]


_CODES: dict[RefusalReason, str] = {
    "capacity": "server_at_capacity",
    "key_limit": "key_call_limit_reached",
    "draining": "server_draining",
}


class Ticket:
    """One admitted call. Release it when the call ends (idempotent: every end path may call it)."""

    __slots__ = ("_admission", "key", "released", "transport")

    def __init__(self, admission: Admission, key: str | None, transport: str) -> None:
        self._admission = admission
        self.key = key
        self.transport = transport
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    """The gateway's call limit (`max_calls`) and per-key limit (`max_calls_per_key`, 0: none)."""

    def __init__(self, max_calls: int, max_calls_per_key: int = 0, *, retry_after_s: int = 5,
                 drain_retry_after_s: int = 30, reservation_ttl_s: float = 30.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limit = 0
        self.per_key_limit = max_calls_per_key
        self.retry_after_s = retry_after_s
        self.drain_retry_after_s = drain_retry_after_s
        self.reservation_ttl_s = reservation_ttl_s
        self.draining = False
        self._now = now
        self._in_use = 0
        self._by_key: dict[str, int] = {}
        self._reserved: dict[str, tuple[Ticket, float]] = {}  # carrier call id -> (ticket, lapses at)
        self.set_limit(max_calls)

    # -- the limit -------------------------------------------------------------------------------

    def set_limit(self, max_calls: int) -> None:
        """Change the gateway limit (at start, once the derived figure is known); live calls are kept."""
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.limit = max_calls
        metrics.CALLS_LIMIT.set(max_calls)

    def start_draining(self) -> None:
        """Take no new call from now on (calls already admitted, and reserved ones, carry on)."""
        self.draining = True

    @property
    def in_use(self) -> int:
        """Calls holding a ticket, reserved ones included."""
        self._lapse()
        return self._in_use

    def snapshot(self) -> dict[str, int | bool]:
        """Limit and usage, for `/readyz` (a load balancer prefers the node with most room)."""
        in_use = self.in_use
        return {"active": in_use, "limit": self.limit, "available": max(0, self.limit - in_use),
                "per_key_limit": self.per_key_limit, "accepting": not self.draining and in_use < self.limit}

    # -- calls -----------------------------------------------------------------------------------

    def try_admit(self, key: str | None, transport: str) -> Ticket | Refusal:
        """A ticket for a new call by `key` (None: a carrier call, under the gateway limit only)."""
        self._lapse()
        refusal = self._refusal(key)
        if refusal is not None:
            metrics.CALLS_REFUSED.labels(refusal.reason, transport).inc()
            return refusal
        self._in_use += 1
        if key is not None:
            self._by_key[key] = self._by_key.get(key, 0) + 1
        metrics.CALLS_ADMITTED.inc()
        return Ticket(self, key, transport)

    def _refusal(self, key: str | None) -> Refusal | None:
        if self.draining:
            return Refusal("draining", "The gateway is shutting down; call another node or try again later.",
                           self.drain_retry_after_s)
        if self._in_use >= self.limit:
            return Refusal("capacity", f"The gateway is at its limit of {self.limit} live calls; try again later.",
                           self.retry_after_s)
        if key is not None and self.per_key_limit and self._by_key.get(key, 0) >= self.per_key_limit:
            return Refusal("key_limit", f"This key has {self.per_key_limit} live calls, its limit; end one or "
                           "try again later.", self.retry_after_s)
        return None

    def _release(self, ticket: Ticket) -> None:
        self._in_use -= 1
        metrics.CALLS_ADMITTED.dec()
        if ticket.key is not None:
            left = self._by_key[ticket.key] - 1
            if left:
                self._by_key[ticket.key] = left
            else:
                del self._by_key[ticket.key]

    # -- phone calls: admitted at the webhook, claimed by the media socket ------------------------

    def reserve(self, call_id: str, ticket: Ticket) -> None:
        """Hold `ticket` for the media socket of carrier call `call_id`, for `reservation_ttl_s`."""
        previous = self._reserved.pop(call_id, None)
        if previous is not None:  # the carrier retried its webhook: one call, one ticket
            previous[0].release()
        self._reserved[call_id] = (ticket, self._now() + self.reservation_ttl_s)

    def claim(self, call_id: str) -> Ticket | None:
        """The ticket reserved for this call, if it has not lapsed; the caller now owns it."""
        self._lapse()
        held = self._reserved.pop(call_id, None)
        return held[0] if held is not None else None

    def cancel(self, call_id: str) -> None:
        """The call ended before its media socket came (e.g. the caller hung up while ringing)."""
        held = self._reserved.pop(call_id, None)
        if held is not None:
            held[0].release()

    def _lapse(self) -> None:
        if not self._reserved:
            return
        now = self._now()
        for call_id in [c for c, (_, until) in self._reserved.items() if until <= now]:
            self._reserved.pop(call_id)[0].release()

"""The escalation queue operators read: the recent hand-offs (`GET /v1/escalations`).

Bounded and in memory: a live queue, not a record (the call record keeps the outcome). A browser call
stays `waiting` for an operator while it is live (there is no carrier leg to move it to) until one takes
it over (`taken_over`), a phone call is `transferred` to the escalation target, and a waiting or taken
over entry whose call has ended says `ended`.
"""

from __future__ import annotations

from collections import OrderedDict

from voxgate.session.handoff import Handoff

__all__ = ["EscalationQueue"]


class EscalationQueue:
    """The most recent hand-offs, newest last; at most `limit` (older ones drop off)."""

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, Handoff] = OrderedDict()

    def add(self, handoff: Handoff) -> None:
        self._entries.pop(handoff.call_id, None)
        self._entries[handoff.call_id] = handoff
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def call_ended(self, call_id: str) -> None:
        entry = self._entries.get(call_id)
        if entry is not None and entry.state in ("waiting", "taken_over"):
            entry.state = "ended"

    def get(self, call_id: str) -> Handoff | None:
        return self._entries.get(call_id)

    def visible_to(self, owner: str | None, state: str | None = None) -> list[Handoff]:
        """Newest first; a key sees its own calls' and the gateway's own (phones, the dev console)."""
        return [h for h in reversed(self._entries.values())
                if (h.owner is None or h.owner == owner) and (state is None or h.state == state)]

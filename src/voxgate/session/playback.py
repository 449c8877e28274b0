"""What the caller has heard: the per-call playback record that truncation and latency read.

Transports that pace audio themselves (phones, WebRTC) report progress with `played()`; for a
WebSocket client, which owns its own playback, the best the server knows is what it sent, and the
client's `conversation.item.truncate` says the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _ItemPlayback:
    sent_ms: float = 0.0
    played_ms: float | None = None


class PlaybackTracker:
    def __init__(self, server_side: bool = False) -> None:
        # server_side: the transport plays the audio itself, so the session truncates on barge-in.
        self.server_side = server_side
        self._items: dict[str, _ItemPlayback] = {}

    def sent(self, item_id: str, ms: float) -> None:
        """`ms` more of this item's audio left the server."""
        entry = self._items.setdefault(item_id, _ItemPlayback())
        entry.sent_ms += ms

    def played(self, item_id: str, ms: float) -> None:
        """The transport confirms the caller heard this item up to `ms` (monotonic)."""
        entry = self._items.setdefault(item_id, _ItemPlayback())
        entry.played_ms = max(entry.played_ms or 0.0, min(ms, entry.sent_ms))

    def sent_ms(self, item_id: str) -> float:
        entry = self._items.get(item_id)
        return entry.sent_ms if entry else 0.0

    def heard_ms(self, item_id: str) -> float:
        entry = self._items.get(item_id)
        if entry is None:
            return 0.0
        return entry.played_ms if entry.played_ms is not None else entry.sent_ms

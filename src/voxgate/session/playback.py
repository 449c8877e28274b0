"""What the caller has heard: the per-call playback record that truncation and latency read.

A transport that plays the agent's audio itself at real time (phone, WebRTC, RTP) hands its line's
playout to the tracker (`line`), and the heard position is that line's: what its clock has released,
never what was merely sent ahead of it (until the line exists, nothing has been heard). For a WebSocket
client, which owns its own playback, the best the server knows is what it sent, and the client's
`conversation.item.truncate` says the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["HeardPosition", "PlaybackTracker"]

_ITEMS = 256  # items whose sent audio is remembered (a barge-in only ever cuts a recent one)


class HeardPosition(Protocol):
    """A paced line's record of what the caller has heard (`audio.playout.Playout`)."""

    def heard_ms(self, item_id: str) -> float: ...


class PlaybackTracker:
    def __init__(self, server_side: bool = False) -> None:
        # server_side: the transport plays the audio itself, so the session truncates on barge-in.
        self.server_side = server_side
        self.line: HeardPosition | None = None  # the paced line's playout, once the transport has one
        self.on_heard: Callable[[str], None] | None = None  # told when an item's first frame reaches the caller
        self._sent: dict[str, float] = {}

    def sent(self, item_id: str, ms: float) -> None:
        """`ms` more of this item's audio left the session for the transport."""
        sent = self._sent
        sent[item_id] = sent.get(item_id, 0.0) + ms
        if len(sent) > _ITEMS:
            del sent[next(iter(sent))]

    def heard_from(self, item_id: str) -> None:
        """The line released the first frame of `item_id`: the caller is hearing it."""
        if self.on_heard is not None:
            self.on_heard(item_id)

    def sent_ms(self, item_id: str) -> float:
        return self._sent.get(item_id, 0.0)

    def heard_ms(self, item_id: str) -> float:
        sent = self._sent.get(item_id, 0.0)
        if not self.server_side:
            return sent
        line = self.line
        return 0.0 if line is None else min(sent, line.heard_ms(item_id))

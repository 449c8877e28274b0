"""The pacing clock for transports that must hand out audio in real time (phones, RTP).

Sans-IO: the caller reads its own clock and passes ``now`` (seconds, any monotonic origin). Frames are
scheduled on an absolute grid (``anchor + k * frame``), so a wake-up that comes a few ms late sends the
frames it owes and the stream does not drift. A stall longer than ``max_catchup_ms`` is different: sending
everything owed at once would burst hundreds of ms into the far end's jitter buffer, so the clock instead
sends one frame and re-anchors its grid at ``now``, counting the re-anchor.
"""

from __future__ import annotations

import math

__all__ = ["PacingClock"]

# Tolerance so that a wake-up exactly on a deadline (up to float rounding) counts as on time.
_EPSILON_S = 1e-9


class PacingClock:
    """Say how many fixed-length frames are due at a given time.

    Call ``start(now)`` when a stream begins (the first frame is due at once), then ``due(now)`` on each
    wake-up and send that many frames; sleep until ``next_deadline``. Call ``start`` again when audio
    resumes after an idle gap, so the gap is not "caught up".
    """

    def __init__(self, frame_ms: float = 20, max_catchup_ms: float = 100) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}")
        if max_catchup_ms < 0:
            raise ValueError(f"max_catchup_ms must not be negative, got {max_catchup_ms}")
        self.frame_s = frame_ms / 1000
        self.max_catchup_s = max_catchup_ms / 1000
        self.reanchors = 0
        self._anchor: float | None = None
        self._sent = 0  # frames handed out since the anchor

    @property
    def started(self) -> bool:
        return self._anchor is not None

    @property
    def next_deadline(self) -> float:
        """When the next frame falls due."""
        if self._anchor is None:
            raise RuntimeError("PacingClock.start() has not been called")
        return self._anchor + self._sent * self.frame_s

    def start(self, now: float) -> None:
        """Anchor the frame grid at ``now``; the first frame is due immediately."""
        self._anchor = now
        self._sent = 0

    def due(self, now: float) -> int:
        """How many frames to send now; each is counted as sent."""
        if self._anchor is None:
            raise RuntimeError("PacingClock.start() has not been called")
        lateness = now - self.next_deadline
        if lateness < -_EPSILON_S:
            return 0
        if lateness > self.max_catchup_s + _EPSILON_S:
            self.reanchors += 1
            self.start(now)
            self._sent = 1
            return 1
        owed = math.floor((now - self._anchor) / self.frame_s + _EPSILON_S) + 1 - self._sent
        self._sent += owed
        return owed

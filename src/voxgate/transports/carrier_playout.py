"""Agent audio on its way to a carrier: cut into 20 ms frames, released in real time, marked, clearable.

Sans-IO (the shell passes `now`): the engine hands over a reply far faster than real time, but a carrier
plays what it is sent, so flooding it would put seconds of audio out of reach of barge-in. `CarrierPlayout`
keeps the reply here and releases frames on the call's PacingClock, a couple of frames ahead
(`lead_frames`) so the carrier never starves. Every `mark_every_frames` frames, and at the end of each
item, it asks for a mark named `"<item_id>:<ms>"`; the carrier echoes a mark once the audio before it
has played, which is how the gateway knows what the caller heard. `clear()` (barge-in) drops what is
queued here, forgets the marks in flight (a carrier echoes those when it clears, but they were not
heard), and refuses any late audio of the items it cut.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from voxgate.audio.clock import PacingClock

__all__ = ["CarrierPlayout", "OutFrame"]

_MAX_CUT_ITEMS = 32  # items whose late audio is refused after a clear (recent ones are all that matter)
_MAX_DISCARDED_MARKS = 4096


@dataclass(frozen=True, slots=True)
class OutFrame:
    payload: bytes
    mark: str | None  # send this mark right after the frame


class CarrierPlayout:
    def __init__(self, *, frame_bytes: int, silence: bytes, frame_ms: float = 20.0, lead_frames: int = 2,
                 mark_every_frames: int = 5, max_frames: int = 3000) -> None:
        if frame_bytes <= 0 or len(silence) == 0 or frame_bytes % len(silence):
            raise ValueError("frame_bytes must be a positive multiple of the silence pattern's length")
        self.frame_bytes = frame_bytes
        self.frame_ms = frame_ms
        self.lead_frames = max(0, lead_frames)
        self.mark_every_frames = max(1, mark_every_frames)
        self.max_frames = max_frames
        self.clock = PacingClock(frame_ms, max_catchup_ms=max(100.0, 3 * frame_ms))
        self._silence = silence
        self._queue: deque[tuple[str, bytes]] = deque()
        self._partial = b""
        self._partial_item: str | None = None
        self._last_item: str | None = None
        self._running = False
        self._since_mark = 0
        self._item_ms: dict[str, float] = {}
        self._outstanding: dict[str, tuple[str, float]] = {}  # mark name -> (item, ms heard once it echoes)
        self._discarded: set[str] = set()
        self._cut: deque[str] = deque(maxlen=_MAX_CUT_ITEMS)
        self.frames_sent = 0
        self.frames_dropped = 0  # refused because max_frames were queued
        self.unknown_marks = 0

    # -- what the session produced ------------------------------------------------------------------

    def enqueue(self, item_id: str, audio: bytes) -> int:
        """Queue an item's audio; returns the frames dropped because the queue was full."""
        if item_id in self._cut:
            return 0  # the caller interrupted this item: its late audio must not play
        if item_id != self._partial_item:
            self._pad_partial()
        self._last_item = self._partial_item = item_id
        data = self._partial + audio if self._partial else audio
        whole = len(data) - len(data) % self.frame_bytes
        dropped = 0
        for start in range(0, whole, self.frame_bytes):
            if len(self._queue) >= self.max_frames:
                dropped += 1
                continue
            self._queue.append((item_id, data[start:start + self.frame_bytes]))
        self._partial = data[whole:]
        self.frames_dropped += dropped
        return dropped

    def end_item(self, item_id: str) -> None:
        """The item's audio is complete: a last partial frame is padded with silence and queued."""
        if item_id == self._partial_item:
            self._pad_partial()

    def _pad_partial(self) -> None:
        if self._partial and self._partial_item is not None and len(self._queue) < self.max_frames:
            missing = self.frame_bytes - len(self._partial)
            self._queue.append((self._partial_item, self._partial + self._silence * (missing // len(self._silence))))
        self._partial = b""
        self._partial_item = None

    # -- what goes out now -------------------------------------------------------------------------

    def due(self, now: float, beat: float | None = None) -> list[OutFrame]:
        """The frames to send at `now` (seconds, monotonic), each with the mark to send after it, if any.

        `beat` is when the shell will next call, if it calls on a fixed beat (a shared 20 ms tick): a
        fresh grid then puts every deadline half a frame before a beat, so a beat that wakes a few ms
        early or late still finds exactly one frame due, never none and then two.
        """
        if not self._queue:
            self._running = False
            return []
        if not self._running:  # audio after silence: a fresh grid, `lead_frames` ahead at once
            frame_s = self.clock.frame_s
            first_paced = now + frame_s
            if beat is not None:
                first_paced = beat - frame_s / 2
                while first_paced <= now + 1e-6:  # clear of the clock's on-time tolerance
                    first_paced += frame_s
            self.clock.start(first_paced - (self.lead_frames + 1) * frame_s)
            self._running = True
        count = min(self.clock.due(now), len(self._queue))
        frames: list[OutFrame] = []
        queue = self._queue
        for _ in range(count):
            item, payload = queue.popleft()
            ms = self._item_ms.get(item, 0.0) + self.frame_ms
            self._item_ms[item] = ms
            self._since_mark += 1
            mark = None
            if self._since_mark >= self.mark_every_frames or not queue or queue[0][0] != item:
                mark = f"{item}:{ms:.0f}"
                self._outstanding[mark] = (item, ms)
                self._since_mark = 0
            frames.append(OutFrame(payload, mark))
        self.frames_sent += count
        if not queue:
            self._running = False
        return frames

    @property
    def next_deadline(self) -> float | None:
        return self.clock.next_deadline if self._running and self._queue else None

    # -- what the carrier reports ------------------------------------------------------------------

    def mark_echoed(self, name: str) -> tuple[str, float] | None:
        """(item, ms) the caller has now heard, or None for a mark that a clear discarded (or a stranger)."""
        entry = self._outstanding.pop(name, None)
        if entry is not None:
            return entry
        if name in self._discarded:
            self._discarded.discard(name)
        else:
            self.unknown_marks += 1
        return None

    def clear(self) -> int:
        """Barge-in: drop everything queued and cut the items playing; returns the frames dropped."""
        dropped = len(self._queue)
        for item in {item for item, _ in self._queue} | {self._last_item, self._partial_item}:
            if item is not None and item not in self._cut:
                self._cut.append(item)
        self._queue.clear()
        self._partial = b""
        self._partial_item = None
        if len(self._discarded) > _MAX_DISCARDED_MARKS:
            self._discarded.clear()
        self._discarded.update(self._outstanding)
        self._outstanding.clear()
        self._running = False
        self._since_mark = 0
        return dropped

    # -- state -------------------------------------------------------------------------------------

    @property
    def queued_ms(self) -> float:
        return len(self._queue) * self.frame_ms

    @property
    def idle(self) -> bool:
        """Nothing to send (a partial frame waits for more audio or the item's end)."""
        return not self._queue

    @property
    def all_sent(self) -> bool:
        """Nothing is left to send, not even a partial frame waiting for the rest of its item."""
        return not self._queue and not self._partial

    @property
    def drained(self) -> bool:
        """Everything sent has been confirmed played: the caller heard the whole reply."""
        return not self._queue and not self._partial and not self._outstanding

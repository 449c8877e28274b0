"""Agent audio on its way to a paced line: one frame per tick, what the caller has heard, clear (sans-IO).

Every transport that plays the agent's voice at real time (a carrier's media stream, a WebRTC track, RTP)
has the same problem: a reply arrives far faster than real time, but the line must carry it one fixed
frame per tick, so that a barge-in can still cut what has not been played. `Playout` is that queue. It
takes the line's encoded bytes (G.711, L16, PCM16 at the track's rate), cuts them into frames, releases
them on a `PacingClock` the shell drives with `now` (no clock reads, no sockets, no tasks here), and knows
what the caller has heard: a frame counts as heard once the clock has released it (a line paced by the
clock plays what it is given when it is given it, `lead_frames` early at most). So the session can cut an
item at the heard position from the first frame on, before any transport report has come back.

A line that can confirm playback (a carrier echoes marks) gets a confirmation point every
`confirm_every_frames` frames and at the end of each item; `until_heard()` then waits for the
confirmation, not just the release. `clear()` (barge-in) drops what is queued and forgets confirmations in
flight: what was released stays heard, the rest never will be. Which late audio a barge-in must refuse is
the session's decision, not this queue's: it only plays what it is given.

`hold()` pauses the line where it is (a continuous line plays silence, a carrier's sends nothing) while the
session checks whether a sound over the agent is the caller barging in: the agent stops at the caller on
the VAD's first trigger, not a confirmation later. `resume()` plays on from the same frame (a cough, not
words); `clear()` ends the hold with the barge-in. Nothing held counts as heard, and a hold lifts by itself
after `MAX_HOLD_S`, so a caller whose audio stops mid-check never leaves the agent silent.

Bound: at most `max_frames` queued; audio beyond it is dropped and counted (`frames_dropped`), and never
counted as heard.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from voxgate.audio.clock import PacingClock

__all__ = ["MAX_HOLD_S", "Frame", "Playout"]

MAX_HOLD_S = 0.3  # a barge-in check takes the confirmation's speech (64 ms by default) and a VAD frame or two

_HEARD_ITEMS = 64  # items whose heard position is remembered once later items play (recent ones matter)
_MAX_DISCARDED = 4096  # cleared confirmation names remembered, so their late echo is not a stranger


class Frame:
    """One frame for the line: its bytes, the item they belong to, and how far into that item the caller
    has heard once it is out. `confirm` names the confirmation to ask for right after it (a carrier mark)."""

    __slots__ = ("confirm", "heard_ms", "item_id", "payload")

    def __init__(self, payload: bytes, item_id: str, heard_ms: float) -> None:
        self.payload = payload
        self.item_id = item_id
        self.heard_ms = heard_ms
        self.confirm: str | None = None


class Playout:
    """`continuous`: the line carries a frame every tick, silence when nothing is queued (a WebRTC or RTP
    track), so its grid never stops. Otherwise (a carrier) nothing is sent between replies, and a reply
    after silence starts a fresh grid with `lead_frames` sent at once so the far end never starves."""

    def __init__(self, *, frame_bytes: int, silence: bytes, frame_ms: float = 20.0, lead_frames: int = 0,
                 continuous: bool = False, confirm_every_frames: int = 0, max_frames: int = 3000) -> None:
        if frame_bytes <= 0 or not silence or frame_bytes % len(silence):
            raise ValueError("frame_bytes must be a positive multiple of the silence pattern's length")
        self.frame_bytes = frame_bytes
        self.frame_ms = frame_ms
        self.continuous = continuous
        self.lead_frames = 0 if continuous else max(0, lead_frames)
        self.confirm_every = max(0, confirm_every_frames)
        self.max_frames = max(1, max_frames)
        self.clock = PacingClock(frame_ms, max_catchup_ms=max(100.0, 3 * frame_ms))
        self._silence = silence
        # (payload, item id, heard ms) per frame, a Frame only once popped: a reply is queued seconds ahead of
        # the line, and a tuple of a bytes, a str and a float leaves the cycle collector's lists at its first
        # young collection, where a Frame object would be walked by every middle collection until it played
        # (hundreds of calls each hold a reply's worth).
        self._queue: deque[tuple[bytes, str, float]] = deque()
        self._partial = b""  # bytes short of a whole frame, of `_push_item`
        self._push_item: str | None = None
        self._push_ms = 0.0  # audio of `_push_item` queued so far
        self._running = False  # a non-continuous grid is laid (a reply is playing)
        # Positions count frames since the call began: queued (`_pushed`), released, confirmed.
        self._pushed = 0
        self._released = 0
        self._confirmed = 0
        self._since_confirm = 0
        self._heard_item: str | None = None
        self._heard_ms = 0.0
        self._heard_before: dict[str, float] = {}  # items the line has moved past
        self._stops: deque[tuple[int, str]] = deque()  # (position its audio ends at, response id)
        self.stopped: list[str] = []  # responses played to the end, for the shell to take
        self._sent_waiters: deque[tuple[int, asyncio.Future[bool]]] = deque()
        self._heard_waiters: deque[tuple[int, asyncio.Future[bool]]] = deque()
        self._outstanding: dict[str, int] = {}  # confirmation name -> position it confirms
        self._discarded: set[str] = set()
        self.frames_released = 0
        self.frames_dropped = 0
        self.unknown_confirmations = 0
        self.on_item_heard: Callable[[str], None] | None = None  # an item's first frame was released
        self.held = False  # paused by `hold()`: nothing is released until `resume()`, `clear()` or the expiry
        self._hold_expires: float | None = None  # set by the first `due` after `hold()`, on the shell's clock

    # -- audio in ----------------------------------------------------------------------------------

    def push(self, data: bytes, item_id: str) -> int:
        """Queue the line's bytes as the next audio of `item_id`; returns the frames dropped (queue full)."""
        if item_id != self._push_item:
            self._pad_partial()
            self._push_item, self._push_ms = item_id, 0.0
        if self._partial:
            data = self._partial + data
        size, queue, frame_ms = self.frame_bytes, self._queue, self.frame_ms
        whole = len(data) - len(data) % size
        room = self.max_frames - len(queue)
        dropped = 0
        for start in range(0, whole, size):
            if room <= 0:
                dropped += 1
                continue
            self._push_ms += frame_ms
            queue.append((data[start:start + size], item_id, self._push_ms))
            room -= 1
        self._pushed += whole // size - dropped
        self._partial = data[whole:]
        self.frames_dropped += dropped
        return dropped

    def end_item(self, item_id: str) -> None:
        """The item's audio is complete: its last partial frame is padded with silence and queued."""
        if item_id == self._push_item:
            self._pad_partial()

    def end_response(self, response_id: str) -> None:
        """No more audio will come for this response: it is in `stopped` once its last frame is out."""
        self._pad_partial()
        if self._released >= self._pushed:
            self.stopped.append(response_id)
        else:
            self._stops.append((self._pushed, response_id))

    def _pad_partial(self) -> None:
        partial = self._partial
        if not partial or self._push_item is None:
            return
        self._partial = b""
        if len(self._queue) >= self.max_frames:
            self.frames_dropped += 1
            return
        missing = self.frame_bytes - len(partial)
        self._push_ms += self.frame_ms * len(partial) / self.frame_bytes  # only the real audio is heard
        self._queue.append((partial + self._silence * (missing // len(self._silence)), self._push_item,
                            self._push_ms))
        self._pushed += 1

    # -- frames out, on the clock ------------------------------------------------------------------

    def due(self, now: float, beat: float | None = None) -> int:
        """How many frames the line takes at `now` (seconds, monotonic): call `pop()` that many times.

        A continuous line counts every tick (`pop()` gives None: play silence). `beat` is when the shell
        will next call, if it calls on a fixed beat (a shared 20 ms tick): a fresh grid then puts every
        deadline half a frame before a beat, so a beat that wakes a few ms early or late still finds exactly
        one frame due, never none and then two.
        """
        if self.held and not self._still_held(now):
            self.resume()
        if self.continuous:
            if not self.clock.started:
                self.clock.start(self._first_deadline(now, beat) - self.clock.frame_s)
            return self.clock.due(now)  # held, each tick's `pop()` gives None: the line's silence
        if self.held:
            self._running = False  # on resume, a fresh grid with its lead, as after any pause
            return 0
        if not self._queue:
            self._running = False
            return 0
        if not self._running:  # audio after silence: a fresh grid, `lead_frames` ahead at once
            self.clock.start(self._first_deadline(now, beat) - (self.lead_frames + 1) * self.clock.frame_s)
            self._running = True
        return min(self.clock.due(now), len(self._queue))

    def _first_deadline(self, now: float, beat: float | None) -> float:
        """A fresh grid's first paced deadline after `now`: half a frame before a beat when the shell
        calls on one (see `due`), else a frame from now."""
        frame_s = self.clock.frame_s
        if beat is None:
            return now + frame_s
        first = beat - frame_s / 2
        while first <= now + 1e-6:  # clear of the clock's on-time tolerance
            first += frame_s
        return first

    @property
    def next_deadline(self) -> float | None:
        """When the next frame falls due; None while a non-continuous line has nothing to play."""
        if self.continuous:
            return self.clock.next_deadline if self.clock.started else None
        return self.clock.next_deadline if self._running and self._queue else None

    def pop(self) -> Frame | None:
        """The next frame for the line (counted as heard), or None when nothing is queued or it is held."""
        queue = self._queue
        if not queue or self.held:
            return None
        payload, item, heard_ms = queue.popleft()
        frame = Frame(payload, item, heard_ms)
        self._released += 1
        self.frames_released += 1
        if item != self._heard_item:
            if self._heard_item is not None:
                self._remember(self._heard_item, self._heard_ms)
            self._heard_item = item
            if self.on_item_heard is not None:
                self.on_item_heard(item)
        self._heard_ms = frame.heard_ms
        if self.confirm_every:
            self._since_confirm += 1
            if self._since_confirm >= self.confirm_every or not queue or queue[0][1] != item:
                name = frame.confirm = f"{item}:{frame.heard_ms:.0f}"
                self._outstanding[name] = self._released
                self._since_confirm = 0
        elif self._heard_waiters and self._heard_waiters[0][0] <= self._released:
            self._resolve(self._heard_waiters, self._released)
        if self._sent_waiters and self._sent_waiters[0][0] <= self._released:
            self._resolve(self._sent_waiters, self._released)
        if self._stops and self._stops[0][0] <= self._released:
            while self._stops and self._stops[0][0] <= self._released:
                self.stopped.append(self._stops.popleft()[1])
        if not queue and not self.continuous:
            self._running = False
        return frame

    def confirmed(self, name: str) -> bool:
        """The line confirms it has played up to confirmation `name`; False for one a clear discarded, or a
        stranger (counted)."""
        position = self._outstanding.pop(name, None)
        if position is None:
            if name in self._discarded:
                self._discarded.discard(name)
            else:
                self.unknown_confirmations += 1
            return False
        if position > self._confirmed:
            self._confirmed = position
            if self._heard_waiters and self._heard_waiters[0][0] <= position:
                self._resolve(self._heard_waiters, position)
        return True

    # -- barge-in ----------------------------------------------------------------------------------

    def hold(self) -> None:
        """Pause the line where it is: the caller may be barging in (see the module docstring)."""
        if not self.held:
            self.held = True
            self._hold_expires = None

    def resume(self) -> None:
        """Play on from where `hold()` paused."""
        self.held = False
        self._hold_expires = None

    def _still_held(self, now: float) -> bool:
        if self._hold_expires is None:
            self._hold_expires = now + MAX_HOLD_S
        return now < self._hold_expires

    def clear(self) -> int:
        """Drop everything queued (what was released stays heard); returns the frames dropped. Responses
        waiting to stop never will (they end as cleared); waiters on audio that will not play get False."""
        dropped = len(self._queue) + (1 if self._partial else 0)
        self.resume()  # the barge-in a hold was waiting for: what comes next is a new reply
        self._queue.clear()
        self._partial = b""
        self._pushed = self._released
        self._stops.clear()
        self._running = False
        self._since_confirm = 0
        if len(self._discarded) > _MAX_DISCARDED:
            self._discarded.clear()
        self._discarded.update(self._outstanding)
        self._outstanding.clear()
        self._confirmed = self._released  # nothing released before the clear is waited on any more
        for waiters in (self._sent_waiters, self._heard_waiters):
            while waiters:
                _, future = waiters.popleft()
                if not future.done():
                    future.set_result(False)
        return dropped

    # -- what the caller has heard -----------------------------------------------------------------

    def heard_ms(self, item_id: str) -> float:
        """How much of the item the caller has heard (released on the clock)."""
        if item_id == self._heard_item:
            return self._heard_ms
        return self._heard_before.get(item_id, 0.0)

    def until_sent(self) -> asyncio.Future[bool]:
        """A future that is True once everything queued so far (a partial frame padded) has been released,
        or False if a clear drops it first."""
        return self._waiter(self._sent_waiters, self._released)

    def until_heard(self) -> asyncio.Future[bool]:
        """As `until_sent`, but on a line that confirms playback, once the line has confirmed it."""
        if self.confirm_every:
            return self._waiter(self._heard_waiters, self._confirmed)
        return self._waiter(self._heard_waiters, self._released)

    def _waiter(self, waiters: deque[tuple[int, asyncio.Future[bool]]], reached: int) -> asyncio.Future[bool]:
        self._pad_partial()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if reached >= self._pushed:
            future.set_result(True)
        else:
            waiters.append((self._pushed, future))
        return future

    @staticmethod
    def _resolve(waiters: deque[tuple[int, asyncio.Future[bool]]], position: int) -> None:
        while waiters and waiters[0][0] <= position:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(True)

    def _remember(self, item_id: str, ms: float) -> None:
        before = self._heard_before
        before[item_id] = ms
        if len(before) > _HEARD_ITEMS:
            del before[next(iter(before))]

    # -- state -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_ms(self) -> float:
        return len(self._queue) * self.frame_ms

    @property
    def idle(self) -> bool:
        """Nothing to release (a partial frame may wait for more audio or its item's end)."""
        return not self._queue

    @property
    def drained(self) -> bool:
        """Nothing left to play, not even a partial frame, and every confirmation asked for has come."""
        return not self._queue and not self._partial and not self._outstanding

    @property
    def dropped_ms(self) -> float:
        return self.frames_dropped * self.frame_ms

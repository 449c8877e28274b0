"""One 20 ms heartbeat for every paced line on an event loop (carrier media streams, SIP/RTP calls).

A phone line carries a frame every 20 ms. Rather than a timer per call, every line on a loop shares one
`FrameTicker`, which beats on an absolute grid (no drift) and, on each beat:

1. calls every *beat callback* (`add_beat`) in turn with the loop time: a line that never has to wait to
   send (a SIP call's RTP: a datagram is sent or dropped, never queued) does its whole beat there, as a
   plain call;
2. then wakes every task waiting in `tick()`: lines whose sends may have to wait for room (a carrier's
   WebSocket), the beat's garbage collection (garbage_collection.py), tests.

A callback that raises is logged and removed (its line stops beating; the others carry on). With no
callback and no waiter for a second, the ticker stops: an idle gateway costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voxgate.observability import metrics

__all__ = ["Beat", "FrameTicker", "shared_ticker"]

log = logging.getLogger("voxgate.transports")

Beat = Callable[[float], None]  # called with the loop time at each beat


class FrameTicker:
    def __init__(self, period_s: float = 0.02, idle_s: float = 1.0) -> None:  # a phone line's frame
        self.period_s = period_s
        self.idle_s = idle_s  # with nothing to beat for this long, the ticker stops
        self._waiters: list[asyncio.Future[None]] = []
        # Insertion-ordered: a line that joins later beats after the ones before it, every beat.
        self._beats: dict[Beat, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._next = 0.0  # loop time the next beat is due

    def next_beat(self) -> float:
        """When the next beat is due (starting the ticker if it was idle)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time() + self.period_s
            self._task = loop.create_task(self._run(), name="frame-ticker")
        return self._next

    async def tick(self) -> None:
        """Wait for the next beat (after its callbacks have run)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.next_beat()
        await waiter

    def add_beat(self, beat: Beat) -> None:
        """Call `beat(now)` on every beat from the next one on, until `remove_beat`. It must not block."""
        self._beats[beat] = None
        self.next_beat()

    def remove_beat(self, beat: Beat) -> None:
        self._beats.pop(beat, None)

    @property
    def beats(self) -> int:
        return len(self._beats)

    @property
    def running(self) -> bool:
        return self._task is not None

    async def stopped(self) -> None:
        """Until the ticker has stopped itself (a second with nothing to beat for)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        idle = 0
        while True:
            target = self._next
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            lateness = now - target
            metrics.CARRIER_TICK_LATENESS.observe(max(lateness, 0.0))
            # On the absolute grid; after a stall longer than a beat, beat on from now (no catch-up race).
            self._next = target + self.period_s if lateness <= self.period_s else now + self.period_s
            idle = 0 if self._beat_all(now) else idle + 1
            if idle * self.period_s >= self.idle_s and not self._beats:
                self._task = None
                return

    def _beat_all(self, now: float) -> bool:
        """One beat: every line's callback, then every waiter; whether there was any. A method of its own so
        that nothing of this beat outlives it in `_run`'s frame: a loop variable left there held the last call
        to end (its whole session) for as long as the ticker ran on without lines."""
        beats = list(self._beats)  # a callback may add or remove lines (its own, or a call it ends)
        for beat in beats:
            try:
                beat(now)
            except Exception:
                log.exception("a line's beat failed; it stops beating")
                self._beats.pop(beat, None)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return bool(waiters or beats)


_tickers: dict[asyncio.AbstractEventLoop, FrameTicker] = {}


def shared_ticker() -> FrameTicker:
    """The running loop's ticker (a process normally has one loop; tests and benches may run several)."""
    loop = asyncio.get_running_loop()
    ticker = _tickers.get(loop)
    if ticker is None:
        for stale in [x for x in _tickers if x.is_closed()]:
            del _tickers[stale]
        ticker = _tickers[loop] = FrameTicker()
    return ticker

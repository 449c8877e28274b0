"""Python's cycle collector, run on the audio beat instead of wherever an allocation count trips it.

CPython collects when the count of new container objects passes a threshold: at whatever instruction
that happens to be, often in the middle of the tick that writes a hundred calls' next frames. On a
busy gateway a young collection takes a few ms and a full one tens of ms, long enough to push a beat's
frames past the carriers' lead. Measured with bench/bridge_capacity.py at 250 calls on one core:
with automatic collection about 1 % of frames reached the caller a whole tick late; with it off they
all came on time, which is what this module keeps while still collecting.

`BeatCollector` switches the automatic collector off and runs CPython's own generational policy (the
same thresholds, young to old, and its brake on full collections) itself, just after each beat of the
carriers' shared FrameTicker, once the writers that beat woke have written: the pause then falls in the
20 ms of slack before the next beat, and the carriers' 40 ms lead absorbs most of a full collection.
Cycles are found at most one beat (20 ms) later than before. The automatic collector comes back when the
last BeatCollector stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time

from voxgate.observability import metrics
from voxgate.transports.frame_ticker import shared_ticker

__all__ = ["BeatCollector"]

_lock = threading.Lock()
_running = 0  # BeatCollectors started in this process (tests run several gateways, one loop each)


class BeatCollector:
    def __init__(self, thresholds: tuple[int, int, int] | None = None) -> None:
        self.thresholds = thresholds or gc.get_threshold()
        self.collections = [0, 0, 0]  # by generation
        self._long_lived = 0  # objects the last full collection left in the oldest generation
        self._old_refused_at: int | None = None  # the oldest generation's count when a full one was refused
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        global _running
        if self._task is not None:
            return
        with _lock:
            _running += 1
            gc.disable()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-on-beat")

    async def stop(self) -> None:
        global _running
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with _lock:
            _running -= 1
            if _running == 0:
                gc.enable()

    async def _run(self) -> None:
        ticker = shared_ticker()
        while True:
            await ticker.tick()
            await asyncio.sleep(0)  # behind the writers this beat woke: their frames go out first
            self.collect_due()

    def collect_due(self) -> int | None:
        """Collect the generation CPython would collect now, if any; returns it."""
        young, middle, old = gc.get_count()
        t0, t1, t2 = self.thresholds
        if young <= t0:
            return None
        generation = 0
        if middle > t1:
            generation = 2 if old > t2 and self._old_generation_grew(old) else 1
        started = time.perf_counter()
        gc.collect(generation)
        metrics.GC_PAUSES.labels(str(generation)).observe(time.perf_counter() - started)
        self.collections[generation] += 1
        if generation == 2:
            self._long_lived = len(gc.get_objects(generation=2))
        return generation

    def _old_generation_grew(self, old: int) -> bool:
        """CPython's brake on full collections, which `gc.collect(2)` skips: only once the objects that reached
        the oldest generation since the last full collection are a quarter of those it left there. A full
        collection walks every live object: 70-140 ms with 400 calls up, two beats of every call late, where
        the young ones take a few ms. Counting the generation costs ~1 ms, so a refusal is not re-checked
        until as many middle collections have passed again as the threshold asks."""
        if self._old_refused_at is not None and old - self._old_refused_at <= self.thresholds[2]:
            return False
        if len(gc.get_objects(generation=2)) - self._long_lived >= self._long_lived / 4:
            self._old_refused_at = None
            return True
        self._old_refused_at = old
        return False

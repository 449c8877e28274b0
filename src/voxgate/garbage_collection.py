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

A full collection walks every live object, so its pause grows with the calls up: 60-95 ms at 400-450 SIP
calls, two or more beats late on every one of them. So what survives a full collection is tenured
(`gc.freeze()`), and a full collection comes as soon as the oldest generation holds `tenure_after` objects
(10,000, about what a middle collection walks; some 40 calls' worth): each walks only what came since the
last, whatever the load, in the ~10 ms a middle one takes. A tenured object is
still freed the moment its last reference goes, which is how an ended call goes: calls hold no reference
cycles (tests/integration/test_ended_calls.py). What no collection walks is a cycle that forms among
tenured objects, so now and then a full collection thaws them all (`gc.unfreeze()`) and walks everything,
a pause of ~200-250 ms with 500 SIP calls up on this VM: 30 minutes after start, then twice as long each
time one finds less garbage than `tenure_after` (up to a day), and half as long when one finds more (down
to 5 minutes). Garbage among tenured objects is collected about as often as it builds up, and the long
pause is paid that rarely.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable

from voxgate.observability import metrics
from voxgate.transports.frame_ticker import shared_ticker

__all__ = ["BeatCollector"]

TENURE_AFTER = 10_000  # objects in the oldest generation that bring a full collection, when tenuring
THAW_S = (300.0, 1800.0, 86400.0)  # the shortest, first and longest time between thaws, in seconds
_lock = threading.Lock()
_running = 0  # BeatCollectors started in this process (tests run several gateways, one loop each)


class BeatCollector:
    """`tenure`: freeze what a full collection leaves, and collect fully once `tenure_after` objects reached
    the oldest generation (see above); off, CPython's brake decides and full collections walk everything.
    `clock` (seconds) times the thaws."""

    def __init__(self, thresholds: tuple[int, int, int] | None = None, *, tenure: bool = True,
                 tenure_after: int = TENURE_AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        self.thresholds = thresholds or gc.get_threshold()
        self.tenure = tenure
        self.tenure_after = tenure_after
        self.collections = [0, 0, 0]  # by generation
        self.thaws = 0  # full collections that walked the tenured objects too
        self.thaw_s = THAW_S[1]  # until the next thaw, from the last one
        self._clock = clock
        self._thaw_at = clock() + self.thaw_s
        self._long_lived = 0  # objects the last full collection left in the oldest generation (no tenure)
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
            if self.tenure:  # the oldest generation is only what came since the last full one: ~1 ms to count
                generation = 2 if len(gc.get_objects(generation=2)) >= self.tenure_after else 1
            else:
                generation = 2 if old > t2 and self._old_generation_grew(old) else 1
        started = time.perf_counter()
        if generation == 2 and self.tenure:
            self._collect_old()
        else:
            gc.collect(generation)
        metrics.GC_PAUSES.labels(str(generation)).observe(time.perf_counter() - started)
        self.collections[generation] += 1
        if generation == 2 and not self.tenure:
            self._long_lived = len(gc.get_objects(generation=2))
        return generation

    def _collect_old(self) -> None:
        """A full collection of what is not tenured (or, when a thaw is due, of everything), then tenure
        what it left."""
        now = self._clock()
        if now >= self._thaw_at:
            gc.unfreeze()
            found = gc.collect(2)
            self.thaws += 1
            shortest, _, longest = THAW_S
            # Less garbage than a full collection walks: the tenured objects keep no cycles worth the pause.
            few = found < self.tenure_after
            self.thaw_s = min(longest, self.thaw_s * 2) if few else max(shortest, self.thaw_s / 2)
            self._thaw_at = now + self.thaw_s
        else:
            gc.collect(2)
        gc.freeze()

    def _old_generation_grew(self, old: int) -> bool:
        """CPython's brake on full collections, which `gc.collect(2)` skips: only once the objects that reached
        the oldest generation since the last full collection are a quarter of those it left there. Without
        tenure a full collection walks every live object: 60-140 ms with 400 calls up, two beats of every
        call late, where the young ones take a few ms. Counting the generation then costs ~10 ms, so a
        refusal is not re-checked until as many middle collections have passed again as the threshold asks."""
        if self._old_refused_at is not None and old - self._old_refused_at <= self.thresholds[2]:
            return False
        if len(gc.get_objects(generation=2)) - self._long_lived >= self._long_lived / 4:
            self._old_refused_at = None
            return True
        self._old_refused_at = old
        return False

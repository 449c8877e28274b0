"""Which number of calls to try next when looking for the most a server holds. Pure.

A capacity benchmark runs one step at a time (N calls, pass or fail). The search climbs a ladder of
steps until it has seen `failures_to_stop` failures; if its first step already fails it steps down,
halving N, until one holds; then it narrows the gap between the largest N that held and the smallest
that failed above it, by bisection, until the gap is within `resolution` (a fraction of the held N,
at least one call; 0 narrows nothing). So it always ends on the largest N that holds, to that resolution, rather than 0
when the ladder started too high.

    search = CapacitySearch([100, 200, 300])
    while (n := search.next_n()) is not None:
        search.record(n, run_step(n))
    search.best
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CapacitySearch"]


class CapacitySearch:
    def __init__(self, steps: Sequence[int], *, resolution: float = 0.1, failures_to_stop: int = 2) -> None:
        if not steps or any(n < 1 for n in steps):
            raise ValueError("the ladder needs at least one step, each of one call or more")
        self.steps = list(steps)
        self.resolution = resolution
        self.failures_to_stop = failures_to_stop
        self.results: dict[int, bool] = {}

    @property
    def best(self) -> int:
        """The largest N that held (0 until one has)."""
        return max((n for n, ok in self.results.items() if ok), default=0)

    @property
    def lowest_failure_above_best(self) -> int | None:
        best = self.best
        return min((n for n, ok in self.results.items() if not ok and n > best), default=None)

    def record(self, n: int, passed: bool) -> None:
        self.results[n] = passed

    def next_n(self) -> int | None:
        """The next N to run, or None when the search is over."""
        failures = sum(not ok for ok in self.results.values())
        climbing = [n for n in self.steps if n not in self.results]
        # The climb goes on while the ladder is all that has run and its first step held.
        on_ladder = set(self.results) <= set(self.steps) and self.results.get(self.steps[0], True)
        if climbing and failures < self.failures_to_stop and on_ladder:
            return climbing[0]
        best, ceiling = self.best, self.lowest_failure_above_best
        if best == 0:  # every N tried so far failed: step down
            lowest = min(self.results)
            return lowest // 2 if lowest > 1 else None
        if ceiling is None or self.resolution <= 0:  # the whole ladder held, or no narrowing asked for
            return None
        if ceiling - best <= max(1, int(best * self.resolution)):
            return None
        return (best + ceiling) // 2

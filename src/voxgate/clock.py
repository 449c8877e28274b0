"""The gateway's wall clock: the date and time of day that callers hear and tools act on.

Relative dates ("tomorrow", "on Friday"), opening hours and delivery dates depend on what day it is, so
every part of a call that reads the time of day takes it from the gateway's `Clock` instead of the
machine's. Operators pin it to reproduce a customer's call on the day it happened (`clock_start`), and
tests pin it so that a spoken date is the same on every day of the week.

Python tools reach the clock of the call they serve through `current_clock()`: the tool registry makes
the gateway's clock current while a tool runs, so two gateways in one process (tests) never mix clocks.
Durations are not wall time and keep using `time.monotonic()`; security checks that compare with someone
else's clock (webhook timestamps, key expiry) use the real time, which a pinned clock must not move.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta

__all__ = ["Clock", "current_clock", "using_clock"]


class Clock:
    """Local wall time, either the machine's or one started at a pinned instant that then runs on.

    `start` (naive: local time) pins what `now()` says at construction; time then advances at the rate of
    `monotonic`, so a pinned call still sees seconds pass. `monotonic` is injectable for tests that step
    time by hand.
    """

    def __init__(self, start: datetime | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._origin = monotonic()
        self._start = start.astimezone() if start is not None else None  # aware, in the local zone

    @property
    def pinned(self) -> bool:
        return self._start is not None

    def now(self) -> datetime:
        """The current local time, timezone-aware."""
        if self._start is None:
            return datetime.now().astimezone()
        return self._start + timedelta(seconds=self._monotonic() - self._origin)

    def today(self) -> date:
        return self.now().date()

    def time(self) -> float:
        """Seconds since the epoch, as `time.time()`."""
        return self.now().timestamp()


_SYSTEM = Clock()
_current: ContextVar[Clock] = ContextVar("voxgate_clock", default=_SYSTEM)


def current_clock() -> Clock:
    """The clock of the gateway whose call is being served; the machine's outside any call."""
    return _current.get()


@contextmanager
def using_clock(clock: Clock) -> Iterator[Clock]:
    """Make `clock` current for this context and the threads and tasks started from it."""
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)

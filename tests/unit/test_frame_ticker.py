"""The shared 20 ms ticker: beat callbacks, waiters after them, a failing line removed, idle stop."""

from __future__ import annotations

import asyncio
import logging
import weakref

import pytest

from voxgate.transports.frame_ticker import FrameTicker


async def test_each_beat_calls_the_lines_in_order_then_wakes_the_waiters() -> None:
    ticker = FrameTicker(period_s=0.001)
    seen: list[str] = []
    ticker.add_beat(lambda now: seen.append("a"))
    ticker.add_beat(lambda now: seen.append("b"))
    await ticker.tick()
    seen.append("waiter")
    assert seen[-3:] == ["a", "b", "waiter"]


async def test_a_line_that_raises_is_removed_and_the_others_beat_on(caplog: pytest.LogCaptureFixture) -> None:
    ticker = FrameTicker(period_s=0.001)
    beats: list[float] = []

    def broken(now: float) -> None:
        raise RuntimeError("a bug in one call")

    ticker.add_beat(broken)
    ticker.add_beat(beats.append)
    with caplog.at_level(logging.ERROR, logger="voxgate.transports"):
        await ticker.tick()
        await ticker.tick()
    assert ticker.beats == 1
    assert len(beats) >= 2
    assert beats == sorted(beats)
    assert "a line's beat failed" in caplog.text


async def test_a_line_removed_during_a_beat_is_not_called_again() -> None:
    ticker = FrameTicker(period_s=0.001)
    calls: list[int] = []

    def once(now: float) -> None:
        calls.append(1)
        ticker.remove_beat(once)

    ticker.add_beat(once)
    await ticker.tick()
    await ticker.tick()
    assert calls == [1]
    assert ticker.beats == 0


async def test_the_ticker_stops_when_nothing_listens_and_starts_again() -> None:
    ticker = FrameTicker(period_s=0.001, idle_s=0.02)  # a gateway's waits a second: the rule, not the length
    await ticker.tick()
    assert ticker.running
    await asyncio.wait_for(ticker.stopped(), timeout=30)  # twenty idle beats, then it ends itself
    assert not ticker.running
    beats: list[float] = []
    ticker.add_beat(beats.append)
    await ticker.tick()
    assert beats


async def test_a_line_removed_from_a_ticker_that_beats_on_is_not_kept_alive() -> None:
    """The last call to end must be freed at once, though the ticker beats on for its waiters (a gateway's
    cycle collector waits on every beat): nothing of a past beat may stay behind in the ticker."""

    class Line:
        def beat(self, now: float) -> None:
            pass

    ticker = FrameTicker(period_s=0.001)
    line = Line()
    ticker.add_beat(line.beat)
    await ticker.tick()
    ticker.remove_beat(line.beat)
    gone = weakref.ref(line)
    del line
    await ticker.tick()
    await ticker.tick()
    assert gone() is None

"""CallerInput: the caller's input reaches the session in arrival order, even when one piece must wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from voxgate.transports.caller_input import CallerInput


class Session:
    """Takes pieces; a piece named "wait" must wait (a barge-in) until `release` is set."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.release = asyncio.Event()

    def take(self, piece: str) -> Awaitable[None] | None:
        self.taken.append(piece)
        return self._released() if piece.startswith("wait") else None

    async def _released(self) -> None:
        await self.release.wait()


async def settle(line: CallerInput[str]) -> None:
    """Until the piece that had to wait, and the backlog behind it, have been taken."""
    if (step := line.finishing) is not None:
        await step
    assert line.finishing is None


async def test_pieces_after_one_that_waits_are_taken_after_it_in_order() -> None:
    session = Session()
    line = CallerInput(session.take, max_backlog=10)
    line.put("a")
    line.put("wait")
    line.put("b")
    line.put("c")
    assert session.taken == ["a", "wait"]  # b and c wait behind the barge-in
    session.release.set()
    await settle(line)
    assert session.taken == ["a", "wait", "b", "c"]
    line.put("d")
    assert session.taken[-1] == "d"  # no task in between: taken by the plain call


async def test_a_line_that_cannot_push_back_drops_and_counts_beyond_the_bound() -> None:
    session = Session()
    line = CallerInput(session.take, max_backlog=2)
    for piece in ("wait", "a", "b", "c", "d"):
        line.put(piece)
    assert line.dropped == 2
    session.release.set()
    await settle(line)
    assert session.taken == ["wait", "a", "b"]


async def test_a_line_that_can_push_back_is_paused_at_the_bound_and_resumed_after() -> None:
    session = Session()
    calls: list[str] = []
    line = CallerInput(session.take, max_backlog=2, pause=lambda: calls.append("pause"),
                       resume=lambda: calls.append("resume"))
    for piece in ("wait", "a", "b", "c"):
        line.put(piece)
    assert calls == ["pause", "pause"] and line.dropped == 0  # held, not dropped: the socket stops reading
    session.release.set()
    await settle(line)
    assert session.taken == ["wait", "a", "b", "c"] and calls[-1] == "resume"


async def test_closed_it_takes_nothing_more_and_hands_back_the_waiting_task() -> None:
    session = Session()
    line = CallerInput(session.take, max_backlog=10)
    line.put("wait")
    line.put("a")
    await asyncio.sleep(0)  # the task is waiting on the barge-in
    line.close()
    step = line.finishing
    assert step is not None
    line.put("b")
    step.cancel()
    await asyncio.gather(step, return_exceptions=True)
    assert session.taken == ["wait"]


async def test_a_failure_while_waiting_costs_that_piece_not_the_line() -> None:
    session = Session()

    def take(piece: str) -> Awaitable[None] | None:
        if piece == "broken":
            async def fail() -> None:
                raise RuntimeError("a bug")
            return fail()
        return session.take(piece)

    line = CallerInput(take, max_backlog=10)
    line.put("broken")
    line.put("a")
    await settle(line)
    line.put("b")
    assert session.taken == ["a", "b"]

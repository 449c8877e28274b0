"""The caller's input on its way into the session, kept in arrival order: one queue for every phone line.

A carrier's media frames and a SIP call's RTP payloads arrive 50 times a second per call, so each is
taken by a plain call, not a task. Only a piece whose taking must wait (a caller starting to speak over
the agent: the barge-in must finish before the next frame counts) hands back an awaitable; a task then
awaits it, and the pieces that arrive meanwhile wait behind it in a backlog, so nothing overtakes.

The backlog is bounded (`max_backlog`). A line that can push back (a carrier's TCP socket) is paused at
the bound and resumed once the backlog is worked off; one that cannot (RTP over UDP) drops what is
beyond the bound, and counts it (`dropped`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["CallerInput"]

log = logging.getLogger("voxgate.transports")

T = TypeVar("T")


class CallerInput(Generic[T]):
    """`put(piece)` for each piece of caller input as it arrives; `take(piece)` hands it to the session and
    returns an awaitable when its taking must finish before the next piece is taken. `take` never raises:
    the transport answers bad input itself (a counted drop, an error event)."""

    def __init__(self, take: Callable[[T], Awaitable[None] | None], *, max_backlog: int,
                 pause: Callable[[], None] | None = None, resume: Callable[[], None] | None = None) -> None:
        self._take = take
        self.max_backlog = max_backlog
        self._pause = pause
        self._resume = resume
        self._backlog: deque[T] = deque()
        self._task: asyncio.Task[None] | None = None  # finishing a piece whose taking had to wait
        self._closed = False
        self.dropped = 0  # pieces beyond the bound on a line that cannot be paused

    def put(self, piece: T) -> None:
        if self._closed:
            return
        if self._task is not None:  # an earlier piece is still being taken: keep the order
            if len(self._backlog) >= self.max_backlog and self._pause is None:
                self.dropped += 1
                return
            self._backlog.append(piece)
            if len(self._backlog) >= self.max_backlog and self._pause is not None:
                self._pause()
            return
        rest = self._take(piece)
        if rest is not None:
            self._task = asyncio.get_running_loop().create_task(self._finish(rest))

    @property
    def finishing(self) -> asyncio.Task[None] | None:
        """The task still taking a piece that had to wait, and the backlog behind it; None when idle."""
        return self._task

    def close(self) -> None:
        """Take nothing more (a piece being finished is the caller's to cancel: `finishing`)."""
        self._closed = True
        self._backlog.clear()
        # The transport's methods: let go of them, and so of the transport, once a piece being finished
        # has resumed the line it paused.
        self._take = _take_nothing
        if self._task is None:
            self._pause = self._resume = None

    async def _finish(self, rest: Awaitable[None] | None) -> None:
        try:
            while rest is not None:
                try:
                    await rest
                except Exception:  # a bug must cost one piece of audio, not the call
                    log.exception("failed to take the caller's input")
                rest = None
                while rest is None and self._backlog and not self._closed:
                    rest = self._take(self._backlog.popleft())
        finally:
            self._task = None
            if self._resume is not None:
                self._resume()
            if self._closed:
                self._pause = self._resume = None


def _take_nothing(piece: object) -> None:
    """What a closed input takes with."""

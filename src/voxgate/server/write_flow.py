"""asyncio's write flow control for one connection: who writes waits while the peer is not reading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["WriteFlow"]


class WriteFlow:
    """Follows the transport's pause_writing / resume_writing; `wait()` until it may write again."""

    def __init__(self) -> None:
        self.writable = True
        self._waiters: list[asyncio.Future[None]] = []

    def pause(self) -> None:
        self.writable = False

    def resume(self) -> None:
        """Writable again, or the connection is gone: every waiter goes on (and finds out which)."""
        self.writable = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, gone: Callable[[], bool]) -> None:
        while not self.writable and not gone():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

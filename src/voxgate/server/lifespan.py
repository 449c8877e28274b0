"""The ASGI lifespan protocol: the app's start-up before the first connection, its shutdown after the last."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Lifespan", "LifespanFailed"]

log = logging.getLogger("voxgate.server")

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


class LifespanFailed(RuntimeError):
    """The app said its start-up or shutdown failed (the message is the app's)."""


class Lifespan:
    """Runs one app's lifespan: `await startup()`, serve, `await shutdown()`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}  # what the app's lifespan keeps for its requests (scope["state"])
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup: asyncio.Future[None] | None = None
        self._shutdown: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._shutdown_asked = False

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._startup, self._shutdown = loop.create_future(), loop.create_future()
        self._task = loop.create_task(self._run(), name="lifespan")
        await self._inbox.put({"type": "lifespan.startup"})
        await asyncio.wait({self._startup, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._startup.done():
            self._startup.result()  # raises LifespanFailed
        else:  # the app returned or raised without answering: it has no lifespan to run
            self._task.result()

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        assert self._shutdown is not None
        self._shutdown_asked = True
        await self._inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait({self._shutdown, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._shutdown.done():
            self._shutdown.result()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception as exc:
            log.exception("the app's lifespan failed")
            waiting = self._startup if self._startup is not None and not self._startup.done() else \
                self._shutdown if self._shutdown_asked else None
            if waiting is not None and not waiting.done():
                waiting.set_exception(LifespanFailed(f"the app's lifespan failed: {exc!r}"))

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        outcome = self._startup if kind.startswith("lifespan.startup") else self._shutdown
        if outcome is None or outcome.done():
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
        if kind.endswith(".failed"):
            outcome.set_exception(LifespanFailed(message.get("message") or kind))
        else:
            outcome.set_result(None)

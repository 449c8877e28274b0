"""This node's load for HAProxy's agent-check: one line per TCP connection, then close.

    report = LoadReport("127.0.0.1", 5555, admission)     # load_report_port
    await report.start(); ...; await report.stop()

HAProxy (`server gw1 10.0.0.1:8000 check agent-check agent-port 5555 agent-inter 2s`) connects, reads
the line and sets the server's weight from it: `up 40%` while 40 % of the call limit is free (the
idlest node gets the most new calls), `drain` while draining (no new calls; requests stuck to this
node's live calls still arrive). `agent_reply` is the decision, a pure function.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

__all__ = ["LoadReport", "agent_reply"]


class LoadSource(Protocol):
    """What the report reads: admission control (`admission.py`)."""

    draining: bool

    def snapshot(self) -> dict[str, Any]: ...


def agent_reply(limit: int, active: int, draining: bool) -> str:
    """The agent-check line for a node with `active` of `limit` calls."""
    if draining:
        return "drain\n"
    free = max(0, limit - active)
    return f"up {free * 100 // limit if limit > 0 else 0}%\n"


class LoadReport:
    """A TCP listener answering `agent_reply` for this node."""

    def __init__(self, host: str, port: int, load: LoadSource) -> None:
        self.host = host
        self.port = port
        self._load = load
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self.host, self.port)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls = self._load.snapshot()
        writer.write(agent_reply(int(calls["limit"]), int(calls["active"]), self._load.draining).encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

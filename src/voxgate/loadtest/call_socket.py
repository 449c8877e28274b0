"""A call's WebSocket as the caller drives it: the microphone that streams frames on a real-time clock,
and the ending, told apart by who ended the call and how.

The microphone sends one frame every `frame_s` on an absolute clock, whatever the conversation says
(speech or silence, as a real line streams), and counts how late the generator itself ran, so a report
can tell a slow gateway from an overloaded load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voxgate.loadtest.conversation import Conversation, Frame
from voxgate.loadtest.statistics import Ending

__all__ = ["LATE_S", "MicrophoneLag", "end_call", "stream_microphone"]

LATE_S = 0.02  # a frame sent this much after its time is late: the generator could not keep up
CLOSE_WAIT_S = 5.0
ABNORMAL_CLOSURE = 1006  # no close frame came: the connection just broke


@dataclass
class MicrophoneLag:
    """Every call's microphone together: frames sent, how many late, the worst lateness."""

    frames: int = 0
    late: int = 0
    worst_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"frames": self.frames, "late_frames": self.late, "worst_lateness_ms": round(self.worst_s * 1000, 1)}


async def stream_microphone(conversation: Conversation, frame_s: float,
                            send: Callable[[Frame | None, float], Awaitable[None]], ended: Callable[[], bool],
                            lag: MicrophoneLag) -> None:
    """Send the conversation's frames until it is done or `ended()` says the call is over."""
    start = time.monotonic()
    conversation.begin(start)
    n = 0
    while not ended():
        n += 1
        delay = start + n * frame_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > LATE_S:
            lag.late += 1
            lag.worst_s = max(lag.worst_s, -delay)
        now = time.monotonic()
        frame = conversation.frame(now)
        if conversation.done or ended():
            return
        lag.frames += 1
        await send(frame, now)


async def end_call(ws: ClientConnection, reader: asyncio.Task[None], *, caller_done: bool, agent_done: bool = False,
                   goodbye: str | None = None, never_started: str | None = None) -> Ending:
    """Hang up if the caller (or, through the carrier, the agent) ended the call while the socket was still
    open; otherwise the gateway ended it, and its close code says how. `never_started` is the error when
    the call ended before it began (no `session.created`, say)."""
    if agent_done or (caller_done and not reader.done()):
        with contextlib.suppress(ConnectionClosed):
            if goodbye is not None:
                await ws.send(goodbye)
        await ws.close(1000)
        await _finish(reader)
        return Ending(caller_hung_up=not agent_done, agent_hung_up=agent_done)
    await asyncio.wait({reader}, timeout=CLOSE_WAIT_S)  # the reader sees the gateway's close frame
    if not reader.done():
        await ws.close(1000)
    await _finish(reader)
    if never_started is not None and ws.close_code in (None, 1000):
        return Ending(error=never_started)
    return Ending(close_code=ws.close_code if ws.close_code is not None else ABNORMAL_CLOSURE)


async def _finish(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

"""The bounded queue between a session and its transport's writer.

Policy (documented in docs/operations.md): audio deltas are droppable; when the queue holds
`max_events`, a new audio delta is dropped and counted, and the dropped audio is not counted as
sent (so truncation stays truthful). Control events are never dropped; if a client stops reading
altogether and control events pile up past twice the bound, the queue reports overflow and the
transport closes the connection. Memory per session therefore stays bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque

from voxgate.protocol.server_events import ResponseOutputAudioDelta, ServerEvent


class Outbound:
    def __init__(self, max_events: int = 512) -> None:
        self.max_events = max_events
        self._queue: deque[ServerEvent] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped_audio_events = 0
        self.overflowed = False
        self.overflow = asyncio.Event()  # set once: the transport must drop the connection

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: ServerEvent) -> None:
        """Queue a control event (never dropped)."""
        if self._closed:
            return
        if len(self._queue) >= 2 * self.max_events:
            self.overflowed = True
            self.overflow.set()
            self._queue.clear()  # nobody will read these: free them now
            self.close()
            return
        self._queue.append(event)
        self._ready.set()

    def put_audio(self, event: ResponseOutputAudioDelta) -> bool:
        """Queue an audio delta; False (and counted) when the queue is full."""
        if self._closed:
            return False
        if len(self._queue) >= self.max_events:
            self.dropped_audio_events += 1
            return False
        self._queue.append(event)
        self._ready.set()
        return True

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> ServerEvent | None:
        """The next event, or None once closed and drained."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

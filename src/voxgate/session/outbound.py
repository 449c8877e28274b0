"""The bounded queue between a session and its transport's writer.

Policy (documented in docs/operations.md): audio deltas are droppable; when the queue holds
`max_events`, a new audio delta is dropped and counted, and the dropped audio is not counted as
sent (so truncation stays truthful). Control events are never dropped; if a client stops reading
altogether and control events pile up past twice the bound, the queue reports overflow and the
transport closes the connection. Memory per session therefore stays bounded.

On a barge-in the session cuts the audio still queued here (`cut_audio`): nobody has heard it, and a
paced transport would otherwise play it after clearing its line. That decision is the session's, so no
transport filters late audio itself.
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
        self._refused: str | None = None  # a response cut by barge-in: its late audio deltas are refused
        self._empty_waiters: list[asyncio.Future[None]] = []

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
        """Queue an audio delta; False when the queue is full (counted) or its response was cut."""
        if self._closed or event.response_id == self._refused:
            return False
        if len(self._queue) >= self.max_events:
            self.dropped_audio_events += 1
            return False
        self._queue.append(event)
        self._ready.set()
        return True

    def cut_audio(self, response_id: str | None) -> int:
        """Barge-in: drop the audio deltas still queued and refuse `response_id`'s later ones (it is being
        cancelled; a delta it makes before the cancel lands must not play). Returns the deltas dropped."""
        self._refused = response_id
        kept: deque[ServerEvent] = deque(e for e in self._queue if not isinstance(e, ResponseOutputAudioDelta))
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        return dropped

    def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._wake_empty()

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> ServerEvent | None:
        """The next event, or None once closed and drained."""
        while not self._queue:
            if self._empty_waiters:
                self._wake_empty()
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    async def emptied(self) -> None:
        """Until the reader has taken (and, being back for more, handled) every event queued so far."""
        if not self._queue or self._closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._empty_waiters.append(waiter)
        await waiter

    def _wake_empty(self) -> None:
        waiters, self._empty_waiters = self._empty_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

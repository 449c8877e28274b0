"""A call's audio recording: the caller's and the agent's audio as the caller heard it, to disk as it comes.

The session feeds the caller's side (decoded input) and the transport's line the agent's (each frame as
it is played, so audio a barge-in cut never reaches the file; on a WebSocket, whose client plays the
audio itself, what was sent). Feeding is cheap and stays on the event loop; the stereo blocks it yields
go through a bounded queue to one writer task that encodes and writes them in a worker thread, so
neither a slow disk nor the Opus encoder costs the call a frame. A full queue drops a block (counted in
`voxgate_recording_blocks_dropped_total`), never the call. While `sensitive()` says so (a PCI entry on
the keypad, a span an operator marked), both sides are written as silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxgate.audio.recording_file import RecordingFile, RecordingFormat
from voxgate.audio.stereo import StereoMix
from voxgate.observability import metrics

__all__ = ["CallRecording", "RecordingSummary"]

log = logging.getLogger("voxgate.recording")

BLOCK_MS = 500  # written to disk in blocks this long: a thread hop per half second per call, not per frame
MAX_QUEUED_BLOCKS = 120  # a minute of audio waiting for the disk; more is dropped and counted


@dataclass
class RecordingSummary:
    """What the call record and the recordings table keep about a finished recording."""

    path: Path
    format: RecordingFormat
    duration_s: float
    bytes: int
    silenced: list[list[float]] = field(default_factory=list)  # [start_s, end_s] written as silence
    dropped_blocks: int = 0
    consent: dict[str, Any] | None = None  # the caller's answer, when the agent asks for one

    def as_metadata(self) -> dict[str, Any]:
        return {"format": self.format, "duration_s": self.duration_s, "bytes": self.bytes,
                "silenced": self.silenced, "dropped_blocks": self.dropped_blocks}


class CallRecording:
    def __init__(self, path: Path, fmt: RecordingFormat, *, sensitive: Callable[[], bool] = lambda: False) -> None:
        self.path = path
        self.format: RecordingFormat = fmt
        self.sensitive = sensitive  # read at every feed: a PCI entry, a span marked sensitive
        self.mix = StereoMix()
        self._block = self.mix.rate * BLOCK_MS // 1000
        self._ready: list[npt.NDArray[np.int16]] = []
        self._ready_samples = 0
        self._was_sensitive = False
        self._queue: asyncio.Queue[npt.NDArray[np.int16] | None] = asyncio.Queue(MAX_QUEUED_BLOCKS)
        self._writer: asyncio.Task[int] | None = None
        self.dropped_blocks = 0
        self.closed = False
        # Told of the finished file (the gateway keeps it in the recordings table, with its expiry).
        self.saved: Callable[[RecordingSummary], Awaitable[object]] | None = None
        self._summary: RecordingSummary | None = None

    # -- the call's audio (on the loop, cheap) ----------------------------------------------------

    def caller(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        if not self.closed:
            self.mix.caller(pcm, rate)
            self._collect()

    def agent(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        if not self.closed:
            self.mix.agent(pcm, rate)
            self._collect()

    def _collect(self) -> None:
        sensitive = self.sensitive()
        if self._was_sensitive and not sensitive:
            # The span ends: whatever one side still holds from inside it is written silent too.
            frames = self.mix.flush(silenced=True)
        else:
            frames = self.mix.take(silenced=sensitive)
        self._was_sensitive = sensitive
        if frames.size:
            self._ready.append(frames)
            self._ready_samples += frames.shape[0]
            if self._ready_samples >= self._block:
                self._hand_over()

    def _hand_over(self) -> None:
        if not self._ready:
            return
        block = np.concatenate(self._ready)
        self._ready, self._ready_samples = [], 0
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        try:
            self._queue.put_nowait(block)
        except asyncio.QueueFull:
            self.dropped_blocks += 1
            metrics.RECORDING_BLOCKS_DROPPED.inc()

    async def _write(self) -> int:
        file = await asyncio.to_thread(RecordingFile, self.path, self.format, self.mix.rate)
        try:
            while (block := await self._queue.get()) is not None:
                await asyncio.to_thread(file.write, block)
        finally:
            size = await asyncio.to_thread(file.close)
        return size

    # -- the end -----------------------------------------------------------------------------------

    async def close(self, consent: dict[str, Any] | None = None) -> RecordingSummary:
        """Write what is left and finish the file (once; later calls answer the same summary)."""
        if self._summary is not None:
            return self._summary
        if not self.closed:
            self.closed = True
            tail = self.mix.flush(silenced=self.sensitive())
            if tail.size:
                self._ready.append(tail)
            self._hand_over()
            if self._writer is None:  # a call too short for a block still gets its (empty) file
                self._writer = asyncio.get_running_loop().create_task(self._write())
            await self._queue.put(None)
        size = 0
        try:
            size = await asyncio.shield(self._writer) if self._writer is not None else 0
        except Exception:
            log.exception("recording %s could not be finished", self.path.name)
        self._summary = RecordingSummary(self.path, self.format, round(self.mix.written / self.mix.rate, 3), size,
                                         list(self.mix.silenced), self.dropped_blocks, consent)
        return self._summary

    async def save(self, consent: dict[str, Any] | None) -> RecordingSummary:
        """The call ended with the recording kept: finish it and hand it to `saved`."""
        summary = await self.close(consent)
        if self.saved is not None:
            try:
                await self.saved(summary)
            except Exception:  # the file stays; the call record's metadata still says it was made
                log.exception("recording %s was not entered in the store", self.path.name)
        return summary

    async def discard(self) -> None:
        """The caller declined: finish the file and delete it."""
        self.saved = None
        await self.close()
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path.unlink)

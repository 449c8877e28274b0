"""An operator taking over a live browser call from the escalation queue: a second peer connection.

    POST /v1/escalations/{call_id}/take_over    operator key; body: the operator page's SDP offer (raw
                                                `application/sdp`, as for /v1/realtime/calls); 201 and the
                                                answer SDP

A browser call handed to a person has no carrier leg to move to: it waits on the queue with its summary
card. The operator's page (the dashboard) takes it over with its own microphone: the gateway answers the
operator's offer with a peer connection of its own and bridges the two. The caller's audio goes to the
operator's track instead of the session, the operator's audio plays on the caller's track instead of the
agent (a recorded call records both, the operator where the agent was), and the session is silenced for
good (`Session.take_over`); the caller's data channel stays. When
the operator's connection ends, so does the call: the agent already said its goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections import deque

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from voxgate.audio.opus import mono_pcm
from voxgate.audio.resample import StreamResampler

__all__ = ["OperatorLeg"]

log = logging.getLogger("voxgate.webrtc")

RATE = 48000  # what the operator's track carries: Opus's rate, as aiortc takes it
MAX_QUEUED_FRAMES = 10  # 200 ms either way: a leg that falls further behind drops its oldest audio
_TIME_BASE = fractions.Fraction(1, RATE)


class CallerVoiceTrack(MediaStreamTrack):
    """The caller's audio as the operator hears it: the frames the caller's track delivers, passed on as
    they arrive (the caller's own jitter buffer paces them)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: asyncio.Queue[npt.NDArray[np.int16]] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._pts = 0

    def put(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._frames.full():
            self._frames.get_nowait()  # the operator's side stalled: keep the newest audio
        self._frames.put_nowait(pcm)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._frames.get()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += pcm.size
        return frame


class OperatorLeg:
    """The operator's peer connection on a taken-over call: `hear_caller` feeds it the caller's audio,
    `next_frame` gives the caller's track the operator's (20 ms of PCM at `line_rate`, the rate the caller's
    track codes, or None: silence)."""

    def __init__(self, operator: str, pc: RTCPeerConnection, line_rate: int) -> None:
        self.operator = operator  # the key that took the call over
        self.pc = pc
        self.line_rate = line_rate
        self.to_operator = CallerVoiceTrack()
        self._from_operator: deque[bytes] = deque(maxlen=MAX_QUEUED_FRAMES)
        self._pending = bytearray()
        self._resampler: StreamResampler | None = None  # the operator's audio to the caller's track's rate
        self._caller_resampler: StreamResampler | None = None
        self.ended = asyncio.Event()  # the operator's connection failed or closed
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        self.pc.addTrack(self.to_operator)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def hear_caller(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        """A frame of the caller's audio (mono), for the operator."""
        if rate != RATE:
            if self._caller_resampler is None or self._caller_resampler.in_rate != rate:
                self._caller_resampler = StreamResampler(rate, RATE)
            pcm = self._caller_resampler.process(pcm)
        self.to_operator.put(pcm.astype(np.int16, copy=False))

    def next_frame(self) -> bytes | None:
        """The operator's next 20 ms for the caller's track, or None when none has arrived."""
        return self._from_operator.popleft() if self._from_operator else None

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            task = asyncio.get_running_loop().create_task(self._read(track))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                pcm = mono_pcm(frame)
                if frame.sample_rate != self.line_rate:
                    if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                        self._resampler = StreamResampler(frame.sample_rate, self.line_rate)
                    pcm = self._resampler.process(pcm)
                self._pending += pcm.astype(np.int16, copy=False).tobytes()
                size = self.line_rate // 50 * 2  # 20 ms of 16-bit samples
                while len(self._pending) >= size:
                    self._from_operator.append(bytes(self._pending[:size]))
                    del self._pending[:size]

    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.ended.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.to_operator.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        log.info("operator leg of %s closed", self.operator)

"""A WebRTC caller for tests and benches: aiortc on the far end, doing what a browser page does.

It opens a peer connection with a microphone track (speaking a PCM array, then silence), creates the
`oai-events` data channel, posts the SDP offer with a key, and records the events and the agent audio
that come back. The microphone sends Opus as a browser does (voip mode, 48 kHz mono), coded once per
utterance and kept, so a bench's many callers saying the same sentence do not spend its caller core coding.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import hashlib
import json
import time
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from voxgate.audio.opus import SETTLE_FRAMES, OpusCodec

RATE = 48000
FRAME = 960  # 20 ms
_TIME_BASE = fractions.Fraction(1, RATE)
_CODED: dict[bytes, list[bytes]] = {}  # an utterance's digest -> its Opus packets, 20 ms each
_MAX_CODED = 64


def coded(pcm: np.ndarray) -> list[bytes]:
    """`pcm` (48 kHz mono int16) as Opus packets, coded once and kept."""
    key = hashlib.blake2b(pcm.tobytes(), digest_size=16).digest()
    packets = _CODED.get(key)
    if packets is None:
        opus = OpusCodec()
        whole = np.zeros(-(-pcm.size // FRAME) * FRAME, np.int16)
        whole[:pcm.size] = pcm
        packets = [opus.encode(whole[i:i + FRAME]) for i in range(0, whole.size, FRAME)]
        packets += [opus.encode_silence() for _ in range(SETTLE_FRAMES)]  # the voice's tail, then silence
        if len(_CODED) >= _MAX_CODED:
            _CODED.clear()
        _CODED[key] = packets
    return packets


def _settled_silence() -> bytes:
    opus = OpusCodec()
    return [opus.encode_silence() for _ in range(SETTLE_FRAMES)][-1]


SILENCE = _settled_silence()


class SpeechTrack(MediaStreamTrack):
    """A microphone that says `pcm` (48 kHz mono int16) once, paced in real time, then stays silent."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray | None = None) -> None:
        super().__init__()
        self.pcm = pcm if pcm is not None else np.zeros(0, np.int16)
        self._packets = coded(self.pcm) if self.pcm.size else []
        self._sent = 0  # frames sent so far
        self._offset = 0  # the frame at which the current `pcm` started
        self._start: float | None = None

    def say(self, pcm: np.ndarray) -> None:
        """Speak `pcm` next (replaces whatever was left to say)."""
        self.pcm = pcm
        self._packets = coded(pcm)
        self._offset = self._sent

    @property
    def said(self) -> bool:
        """Whether every packet of what `say` was last given (and its settling silence) has gone out."""
        return self._sent - self._offset >= len(self._packets)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._sent * FRAME / RATE
        if due > now:
            await asyncio.sleep(due - now)
        index = self._sent - self._offset
        packet = av.Packet(self._packets[index] if index < len(self._packets) else SILENCE)
        packet.pts = self._sent * FRAME
        packet.time_base = _TIME_BASE
        self._sent += 1
        return packet


class WebRtcCaller:
    """One call from the client side. `events` holds every data-channel event as received."""

    def __init__(self, pcm: np.ndarray | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = SpeechTrack(pcm)
        self.events: list[dict[str, Any]] = []
        self.raw_messages: list[str] = []
        self.audio_frames = 0
        self.audio_energy: list[float] = []  # RMS per received 20 ms frame (48 kHz, first channel)
        self.audio_pcm: list[np.ndarray] = []  # the received frames themselves (48 kHz int16, first channel)
        self.first_audio_at: float | None = None
        self.location: str | None = None
        self.channel_open = asyncio.Event()
        self._new_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("open", self.channel_open.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode()
        self.raw_messages.append(text)
        self.events.append(json.loads(text))
        self._new_event.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                samples = frame.to_ndarray().reshape(-1)[:: len(frame.layout.channels)]
                self.audio_pcm.append(samples.astype(np.int16))
                pcm = samples.astype(np.float64)
                rms = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
                self.audio_frames += 1
                self.audio_energy.append(rms)
                if rms > 300 and self.first_audio_at is None:
                    self.first_audio_at = time.monotonic()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def connect(self, http: httpx.AsyncClient, url: str, key: str,
                      session: dict[str, Any] | None = None) -> httpx.Response:
        """POST the offer (raw SDP, or multipart with a `session` part) and apply the answer on success."""
        sdp = await self.offer()
        headers = {"Authorization": f"Bearer {key}"}
        if session is None:
            response = await http.post(url, content=sdp, headers={**headers, "Content-Type": "application/sdp"})
        else:
            response = await http.post(url, headers=headers, files={
                "sdp": (None, sdp, "application/sdp"), "session": (None, json.dumps(session), "application/json")})
        if response.status_code == 201:
            self.location = response.headers.get("location")
            await self.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
        return response

    @property
    def call_id(self) -> str:
        assert self.location is not None
        return self.location.rsplit("/", 1)[-1]

    def send(self, event: dict[str, Any] | str) -> None:
        self.channel.send(event if isinstance(event, str) else json.dumps(event))

    async def wait_for(self, kind: str, within: float = 20.0, after: int = 0) -> dict[str, Any]:
        """The first event of type `kind` at index >= `after`, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            for event in self.events[after:]:
                if event.get("type") == kind:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events]
                raise TimeoutError(f"no {kind} within {within} s; saw {seen}")
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), remaining)

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    async def close(self) -> None:
        self.mic.stop()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def typed_turn(base_url: str, key: str, text: str) -> tuple[str, WebRtcCaller]:
    """A WebRTC call that types `text` on the data channel and asks for a text reply: the session id, and
    the caller (closed) with every event it got, up to that reply's `response.done`."""
    caller = WebRtcCaller()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
            assert (await caller.connect(http, "/v1/realtime/calls", key)).status_code == 201
        session_id = (await caller.wait_for("session.created", 10))["session"]["id"]
        caller.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
        caller.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        caller.send({"type": "response.create"})
        await caller.wait_for("response.done", 30)
    finally:
        await caller.close()
    return str(session_id), caller

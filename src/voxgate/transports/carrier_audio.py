"""A phone call's audio between the carrier's codec and the session, both ways.

Inbound, G.711 needs no work at all: the session takes `audio/pcmu` and `audio/pcma` itself, so carrier
payloads pass straight through. Outbound, the session hands over PCM (at 8 kHz for a G.711 call, whose
session speaks G.711) and this encodes it to the carrier's codec by table, once. L16 (Telnyx's linear
PCM, big-endian as RTP carries it, at 8-48 kHz) becomes the session's 24 kHz PCM16 and back through
stateful streaming resamplers, one per direction per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler
from voxgate.transports.media_stream import MediaEncoding

__all__ = ["CarrierAudio"]

SESSION_PCM_RATE = 24000
FRAME_MS = 20
_SILENCE = {"pcmu": b"\xff", "pcma": b"\xd5", "l16": b"\x00\x00"}
_GA_FORMATS: dict[MediaEncoding, dict[str, Any]] = {
    "pcmu": {"type": "audio/pcmu"},
    "pcma": {"type": "audio/pcma"},
    "l16": {"type": "audio/pcm", "rate": SESSION_PCM_RATE},
}


class CarrierAudio:
    def __init__(self, inbound: MediaEncoding, inbound_rate: int, outbound: MediaEncoding, outbound_rate: int) -> None:
        self.inbound, self.inbound_rate = inbound, inbound_rate
        self.outbound, self.outbound_rate = outbound, outbound_rate
        width = 2 if outbound == "l16" else 1
        self.frame_bytes = outbound_rate * width * FRAME_MS // 1000
        self.silence = _SILENCE[outbound]
        self._up = StreamResampler(inbound_rate, SESSION_PCM_RATE) if inbound == "l16" else None
        self._down: StreamResampler | None = None  # agent PCM -> the carrier's rate, made for the first delta

    def session_config(self) -> dict[str, Any]:
        """The GA `session.update` patch that makes the session take and produce this call's audio."""
        return {"audio": {"input": {"format": _GA_FORMATS[self.inbound]},
                          "output": {"format": _GA_FORMATS[self.outbound]}}}

    def to_session(self, payload: bytes) -> bytes:
        """Caller audio from the carrier, in the session's input format."""
        if self._up is None:
            return payload
        pcm = np.frombuffer(payload, dtype=">i2").astype(np.int16)
        return self._up.process(pcm).astype("<i2").tobytes()

    def encode(self, pcm: npt.NDArray[np.int16], rate: int) -> bytes:
        """Agent audio (PCM at `rate`) in the carrier's codec."""
        if rate != self.outbound_rate:
            if self._down is None or self._down.in_rate != rate:
                self._down = StreamResampler(rate, self.outbound_rate)
            pcm = self._down.process(pcm)
        return self._code(pcm)

    def flush(self) -> bytes:
        """The end of an item: what the resampler still holds, coded (nothing when it needs no resampling)."""
        if self._down is None:
            return b""
        tail = self._down.flush()
        return self._code(tail) if tail.size else b""

    def reset(self) -> None:
        if self._down is not None:
            self._down.reset()

    def _code(self, pcm: npt.NDArray[np.int16]) -> bytes:
        if self.outbound == "pcmu":
            return g711.ulaw_encode(pcm)
        if self.outbound == "pcma":
            return g711.alaw_encode(pcm)
        return pcm.astype(">i2").tobytes()

    def decode(self, payload: bytes) -> tuple[npt.NDArray[np.int16], int]:
        """A frame we sent, back as PCM at the carrier's rate (what the caller heard, for the recording)."""
        if self.outbound == "pcmu":
            return g711.ulaw_decode(payload), self.outbound_rate
        if self.outbound == "pcma":
            return g711.alaw_decode(payload), self.outbound_rate
        return np.frombuffer(payload, dtype=">i2").astype(np.int16), self.outbound_rate

    def inbound_silence(self, ms: float) -> bytes:
        """Silence in the carrier's inbound codec, to stand in for chunks that never came."""
        return _SILENCE[self.inbound] * int(self.inbound_rate * ms / 1000)

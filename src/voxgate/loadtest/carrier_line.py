"""The carrier's side of a phone call's media stream, sans-IO: what Twilio or Telnyx send a gateway and how
their line plays what comes back.

`TwilioMessages` / `TelnyxMessages` spell one call's messages (connected, start, media, dtmf, mark, stop)
as the carriers document them, numbering sequences and chunks as they do; `LinePlayback` is the
caller's phone: it plays agent audio on a real-time clock, echoes each mark once the audio before it has
played and, on `clear`, empties its buffer and echoes the discarded marks at once, as both carriers do.
`LineCodec` turns PCM into the stream's payloads. The load generator, the test carrier
(tests/phone_carrier.py) and bench/bridge_capacity.py all speak through these.
Wire formats: ../shared/reference/telephony-protocols.md §1-2.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from voxgate.audio import g711

__all__ = ["FRAME_S", "LineCodec", "LinePlayback", "TelnyxMessages", "TwilioMessages", "media_payload_bytes",
           "twilio_signature"]

FRAME_S = 0.02  # both carriers stream 20 ms frames
Encoding = Literal["pcmu", "pcma", "l16"]


def twilio_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """X-Twilio-Signature: HMAC-SHA1 over the URL and the sorted form fields (reference §1.5)."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass(frozen=True)
class LineCodec:
    """A stream's audio: G.711 at 8 kHz, or L16 (big-endian linear PCM, as RTP carries it) at `rate`."""

    encoding: Encoding = "pcmu"
    rate: int = 8000

    @property
    def bytes_per_second(self) -> int:
        return self.rate * (2 if self.encoding == "l16" else 1)

    @property
    def frame_bytes(self) -> int:
        return round(self.bytes_per_second * FRAME_S)

    def silence(self) -> bytes:
        """One frame of line silence."""
        return {"pcmu": b"\xff", "pcma": b"\xd5", "l16": b"\x00\x00"}[self.encoding] * (
            self.frame_bytes // (2 if self.encoding == "l16" else 1))

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """PCM at this codec's rate, as payload bytes."""
        if self.encoding == "pcmu":
            return g711.ulaw_encode(pcm)
        if self.encoding == "pcma":
            return g711.alaw_encode(pcm)
        return pcm.astype(">i2").tobytes()

    def decode(self, data: bytes) -> npt.NDArray[np.int16]:
        if self.encoding == "pcmu":
            return g711.ulaw_decode(data)
        if self.encoding == "pcma":
            return g711.alaw_decode(data)
        return np.frombuffer(data[: len(data) - len(data) % 2], dtype=">i2").astype(np.int16)

    def frames(self, pcm: npt.NDArray[np.int16]) -> list[bytes]:
        """`pcm` cut into whole 20 ms frames, the last one padded with silence."""
        data = self.encode(pcm)
        size = self.frame_bytes
        padding = self.silence()
        return [(data[i:i + size] + padding)[:size] for i in range(0, len(data), size)]

    def seconds(self, payload_bytes: int) -> float:
        return payload_bytes / self.bytes_per_second


def media_payload_bytes(raw: str) -> int | None:
    """The decoded size of a gateway's `media` message without parsing its JSON (the hot path of a line
    that receives 50 a second per call); None for any other message. Both carriers' outbound media put
    the base64 payload last: `..."payload":"<base64>"}}`."""
    if not raw.startswith(('{"event":"media"', '{"event": "media"')):
        return None
    end = raw.rfind('"')
    start = raw.rfind('"', 0, end)
    encoded = end - start - 1
    return encoded * 3 // 4 - (raw[end - 1] == "=") - (raw[end - 2] == "=")


@dataclass
class LinePlayback:
    """The caller's phone: plays agent audio in real time and echoes marks when it has played them.

    Times are the shell's monotonic clock, in seconds."""

    play_until: float = 0.0
    _pending: deque[tuple[float, str]] = field(default_factory=deque)  # (plays at, mark name)

    def audio(self, now: float, seconds: float) -> None:
        self.play_until = max(self.play_until, now) + seconds

    def mark(self, now: float, name: str) -> None:
        self._pending.append((max(self.play_until, now), name))

    def clear(self, now: float) -> list[str]:
        """Empty the buffer; returns the discarded marks, which the line echoes at once."""
        self.play_until = now
        names = [name for _, name in self._pending]
        self._pending.clear()
        return names

    def due_marks(self, now: float) -> list[str]:
        """Marks whose audio has now played, to echo."""
        due: list[str] = []
        while self._pending and self._pending[0][0] <= now:
            due.append(self._pending.popleft()[1])
        return due

    def playing(self, now: float) -> bool:
        return now < self.play_until


def _compact(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


@dataclass
class _StreamCounters:
    """The numbering both carriers put on a stream's messages: a sequence number on each, a chunk number
    (and its 20 ms timestamp) on each media frame."""

    _sequence: int = 0
    _chunk: int = 0

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def _media(self, sequence_key: str, stream_key: str, stream: str, payload: bytes) -> str:
        self._chunk += 1
        return (f'{{"event":"media","{sequence_key}":"{self._next()}","{stream_key}":"{stream}",'
                f'"media":{{"track":"inbound","chunk":"{self._chunk}","timestamp":"{self._chunk * 20}",'
                f'"payload":"{base64.b64encode(payload).decode()}"}}}}')


@dataclass
class TwilioMessages(_StreamCounters):
    """One Twilio Media Streams call, as Twilio spells it (reference §1.3)."""

    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    account_sid: str = "AC" + "0" * 32
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    parameters: dict[str, str] = field(default_factory=dict)
    codec: LineCodec = field(default_factory=LineCodec)

    def connected(self) -> str:
        return '{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(self) -> str:
        encoding = "audio/x-mulaw" if self.codec.encoding == "pcmu" else "audio/x-alaw"
        return _compact({"event": "start", "sequenceNumber": str(self._next()), "streamSid": self.stream_sid,
                         "start": {"accountSid": self.account_sid, "streamSid": self.stream_sid,
                                   "callSid": self.call_sid, "tracks": ["inbound"],
                                   "customParameters": self.parameters,
                                   "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1}}})

    def media(self, payload: bytes) -> str:
        return self._media("sequenceNumber", "streamSid", self.stream_sid, payload)

    def dtmf(self, digit: str) -> str:
        return _compact({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": str(self._next()),
                         "dtmf": {"track": "inbound_track", "digit": digit}})

    def mark(self, name: str) -> str:
        return _compact({"event": "mark", "sequenceNumber": str(self._next()), "streamSid": self.stream_sid,
                         "mark": {"name": name}})

    def stop(self) -> str:
        return _compact({"event": "stop", "sequenceNumber": str(self._next()), "streamSid": self.stream_sid,
                         "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})


@dataclass
class TelnyxMessages(_StreamCounters):
    """One Telnyx media-streaming call, as Telnyx spells it (reference §2.2)."""

    call_control_id: str = field(default_factory=lambda: "v3:" + uuid.uuid4().hex)
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    parameters: dict[str, str] = field(default_factory=dict)
    auth_token: str | None = None  # the answer's stream_auth_token, echoed in `connected`
    codec: LineCodec = field(default_factory=LineCodec)

    def connected(self) -> str:
        message: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if self.auth_token:
            message["x-telnyx-streaming-auth-token"] = self.auth_token
        return _compact(message)

    def start(self) -> str:
        return _compact({"event": "start", "sequence_number": str(self._next()), "stream_id": self.stream_id,
                         "start": {"user_id": str(uuid.uuid4()), "call_control_id": self.call_control_id,
                                   "call_session_id": str(uuid.uuid4()), "client_state": None,
                                   "from": "+15557654321", "to": "+15551234567",
                                   "custom_parameters": self.parameters,
                                   "media_format": {"encoding": self.codec.encoding.upper(),
                                                    "sample_rate": self.codec.rate, "channels": 1}}})

    def media(self, payload: bytes) -> str:
        return self._media("sequence_number", "stream_id", self.stream_id, payload)

    def dtmf(self, digit: str) -> str:
        return _compact({"event": "dtmf", "stream_id": self.stream_id, "sequence_number": str(self._next()),
                         "dtmf": {"digit": digit}})

    def mark(self, name: str) -> str:
        return _compact({"event": "mark", "stream_id": self.stream_id, "mark": {"name": name}})

    def stop(self) -> str:
        return _compact({"event": "stop", "sequence_number": str(self._next()), "stream_id": self.stream_id,
                         "stop": {"user_id": "", "call_control_id": self.call_control_id}})

"""Audio formats as the Realtime protocol names them, and the per-call converters to and from them.

Inside the gateway audio is int16 PCM at whatever rate a component wants; on the wire it is one of the
three formats OpenAI's Realtime API accepts. GA sessions describe a format as an object
(``{"type": "audio/pcm", "rate": 24000}``, ``{"type": "audio/pcmu"}``, ``{"type": "audio/pcma"}``),
beta sessions as a name (``"pcm16"``, ``"g711_ulaw"``, ``"g711_alaw"``). Like OpenAI, PCM is 24 kHz only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler

__all__ = [
    "PCM24K",
    "PCMA",
    "PCMU",
    "AudioFormat",
    "AudioFormatError",
    "InputDecoder",
    "OutputEncoder",
    "encode_pcm",
    "pcm16_array",
    "pcm16_bytes",
]

Encoding = Literal["pcm16", "pcmu", "pcma"]


class AudioFormatError(ValueError):
    """A format description or audio payload the gateway cannot accept; ``param`` names the bad field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


_GA_TYPES: dict[str, Encoding] = {"audio/pcm": "pcm16", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
_BETA_NAMES: dict[str, Encoding] = {"pcm16": "pcm16", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
_PCM_RATE = 24000
_G711_RATE = 8000


@dataclass(frozen=True)
class AudioFormat:
    encoding: Encoding
    rate: int

    def __post_init__(self) -> None:
        if self.encoding not in ("pcm16", "pcmu", "pcma"):
            raise AudioFormatError(f"unknown audio encoding {self.encoding!r}", "encoding")
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or self.rate <= 0:
            raise AudioFormatError(f"audio rate must be a positive integer, got {self.rate!r}", "rate")
        if self.encoding != "pcm16" and self.rate != _G711_RATE:
            raise AudioFormatError(f"G.711 audio is 8000 Hz, not {self.rate}", "rate")

    def __deepcopy__(self, memo: dict[int, Any]) -> AudioFormat:
        return self  # immutable: a session config's copy may share it

    @classmethod
    def from_ga(cls, obj: Any, param: str = "format") -> AudioFormat:
        """Parse a GA format object; ``param`` is where it sits in the event, for error reports."""
        if not isinstance(obj, dict):
            raise AudioFormatError(f"audio format must be an object, got {type(obj).__name__}", param)
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in _GA_TYPES:
            expected = ", ".join(repr(t) for t in _GA_TYPES)
            raise AudioFormatError(
                f"invalid audio format type {kind!r}; expected one of {expected}", f"{param}.type"
            )
        encoding = _GA_TYPES[kind]
        default_rate = _PCM_RATE if encoding == "pcm16" else _G711_RATE
        rate = obj.get("rate", default_rate)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate != default_rate:
            raise AudioFormatError(
                f"invalid rate {rate!r} for {kind}; only {default_rate} is supported", f"{param}.rate"
            )
        return cls(encoding, rate)

    @classmethod
    def from_beta(cls, name: Any, param: str = "format") -> AudioFormat:
        """Parse a beta format name (``input_audio_format`` / ``output_audio_format``)."""
        if not isinstance(name, str) or name not in _BETA_NAMES:
            expected = ", ".join(repr(n) for n in _BETA_NAMES)
            raise AudioFormatError(f"invalid audio format {name!r}; expected one of {expected}", param)
        encoding = _BETA_NAMES[name]
        return cls(encoding, _PCM_RATE if encoding == "pcm16" else _G711_RATE)

    def to_ga(self) -> dict[str, Any]:
        if self.encoding == "pcm16":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": f"audio/{self.encoding}"}

    def to_beta(self) -> str:
        return {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}[self.encoding]

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    @property
    def bytes_per_ms(self) -> float:
        return self.rate * self.bytes_per_sample / 1000

    def duration_ms(self, nbytes: int) -> float:
        """How much audio ``nbytes`` of this format holds."""
        return nbytes / self.bytes_per_ms


PCM24K = AudioFormat("pcm16", _PCM_RATE)
PCMU = AudioFormat("pcmu", _G711_RATE)
PCMA = AudioFormat("pcma", _G711_RATE)


def pcm16_bytes(pcm: npt.NDArray[np.int16]) -> bytes:
    """int16 samples as little-endian PCM16 bytes (the wire order whatever the host's)."""
    return np.asarray(pcm, dtype="<i2").tobytes()


def pcm16_array(data: bytes) -> npt.NDArray[np.int16]:
    """Little-endian PCM16 bytes as native int16 samples; an odd byte count is an error."""
    if len(data) % 2:
        raise AudioFormatError(f"PCM16 audio must be whole 2-byte samples, got {len(data)} bytes", "audio")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def encode_pcm(pcm: npt.NDArray[np.int16], fmt: AudioFormat) -> bytes:
    """int16 PCM already at ``fmt.rate`` as ``fmt``'s wire bytes (G.711 by table, PCM16 little-endian)."""
    if fmt.encoding == "pcmu":
        return g711.ulaw_encode(pcm)
    if fmt.encoding == "pcma":
        return g711.alaw_encode(pcm)
    return pcm16_bytes(pcm)


class InputDecoder:
    """Wire audio of one format in, int16 PCM at ``target_rate`` out, resampler state kept across calls."""

    def __init__(self, fmt: AudioFormat, target_rate: int = 16000) -> None:
        self.format = fmt
        self.target_rate = target_rate
        self._resampler = StreamResampler(fmt.rate, target_rate)
        self._same_rate = fmt.rate == target_rate

    def decode(self, data: bytes) -> npt.NDArray[np.int16]:
        encoding = self.format.encoding
        if encoding == "pcmu":
            pcm = g711.ulaw_decode(data)
        elif encoding == "pcma":
            pcm = g711.alaw_decode(data)
        else:
            return self._resampler.process(pcm16_array(data))
        # A phone line read at its own rate (webrtcvad's 8 kHz): the decoded array is already a fresh one.
        return pcm if self._same_rate else self._resampler.process(pcm)

    def flush(self) -> npt.NDArray[np.int16]:
        """End of a stretch of input (a committed buffer, a hang-up): what the resampler still holds."""
        return self._resampler.flush()

    def reset(self) -> None:
        """Drop held audio, e.g. when the input buffer is cleared."""
        self._resampler.reset()


class OutputEncoder:
    """int16 PCM at ``source_rate`` in, wire audio of one format out (resampled, then encoded)."""

    def __init__(self, fmt: AudioFormat, source_rate: int) -> None:
        self.format = fmt
        self.source_rate = source_rate
        self._resampler = StreamResampler(source_rate, fmt.rate)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        return encode_pcm(self._resampler.process(pcm), self.format)

    def flush(self) -> bytes:
        """End of a response: the held tail, encoded."""
        return encode_pcm(self._resampler.flush(), self.format)

    def reset(self) -> None:
        """Drop held audio, e.g. on barge-in."""
        self._resampler.reset()

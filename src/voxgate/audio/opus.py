"""Opus (RFC 6716) for one call, both ways: mono, one 20 ms frame per RTP packet, as RFC 7587 carries it.

    opus = OpusCodec()
    payload = opus.encode(pcm48k)      # 960 int16 samples in, one Opus packet out
    pcm48k = opus.decode(payload)      # an RTP payload in (any channel count), int16 mono out
    pcm48k = opus.decode(b"")          # a lost packet's turn: 20 ms of silence
    payload = opus.encode_silence()    # 20 ms of silence, for a line that never pauses (WebRTC)

The encoder may take its PCM at another rate Opus accepts (`input_rate`: 8, 12, 16, 24 or 48 kHz), so a
24 kHz voice is coded as it is instead of being resampled first; the decoder may give its PCM at one
(`output_rate`), so a browser's 48 kHz stream reaches a 24 kHz session with no resampler between (libopus
decodes to the rate asked for inside: 27 µs a packet at 24 kHz, against 45 µs at 48 kHz through PyAV and
27 µs more to resample). The RTP clock stays 48 kHz either way.
`application` is libopus's: "voip" (SILK and hybrid modes, speech-tuned: what a phone peer expects) or
"lowdelay" (CELT only: about 65 µs a frame against 250 µs for "voip" on this VM, and 4 ms less look-ahead;
any Opus decoder plays it, and at 32 kb/s it carries a synthetic voice cleanly).

The codec is the system's libopus called directly (`voxgate.audio.libopus`) where there is one, else PyAV's
bundled copy through FFmpeg (`backend` says which; both code the same bitstream).
"""

from __future__ import annotations

from typing import Literal, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.error import FFmpegError

from voxgate.audio import libopus
from voxgate.audio.resample import StreamResampler

__all__ = ["OpusCodec", "OpusError", "mono_pcm"]

RATE = 48000
FRAME_SAMPLES = RATE * 20 // 1000
INPUT_RATES = (8000, 12000, 16000, 24000, 48000)
# Digital silence coded this many times in a row leaves the encoder (look-ahead, overlap) silent too; its
# next silent packet is then kept and sent again rather than coded anew (a WebRTC track sends 50 a second).
SETTLE_FRAMES = 5

Backend = Literal["libopus", "pyav"]


class OpusError(ValueError):
    """A payload the decoder refuses (a counted drop, never the call's end)."""


class _Encoder(Protocol):
    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes: ...


class _Decoder(Protocol):
    def decode(self, payload: bytes) -> npt.NDArray[np.int16]: ...


class OpusCodec:
    def __init__(self, bitrate: int = 32000, input_rate: int = RATE, application: str = "voip",
                 output_rate: int = RATE, backend: Backend | None = None) -> None:
        for rate in (input_rate, output_rate):
            if rate not in INPUT_RATES:
                raise ValueError(f"Opus takes PCM at {INPUT_RATES} Hz, not {rate}")
        if application not in libopus.APPLICATIONS:
            raise ValueError(f"Opus applications are {sorted(libopus.APPLICATIONS)}, not {application!r}")
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.frame_samples = input_rate * 20 // 1000  # what `encode` takes
        self._lost = np.zeros(output_rate * 20 // 1000, dtype=np.int16)  # what a lost packet's turn gives
        lib = libopus.load() if backend != "pyav" else None
        if backend == "libopus" and lib is None:
            raise OpusError("no libopus on this system (Debian: libopus0)")
        self.backend: Backend = "libopus" if lib is not None else "pyav"
        self._encoder: _Encoder
        self._decoder: _Decoder
        if lib is not None:
            self._encoder = libopus.LibOpusEncoder(lib, input_rate, application, bitrate)
            self._decoder = libopus.LibOpusDecoder(lib, output_rate)
        else:
            self._encoder = _PyAvEncoder(input_rate, application, bitrate)
            self._decoder = _PyAvDecoder(output_rate)
        self._zeros = np.zeros(self.frame_samples, dtype=np.int16)
        self._silent_run = 0  # silent frames coded since the last sound
        self._settled: bytes | None = None  # the silent packet kept once the encoder has settled

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """One 20 ms frame (`frame_samples` at `input_rate`) as one Opus packet."""
        self._silent_run, self._settled = 0, None
        return self._encoder.encode(pcm)

    def encode_silence(self) -> bytes:
        """20 ms of silence as one Opus packet: coded until the encoder has settled, then the same packet."""
        if self._settled is not None:
            return self._settled
        payload = self._encoder.encode(self._zeros)
        self._silent_run += 1
        if self._silent_run >= SETTLE_FRAMES:
            self._settled = payload
        return payload

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """An Opus packet as int16 mono at `output_rate`; an empty one (the turn of a lost packet) as silence."""
        if not payload:
            return self._lost.copy()
        try:
            return self._decoder.decode(payload)
        except (FFmpegError, libopus.LibOpusError) as error:
            raise OpusError(f"undecodable Opus packet: {error}") from None


class _PyAvEncoder:
    def __init__(self, rate: int, application: str, bitrate: int) -> None:
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = rate
        encoder.layout = "mono"
        encoder.format = "s16"
        encoder.bit_rate = bitrate
        encoder.options = {"application": application, "frame_duration": "20"}
        encoder.open()
        self._encoder = encoder
        self._rate = rate
        self._pts = 0

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16, copy=False).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += frame.samples
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))


class _PyAvDecoder:
    def __init__(self, rate: int) -> None:
        # FFmpeg's libopus wrapper, not its own Opus decoder (which gives float planar at the stream's
        # channel count): int16 mono, a stereo packet downmixed inside; always at 48 kHz (the wrapper sets
        # the rate itself), so another rate is resampled here.
        decoder = av.CodecContext.create("libopus", "r")
        decoder.sample_rate = RATE
        decoder.layout = "mono"
        decoder.open()
        self._decoder = decoder
        self._resampler = StreamResampler(RATE, rate) if rate != RATE else None

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        frames = self._decoder.decode(av.Packet(payload))
        if len(frames) == 1 and frames[0].format.name == "s16" and len(frames[0].layout.channels) == 1:
            pcm = frames[0].to_ndarray().reshape(-1).astype(np.int16, copy=False)
        else:
            out = [mono_pcm(frame) for frame in frames]
            pcm = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
        return pcm if self._resampler is None else self._resampler.process(pcm)


def mono_pcm(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    """A decoded frame (float planar or int16, any channel count) as int16 mono."""
    samples = frame.to_ndarray()
    if samples.dtype.kind == "f":
        samples = np.clip(samples * 32768.0, -32768, 32767)
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = samples.reshape(channels, -1).mean(axis=0)
    else:
        mono = samples.reshape(-1, channels).mean(axis=1)
    return mono.astype(np.int16)

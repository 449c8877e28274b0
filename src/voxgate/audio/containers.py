"""Audio files in and out of the speech routes, through PyAV's public API (FFmpeg underneath).

In: whatever a client uploads to `/v1/audio/transcriptions` (WAV, MP3, FLAC, Ogg/Opus, WebM, M4A, ...)
becomes 16 kHz mono int16 for Whisper, or `AudioFileError` with a sentence a client can act on. Out:
the agent's int16 PCM in the formats OpenAI's `/v1/audio/speech` offers; like OpenAI's, every one of
them at 24 kHz except Opus (48 kHz, Opus's own rate). `SpeechStream` resamples chunk by chunk, for
`pcm` streamed as it is synthesised.

Blocking (FFmpeg decodes and encodes in the calling thread): the routes run these in an executor.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import av
import numpy as np

__all__ = ["SPEECH_FORMATS", "AudioFileError", "SpeechFormat", "SpeechStream", "decode_file", "encode_speech"]

SPEECH_RATE = 24_000  # what OpenAI's speech formats carry (its `pcm` is 24 kHz 16-bit little-endian mono)


class AudioFileError(ValueError):
    """An upload that is not audio we can read, or too long."""


@dataclass(frozen=True, slots=True)
class SpeechFormat:
    name: str
    content_type: str
    rate: int
    container: str = ""  # FFmpeg's muxer; empty for wav and pcm, written here
    codec: str = ""


SPEECH_FORMATS = {
    "mp3": SpeechFormat("mp3", "audio/mpeg", SPEECH_RATE, "mp3", "libmp3lame"),
    "opus": SpeechFormat("opus", "audio/ogg", 48_000, "ogg", "libopus"),
    "aac": SpeechFormat("aac", "audio/aac", SPEECH_RATE, "adts", "aac"),
    "flac": SpeechFormat("flac", "audio/flac", SPEECH_RATE, "flac", "flac"),
    "wav": SpeechFormat("wav", "audio/wav", SPEECH_RATE),
    "pcm": SpeechFormat("pcm", "audio/pcm", SPEECH_RATE),
}


def decode_file(data: bytes, *, rate: int = 16_000, max_seconds: float = 600.0) -> np.ndarray:
    """The first audio stream of an uploaded file as mono int16 at `rate`."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    pieces: list[np.ndarray] = []
    samples, limit = 0, int(max_seconds * rate)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioFileError("the file has no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    samples += out.samples
                if samples > limit:
                    raise AudioFileError(f"the audio is longer than {max_seconds:.0f} s")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except AudioFileError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as exc:  # FFmpeg's word for "not a file I can read"
        raise AudioFileError(f"the file could not be read as audio ({type(exc).__name__})") from exc
    pcm = np.concatenate(pieces).astype(np.int16, copy=False) if pieces else np.zeros(0, np.int16)
    if not pcm.size:
        raise AudioFileError("the file holds no audio")
    return pcm


class SpeechStream:
    """int16 chunks at `in_rate` to little-endian int16 bytes at the format's rate, statefully (no clicks
    between chunks)."""

    def __init__(self, in_rate: int, out_rate: int = SPEECH_RATE) -> None:
        self.in_rate = in_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)
        self._pts = 0

    def feed(self, pcm: np.ndarray) -> bytes:
        return self._convert(self._frame(pcm))

    def flush(self) -> bytes:
        return self._convert(None)

    def _frame(self, pcm: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        frame.pts = self._pts
        self._pts += pcm.size
        return frame

    def _convert(self, frame: av.AudioFrame | None) -> bytes:
        return b"".join(out.to_ndarray().astype("<i2", copy=False).tobytes()
                        for out in self._resampler.resample(frame))


def encode_speech(pcm: np.ndarray, in_rate: int, speech_format: SpeechFormat) -> bytes:
    """A whole reply (int16 mono at `in_rate`) in `speech_format`."""
    if speech_format.name in ("pcm", "wav"):
        converter = SpeechStream(in_rate, speech_format.rate)
        body = converter.feed(pcm) + converter.flush()
        if speech_format.name == "pcm":
            return body
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(speech_format.rate)
            wav.writeframes(body)
        return out.getvalue()
    out = io.BytesIO()
    with av.open(out, mode="w", format=speech_format.container) as container:
        stream = container.add_stream(speech_format.codec, rate=speech_format.rate, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono",
                                      rate=speech_format.rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = in_rate
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()

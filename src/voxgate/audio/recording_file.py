"""A stereo recording written to disk as it grows: Ogg Opus (PyAV's libopus) or 16-bit WAV.

Blocking calls (file writes, Opus encoding): the call's recording runs them in a worker thread, one at a
time. Nothing is held beyond the block being written; the WAV header's sizes are settled on `close`, so
a file cut short by a crash still plays up to its last block in most players.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

__all__ = ["CONTENT_TYPES", "SUFFIXES", "RecordingFile", "RecordingFormat"]

RecordingFormat = Literal["opus", "wav"]
SUFFIXES: dict[RecordingFormat, str] = {"opus": ".ogg", "wav": ".wav"}
CONTENT_TYPES: dict[RecordingFormat, str] = {"opus": "audio/ogg", "wav": "audio/wav"}
OPUS_BITRATE = 48000  # two speech channels


class RecordingFile:
    def __init__(self, path: Path, fmt: RecordingFormat, rate: int) -> None:
        self.path = path
        self.format: RecordingFormat = fmt
        self.rate = rate
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wav: wave.Wave_write | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.AudioStream | None = None
        self._pts = 0
        if fmt == "wav":
            self._wav = wave.open(str(path), "wb")
            self._wav.setnchannels(2)
            self._wav.setsampwidth(2)
            self._wav.setframerate(rate)
        else:
            self._container = av.open(str(path), "w", format="ogg")
            stream = self._container.add_stream("libopus", rate=48000, layout="stereo")
            stream.codec_context.format = "s16"
            stream.codec_context.bit_rate = OPUS_BITRATE
            self._stream = stream

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        """(n, 2) int16 samples at `rate`, caller left and agent right."""
        if not frames.size:
            return
        frames = np.ascontiguousarray(frames, dtype=np.int16)
        if self._wav is not None:
            self._wav.writeframes(frames.astype("<i2", copy=False).tobytes())
            return
        assert self._container is not None and self._stream is not None
        frame = av.AudioFrame.from_ndarray(frames.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += frames.shape[0]
        for packet in self._stream.encode(frame):  # resampled to Opus's 48 kHz by the encoder
            self._container.mux(packet)

    def close(self) -> int:
        """Finish the file; its size in bytes."""
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        if self._container is not None and self._stream is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
        return self.path.stat().st_size if self.path.exists() else 0

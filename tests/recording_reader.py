"""A call recording read back the way a listener's player would: PyAV decodes the file, whatever its format."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np


def read_back(data: bytes | Path) -> tuple[np.ndarray, int]:
    """A stereo recording as (2, n) samples on int16's scale, and its rate."""
    with av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == 2, "a stereo recording"
        # Packed samples (WAV's s16) come as one interleaved row; planar ones (Opus's fltp) a row a channel.
        frames = [f.to_ndarray() if f.format.is_planar else f.to_ndarray().reshape(-1, 2).T
                  for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
        float_samples = stream.codec_context.format.name.startswith("flt")
    pcm = np.concatenate(frames, axis=1).astype(np.float64)
    if float_samples:  # the Opus decoder's floats, on int16's scale
        pcm *= 32767
    return pcm, rate

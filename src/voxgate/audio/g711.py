"""G.711 µ-law and A-law codecs for 16-bit PCM, by table lookup.

The tables are built once at import by running the reference algorithm (Sun Microsystems' g711.c, the
same code CPython's ``audioop`` used) over every possible input, so encoding a frame is one numpy gather:
65536-entry encode tables indexed by the sample's bit pattern, 256-entry decode tables indexed by the
code. Output is bit-exact with ``audioop.lin2ulaw``/``ulaw2lin``/``lin2alaw``/``alaw2lin`` at width 2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

# Upper bound of each segment's magnitude: µ-law works on 14-bit, A-law on 13-bit magnitudes.
_ULAW_SEGMENT_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEGMENT_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84


def _every_int16() -> npt.NDArray[np.int32]:
    """All 65536 int16 values, ordered by their unsigned bit pattern (the encode tables' index)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _every_int16() >> 2  # 14-bit two's complement
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.where(negative, -pcm, pcm) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_END, magnitude, side="left")
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)  # beyond the last segment: clip to the largest code
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    t = ((mantissa << 3) + _ULAW_BIAS) << exponent
    return np.where(code & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _every_int16() >> 3  # 13-bit two's complement
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    segment = np.searchsorted(_ALAW_SEGMENT_END, magnitude, side="left")
    shift = np.where(segment < 2, 1, np.minimum(segment, 7))
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    t = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    t = np.where(segment == 0, t + 8, (t + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _build_alaw_encode()
_ALAW_DECODE = _build_alaw_decode()


def _as_pcm16(pcm: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 PCM, got an array of {array.dtype}")
    return array.reshape(-1).view(np.uint16)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM samples to µ-law, one byte per sample."""
    return _ULAW_ENCODE.take(_as_pcm16(pcm)).tobytes()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode µ-law bytes to int16 PCM."""
    return _ULAW_DECODE.take(np.frombuffer(data, dtype=np.uint8))


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM samples to A-law, one byte per sample."""
    return _ALAW_ENCODE.take(_as_pcm16(pcm)).tobytes()


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to int16 PCM."""
    return _ALAW_DECODE.take(np.frombuffer(data, dtype=np.uint8))

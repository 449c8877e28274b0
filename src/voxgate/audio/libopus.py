"""libopus's own C API (opus.h) through ctypes: one encoder or decoder state per call, no FFmpeg between.

Through PyAV a 20 ms packet costs a Packet, a list of AudioFrames and an ndarray conversion around the
codec; here it is one foreign call into a buffer the call keeps. Measured on this project's 2-core VM
(libopus 1.3.1, speech at 32 kb/s): decoding 30 µs at 48 kHz and 27 µs at 24 kHz against 45 µs through
PyAV; encoding 24 kHz CELT low-delay 65 µs against 83 µs.

The library is the system's (Debian's libopus0, which Chromium and baresip already pull in and `make
system-deps` installs); `load()` returns None where there is none, and `voxgate.audio.opus` then codes
through PyAV's bundled copy instead. States live in memory Python owns (`opus_*_get_size` then
`opus_*_init`), so nothing has to be destroyed by hand.

`opus_encoder_ctl` is variadic; its integer arguments are passed as fixed ones, which the x86-64 and
AArch64 Linux calling conventions treat alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
import numpy.typing as npt

__all__ = ["APPLICATIONS", "LibOpusDecoder", "LibOpusEncoder", "LibOpusError", "load"]

APPLICATIONS = {"voip": 2048, "audio": 2049, "lowdelay": 2051}  # OPUS_APPLICATION_*
_SET_BITRATE = 4002  # OPUS_SET_BITRATE_REQUEST
_MAX_PACKET = 1500  # what one RTP packet can carry; libopus's own advice for max_data_bytes is 4000
_MAX_FRAME_MS = 120  # the longest a packet may hold (RFC 6716, 3.2.5: 48 frames of 2.5 ms)


class LibOpusError(ValueError):
    """libopus refused: a negative return code, with the library's own words for it."""


@functools.cache
def load() -> ctypes.CDLL | None:
    """The system's libopus with the signatures this module calls, or None when there is none."""
    name = ctypes.util.find_library("opus")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    c_int, c_int32, c_void_p, c_char_p = ctypes.c_int, ctypes.c_int32, ctypes.c_void_p, ctypes.c_char_p
    lib.opus_encoder_get_size.argtypes, lib.opus_encoder_get_size.restype = [c_int], c_int
    lib.opus_encoder_init.argtypes, lib.opus_encoder_init.restype = [c_void_p, c_int32, c_int, c_int], c_int
    lib.opus_encoder_ctl.argtypes, lib.opus_encoder_ctl.restype = [c_void_p, c_int, c_int32], c_int
    lib.opus_encode.argtypes = [c_void_p, c_void_p, c_int, c_void_p, c_int32]
    lib.opus_encode.restype = c_int32
    lib.opus_decoder_get_size.argtypes, lib.opus_decoder_get_size.restype = [c_int], c_int
    lib.opus_decoder_init.argtypes, lib.opus_decoder_init.restype = [c_void_p, c_int32, c_int], c_int
    lib.opus_decode.argtypes = [c_void_p, c_char_p, c_int32, c_void_p, c_int, c_int]
    lib.opus_decode.restype = c_int
    lib.opus_strerror.argtypes, lib.opus_strerror.restype = [c_int], c_char_p
    return lib


def _check(lib: ctypes.CDLL, code: int) -> int:
    if code < 0:
        raise LibOpusError((lib.opus_strerror(code) or b"unknown error").decode())
    return code


class LibOpusEncoder:
    """Mono int16 PCM at `rate` in, one Opus packet per `encode`."""

    def __init__(self, lib: ctypes.CDLL, rate: int, application: str, bitrate: int) -> None:
        self._lib = lib
        self._state = ctypes.create_string_buffer(lib.opus_encoder_get_size(1))
        _check(lib, lib.opus_encoder_init(self._state, rate, 1, APPLICATIONS[application]))
        _check(lib, lib.opus_encoder_ctl(self._state, _SET_BITRATE, bitrate))
        self._packet = ctypes.create_string_buffer(_MAX_PACKET)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """`pcm` must be one whole Opus frame (20 ms here) of contiguous int16."""
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        size = _check(self._lib, self._lib.opus_encode(self._state, samples.ctypes.data, samples.size,
                                                       self._packet, _MAX_PACKET))
        return ctypes.string_at(self._packet, size)


class LibOpusDecoder:
    """One Opus packet in (any mode, any channel count: a stereo one is downmixed inside), int16 mono at
    `rate` out."""

    def __init__(self, lib: ctypes.CDLL, rate: int) -> None:
        self._lib = lib
        self._state = ctypes.create_string_buffer(lib.opus_decoder_get_size(1))
        _check(lib, lib.opus_decoder_init(self._state, rate, 1))
        self._capacity = rate * _MAX_FRAME_MS // 1000
        self._out = np.zeros(self._capacity, dtype=np.int16)
        self._address = self._out.ctypes.data

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        samples = _check(self._lib, self._lib.opus_decode(self._state, payload, len(payload), self._address,
                                                          self._capacity, 0))
        return self._out[:samples].copy()

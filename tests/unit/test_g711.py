"""G.711 tables against CPython 3.11's audioop, the reference implementation, over every input."""

import warnings

import numpy as np
import pytest

from voxgate.audio import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_audioop_for_every_sample() -> None:
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_matches_audioop_for_every_sample() -> None:
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_ulaw_decode_matches_audioop_for_every_code() -> None:
    decoded = g711.ulaw_decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert decoded.tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_matches_audioop_for_every_code() -> None:
    decoded = g711.alaw_decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert decoded.tobytes() == audioop.alaw2lin(ALL_CODES, 2)


@pytest.mark.parametrize(
    ("encode", "decode"), [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]
)
def test_decoded_codes_encode_back_to_themselves(encode, decode) -> None:  # type: ignore[no-untyped-def]
    # Every code's decoded value is a reconstruction level, which must map back to a code that decodes
    # to the same level (µ-law has two codes for zero).
    levels = decode(ALL_CODES)
    assert np.array_equal(decode(encode(levels)), levels)


def test_empty_input_and_wrong_dtype() -> None:
    assert g711.ulaw_encode(np.zeros(0, dtype=np.int16)) == b""
    assert len(g711.alaw_decode(b"")) == 0
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(4, dtype=np.float32))  # type: ignore[arg-type]

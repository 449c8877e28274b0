"""Audio formats: parsing both dialects, refusing the rest, and the per-call decoder/encoder."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.audio.formats import (
    PCM24K,
    PCMA,
    PCMU,
    AudioFormat,
    AudioFormatError,
    InputDecoder,
    OutputEncoder,
    pcm16_array,
    pcm16_bytes,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


@pytest.mark.parametrize(
    ("ga", "beta", "fmt"),
    [
        ({"type": "audio/pcm", "rate": 24000}, "pcm16", PCM24K),
        ({"type": "audio/pcmu"}, "g711_ulaw", PCMU),
        ({"type": "audio/pcma"}, "g711_alaw", PCMA),
    ],
)
def test_both_dialects_round_trip(ga: dict, beta: str, fmt: AudioFormat) -> None:
    assert AudioFormat.from_ga(ga) == fmt
    assert AudioFormat.from_beta(beta) == fmt
    assert fmt.to_ga() == ga
    assert fmt.to_beta() == beta


def test_ga_pcm_rate_defaults_to_24k() -> None:
    assert AudioFormat.from_ga({"type": "audio/pcm"}) == PCM24K
    assert AudioFormat.from_ga({"type": "audio/pcmu", "rate": 8000}) == PCMU


@pytest.mark.parametrize(
    ("obj", "param"),
    [
        ({"type": "audio/pcm", "rate": 16000}, "session.audio.input.format.rate"),
        ({"type": "audio/pcm", "rate": "24000"}, "session.audio.input.format.rate"),
        ({"type": "audio/pcm", "rate": True}, "session.audio.input.format.rate"),
        ({"type": "audio/pcmu", "rate": 16000}, "session.audio.input.format.rate"),
        ({"type": "audio/opus"}, "session.audio.input.format.type"),
        ({"type": None}, "session.audio.input.format.type"),
        ({}, "session.audio.input.format.type"),
        ("pcm16", "session.audio.input.format"),
        (None, "session.audio.input.format"),
    ],
)
def test_ga_refusals_name_the_bad_field(obj: object, param: str) -> None:
    with pytest.raises(AudioFormatError) as caught:
        AudioFormat.from_ga(obj, param="session.audio.input.format")
    assert caught.value.param == param
    assert caught.value.message


@pytest.mark.parametrize("name", ["pcm", "PCM16", "g711", "audio/pcmu", "", None, 16])
def test_beta_refusals(name: object) -> None:
    with pytest.raises(AudioFormatError) as caught:
        AudioFormat.from_beta(name, param="input_audio_format")
    assert caught.value.param == "input_audio_format"


def test_constructor_refuses_impossible_formats() -> None:
    with pytest.raises(AudioFormatError):
        AudioFormat("pcmu", 16000)
    with pytest.raises(AudioFormatError):
        AudioFormat("flac", 24000)  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError):
        AudioFormat("pcm16", 0)


def test_sizes_and_durations() -> None:
    assert PCM24K.bytes_per_ms == 48.0
    assert PCMU.bytes_per_ms == 8.0
    assert PCMA.duration_ms(160) == 20.0
    assert PCM24K.duration_ms(960) == 20.0


@given(st.lists(st.integers(-32768, 32767), max_size=200))
def test_pcm16_bytes_are_little_endian_and_round_trip(samples: list[int]) -> None:
    pcm = np.array(samples, dtype=np.int16)
    data = pcm16_bytes(pcm)
    assert data == b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    assert np.array_equal(pcm16_array(data), pcm)


def test_decoder_refuses_odd_pcm16_bytes() -> None:
    with pytest.raises(AudioFormatError) as caught:
        InputDecoder(PCM24K).decode(b"\x00\x01\x02")
    assert caught.value.param == "audio"


def tone(rate: int, seconds: float, hz: float = 500.0, amplitude: float = 8000.0) -> np.ndarray:
    return np.rint(amplitude * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(
        np.int16
    )


@pytest.mark.parametrize("fmt", [PCMU, PCMA, PCM24K])
def test_decoder_in_frames_equals_decoding_all_at_once(fmt: AudioFormat) -> None:
    wire = OutputEncoder(fmt, 24000).encode(tone(24000, 0.4))
    frame = int(fmt.bytes_per_ms * 20)
    decoder = InputDecoder(fmt, target_rate=16000)
    framed = np.concatenate([decoder.decode(wire[i : i + frame]) for i in range(0, len(wire), frame)])
    framed = np.concatenate((framed, decoder.flush()))
    whole_decoder = InputDecoder(fmt, target_rate=16000)
    whole = np.concatenate((whole_decoder.decode(wire), whole_decoder.flush()))
    assert np.array_equal(framed, whole)
    assert abs(len(framed) - 16000 * len(wire) / (fmt.bytes_per_ms * 1000)) <= 2


def test_ulaw_decoder_at_native_rate_is_plain_g711() -> None:
    wire = bytes(range(256))
    assert InputDecoder(PCMU, target_rate=8000).decode(wire).tobytes() == audioop.ulaw2lin(wire, 2)


def test_encoder_output_is_g711_of_the_resampled_tone() -> None:
    encoder = OutputEncoder(PCMU, source_rate=24000)
    source = tone(24000, 0.5)
    wire = b"".join(encoder.encode(source[i : i + 480]) for i in range(0, len(source), 480)) + encoder.flush()
    assert len(wire) == 4000  # 0.5 s at 8 kHz, one byte a sample
    decoded = InputDecoder(PCMU, target_rate=8000).decode(wire).astype(float)
    expected = tone(8000, 0.5).astype(float)
    middle = slice(80, -80)
    # µ-law quantisation of an 8000-peak tone is within ~2.5 % of full scale at worst.
    assert np.max(np.abs(decoded[middle] - expected[middle])) < 300


def test_pcm16_encoder_passes_24k_through() -> None:
    source = tone(24000, 0.1)
    encoder = OutputEncoder(PCM24K, source_rate=24000)
    assert encoder.encode(source) + encoder.flush() == pcm16_bytes(source)

"""Streaming resampler: continuity across chunk edges, length accounting, alignment, state handling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.audio.resample import StreamResampler

PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (22050, 24000),
    (22050, 8000),
    (48000, 16000),
    (16000, 48000),
    (48000, 24000),
    (24000, 48000),
]
AMPLITUDE = 12000.0
TONE_HZ = 440.0


def sine(rate: int, n: int) -> np.ndarray:
    return AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / rate)


def stream(resampler: StreamResampler, pcm: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``pcm`` in chunks of the given sizes (cycled); return (output without flush, flushed tail)."""
    out, position, index = [], 0, 0
    while position < len(pcm):
        size = sizes[index % len(sizes)]
        out.append(resampler.process(pcm[position : position + size]))
        position += size
        index += 1
    return np.concatenate(out), resampler.flush()


def check_streamed_sine(in_rate: int, out_rate: int, sizes: list[int], seconds: float = 0.5) -> None:
    n_in = int(in_rate * seconds)
    pcm = np.rint(sine(in_rate, n_in)).astype(np.int16)
    body, tail = stream(StreamResampler(in_rate, out_rate), pcm, sizes)
    out = np.concatenate((body, tail)).astype(np.float64)

    assert abs(len(out) - n_in * out_rate / in_rate) <= 2
    # Away from the stream's start and end (where the filter sees silence), the output is the same sine
    # sampled at the new rate: the output is time-aligned with the input, not delayed.
    edge = out_rate // 100
    expected = sine(out_rate, len(out))
    assert np.max(np.abs(out[edge:-edge] - expected[edge:-edge])) < 0.01 * AMPLITUDE
    # No clicks at chunk edges: no step larger than the sine's own steepest slope allows.
    steepest = 2 * np.pi * TONE_HZ / out_rate * AMPLITUDE
    assert np.max(np.abs(np.diff(out[edge:-edge]))) < 1.05 * steepest + 2


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_sine_streamed_in_uneven_chunks_matches_sine_at_output_rate(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(in_rate * 7 + out_rate)
    check_streamed_sine(in_rate, out_rate, [int(s) for s in rng.integers(1, in_rate // 25, size=40)])


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    sizes=st.lists(st.integers(min_value=0, max_value=1200), min_size=1, max_size=30).filter(any),
)
def test_any_chunking_gives_the_same_continuous_sine(pair: tuple[int, int], sizes: list[int]) -> None:
    check_streamed_sine(*pair, sizes, seconds=0.25)


@pytest.mark.parametrize("quality", ["low-latency", "QQ", "LQ", "HQ"])
def test_every_quality_keeps_length_and_alignment(quality: str) -> None:
    in_rate, out_rate = 8000, 24000
    pcm = np.zeros(in_rate, dtype=np.int16)
    pcm[in_rate // 2] = 20000
    resampler = StreamResampler(in_rate, out_rate, quality)  # type: ignore[arg-type]
    body, tail = stream(resampler, pcm, [160])
    out = np.concatenate((body, tail))
    assert abs(len(out) - out_rate) <= 2
    assert int(np.argmax(np.abs(out))) == out_rate // 2


def test_low_latency_default_holds_back_only_its_filter_delay() -> None:
    resampler = StreamResampler(8000, 24000)
    assert resampler.quality == "low-latency"
    emitted = sum(len(resampler.process(np.zeros(160, dtype=np.int16))) for _ in range(50))
    held_ms = 50 * 20 - 1000 * emitted / 24000
    assert held_ms == pytest.approx(resampler.delay_ms, abs=0.5)
    assert held_ms < 5


def test_equal_rates_pass_audio_through() -> None:
    resampler = StreamResampler(16000, 16000)
    pcm = np.arange(-500, 500, dtype=np.int16)
    assert np.array_equal(resampler.process(pcm), pcm)
    assert len(resampler.flush()) == 0


def test_flush_then_reuse_and_reset_drop_state() -> None:
    resampler = StreamResampler(24000, 8000)
    pcm = np.rint(sine(24000, 4800)).astype(np.int16)
    first = np.concatenate((resampler.process(pcm), resampler.flush()))
    second = np.concatenate((resampler.process(pcm), resampler.flush()))
    assert np.array_equal(first, second)
    resampler.process(pcm[:1000])
    resampler.reset()
    third = np.concatenate((resampler.process(pcm), resampler.flush()))
    assert np.array_equal(first, third)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000)])
def test_full_scale_step_clips_instead_of_wrapping(in_rate: int, out_rate: int) -> None:
    # A step from silence to full scale overshoots (Gibbs); the overshoot must clip at 32767, never wrap
    # around to a large negative sample.
    step = np.concatenate((np.zeros(800, dtype=np.int16), np.full(800, 32767, dtype=np.int16)))
    resampler = StreamResampler(in_rate, out_rate)
    out = np.concatenate((resampler.process(step), resampler.flush()))
    after_step = out[len(out) // 2 + out_rate // 1000 : -out_rate // 100]
    assert np.max(out) == 32767
    assert np.min(after_step) > 30000


@pytest.mark.parametrize(
    ("args", "error"),
    [((0, 8000), ValueError), ((8000, -1), ValueError), ((8000, 16000, "best"), ValueError)],
)
def test_bad_construction(args: tuple, error: type[Exception]) -> None:
    with pytest.raises(error):
        StreamResampler(*args)


def test_bad_input_is_refused() -> None:
    resampler = StreamResampler(8000, 16000)
    with pytest.raises(ValueError):
        resampler.process(np.zeros(10, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        resampler.process(np.zeros((10, 2), dtype=np.int16))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 16000), (16000, 24000), (48000, 16000), (8000, 24000)])
def test_speech_band_passes_flat_and_what_the_lower_rate_cannot_hold_is_stopped(in_rate: int, out_rate: int) -> None:
    """Through the polyphase stages (integer and rational): speech frequencies keep their level within
    0.1 dB; a tone above the lower rate's Nyquist, going down, does not fold back into the band, and going
    up leaves no image above it."""
    low = min(in_rate, out_rate)
    for hz in (300, 1000, 0.35 * low):
        pcm = (AMPLITUDE * np.sin(2 * np.pi * hz * np.arange(in_rate) / in_rate)).astype(np.int16)
        out, tail = stream(StreamResampler(in_rate, out_rate), pcm, [in_rate // 50])
        heard = np.concatenate([out, tail]).astype(np.float64)[out_rate // 10 : -out_rate // 10]
        assert abs(20 * np.log10(np.sqrt(np.mean(heard ** 2)) / (AMPLITUDE / np.sqrt(2)))) < 0.1
    if in_rate > out_rate:
        above = (low / 2 + in_rate / 2) / 2  # between the two Nyquists: 10 kHz for 24k -> 16k
        pcm = (AMPLITUDE * np.sin(2 * np.pi * above * np.arange(in_rate) / in_rate)).astype(np.int16)
        out, _ = stream(StreamResampler(in_rate, out_rate), pcm, [in_rate // 50])
        assert np.sqrt(np.mean(out[out_rate // 10 :].astype(np.float64) ** 2)) < AMPLITUDE * 10 ** (-55 / 20)
    else:
        pcm = (AMPLITUDE * np.sin(2 * np.pi * 0.3 * in_rate * np.arange(in_rate) / in_rate)).astype(np.int16)
        out, _ = stream(StreamResampler(in_rate, out_rate), pcm, [in_rate // 50])
        spectrum = np.abs(np.fft.rfft(out[out_rate // 10 :].astype(np.float64)))
        freqs = np.fft.rfftfreq(out.size - out_rate // 10, 1 / out_rate)
        assert spectrum[freqs > 0.55 * in_rate].max() < spectrum.max() * 10 ** (-55 / 20)

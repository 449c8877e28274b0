"""GatedVadStream on real speech and real line noise: turns as Silero alone finds them, Silero idle otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.speech import silence, speak
from voxgate.audio import g711
from voxgate.audio.formats import PCMU, InputDecoder
from voxgate.audio.resample import StreamResampler
from voxgate.engines.local.vad import SILERO_FRAME_MS, GatedVadStream, SileroModel, SileroStream
from voxgate.session.turn_detection import SpeechStarted, SpeechStopped, TurnDetectionConfig, TurnDetector

SENTENCES = [
    "please check the status of my order, thank you very much",
    "I need to talk to a human agent",
    "book an appointment for tomorrow at three pm",
    "yes",
    "hi",
]


@pytest.fixture(scope="module")
def silero() -> SileroModel:
    return SileroModel()  # it counts the frames it is asked to score (frames_scored)


def over_the_phone(pcm16k: np.ndarray) -> list[np.ndarray]:
    """16 kHz audio as a call delivers it to the session: µ-law at 8 kHz, decoded 20 ms at a time."""
    down = StreamResampler(16000, 8000)
    ulaw = g711.ulaw_encode(np.concatenate([down.process(pcm16k), down.flush()]))
    decoder = InputDecoder(PCMU, 16000)
    return [decoder.decode(bytes(ulaw[i : i + 160])) for i in range(0, len(ulaw), 160)]


def probabilities(stream: SileroStream | GatedVadStream, chunks: list[np.ndarray]) -> list[float]:
    return [p for chunk in chunks for p in stream.feed(chunk)]


def turns(probs: list[float]) -> list[SpeechStarted | SpeechStopped]:
    return TurnDetector(TurnDetectionConfig()).feed(probs, SILERO_FRAME_MS)


def hiss(ms: float, dbfs: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(ms * 16)) * 32768 * 10 ** (dbfs / 20)).astype(np.int16)


@pytest.mark.parametrize("sentence", SENTENCES)
def test_turns_match_silero_alone_on_a_phone_line(silero: SileroModel, sentence: str) -> None:
    audio = np.concatenate([silence(1000), speak(sentence), silence(1000)])
    chunks = over_the_phone(audio)
    ungated = turns(probabilities(SileroStream(silero), chunks))
    silero.frames_scored = 0
    gated_probs = probabilities(GatedVadStream(silero), chunks)
    gated = turns(gated_probs)
    assert len(gated_probs) == sum(c.size for c in chunks) // 512
    assert [type(e) for e in gated] == [type(e) for e in ungated] == [SpeechStarted, SpeechStopped]
    assert isinstance(gated[0], SpeechStarted) and isinstance(ungated[0], SpeechStarted)
    assert abs(gated[0].speech_start_ms - ungated[0].speech_start_ms) <= 100  # the onset is not clipped
    assert isinstance(gated[1], SpeechStopped) and isinstance(ungated[1], SpeechStopped)
    assert abs(gated[1].speech_end_ms - ungated[1].speech_end_ms) <= 100
    assert gated[1].audio_end_ms == pytest.approx(ungated[1].audio_end_ms, abs=100)
    assert silero.frames_scored < 0.8 * len(gated_probs)  # the silence around the turn was not scored


@pytest.mark.parametrize("gap_ms", [700, 3000])
def test_a_second_turn_after_silero_went_idle_is_not_clipped(silero: SileroModel, gap_ms: int) -> None:
    speech = speak(SENTENCES[2])
    chunks = over_the_phone(np.concatenate([silence(1000), speech, silence(gap_ms), speech, silence(1000)]))
    ungated = turns(probabilities(SileroStream(silero), chunks))
    gated = turns(probabilities(GatedVadStream(silero), chunks))
    assert [type(e) for e in gated] == [type(e) for e in ungated] == [SpeechStarted, SpeechStopped] * 2
    second, reference = gated[2], ungated[2]
    assert isinstance(second, SpeechStarted) and isinstance(reference, SpeechStarted)
    # Resuming from idle the gate may hear the onset sooner than a stream that never stopped; never later.
    assert second.speech_start_ms - reference.speech_start_ms <= 64


def test_digital_silence_never_calls_silero(silero: SileroModel) -> None:
    stream = GatedVadStream(silero)
    silero.frames_scored = 0
    probs = probabilities(stream, over_the_phone(silence(10_000)))
    assert probs == [0.0] * len(probs) and len(probs) == 312
    assert silero.frames_scored == 0


@pytest.mark.parametrize("noise", ["hiss -50 dBFS", "hiss -40 dBFS", "hiss -30 dBFS", "tone 1 kHz"])
def test_steady_line_noise_stops_calling_silero(silero: SileroModel, noise: str) -> None:
    if noise.startswith("hiss"):
        audio = hiss(10_000, float(noise.split()[1]))
    else:
        audio = (300 * np.sin(2 * np.pi * 1000 * np.arange(160_000) / 16000)).astype(np.int16)
    chunks = over_the_phone(audio)
    stream = GatedVadStream(silero)
    silero.frames_scored = 0
    probabilities(stream, chunks[:50])  # the first second: webrtcvad adapts to the noise
    adapting = silero.frames_scored
    silero.frames_scored = 0
    probs = probabilities(stream, chunks[50:])
    assert adapting <= 25  # at most webrtcvad's few frames of doubt, their preroll and hangover
    assert silero.frames_scored == 0 and max(probs) == 0.0
    assert turns(probabilities(GatedVadStream(silero), chunks)) == []


def test_speech_over_line_noise_is_still_heard(silero: SileroModel) -> None:
    speech = speak(SENTENCES[1])
    audio = hiss(4000 + speech.size / 16, -40)
    audio[64000:] = np.clip(audio[64000:].astype(np.int32) + speech, -32768, 32767).astype(np.int16)
    events = turns(probabilities(GatedVadStream(silero), over_the_phone(np.concatenate([audio, hiss(1000, -40)]))))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert isinstance(events[0], SpeechStarted) and abs(events[0].speech_start_ms - 4000) <= 150


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40))
def test_chunking_does_not_change_the_probabilities(silero: SileroModel, sizes: list[int]) -> None:
    audio = np.concatenate([silence(700), speak(SENTENCES[3]), silence(900), speak(SENTENCES[4]), silence(600)])
    whole = GatedVadStream(silero).feed(audio)
    stream = GatedVadStream(silero)
    chunked: list[float] = []
    start = 0
    for size in sizes * (audio.size // sum(sizes) + 1):
        chunked += stream.feed(audio[start : start + size])
        start += size
        if start >= audio.size:
            break
    assert chunked == pytest.approx(whole, abs=1e-4)


def test_reset_starts_over_and_bad_input_is_refused(silero: SileroModel) -> None:
    audio = np.concatenate([silence(500), speak(SENTENCES[3]), silence(500)])
    stream = GatedVadStream(silero)
    first = stream.feed(audio)
    stream.feed(audio[:1000])  # a partial frame and some state left over
    stream.reset()
    assert stream.feed(audio) == pytest.approx(first, abs=1e-5)
    with pytest.raises(TypeError):
        stream.feed(audio.astype(np.float32))
    with pytest.raises(ValueError):
        stream.feed(np.zeros((2, 512), np.int16))
    with pytest.raises(ValueError):
        GatedVadStream(silero, aggressiveness=4)
    with pytest.raises(ValueError):
        GatedVadStream(silero, preroll_frames=-1)

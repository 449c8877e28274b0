"""TurnDetector: OpenAI server_vad semantics over per-frame probabilities, plus the local additions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.session.turn_detection import (
    SEMANTIC_SILENCE_MS,
    SpeechStarted,
    SpeechStopped,
    TurnDetectionConfig,
    TurnDetectionError,
    TurnDetector,
    TurnEvent,
    phrase_looks_finished,
)

FRAME = 32.0
SPEECH, QUIET, HOVER = 0.95, 0.02, 0.42  # HOVER sits between threshold - 0.15 and threshold


def frames(*runs: tuple[float, int]) -> list[float]:
    return [p for p, n in runs for _ in range(n)]


def test_one_turn_reports_openai_times() -> None:
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=500, prefix_padding_ms=300))
    events = detector.feed(frames((QUIET, 10), (SPEECH, 20), (QUIET, 20)), FRAME)
    # Speech from frame 10 (320 ms) to frame 30 (960 ms); silence reaches 500 ms in the frame ending 1472.
    assert events == [
        SpeechStarted(audio_start_ms=20, speech_start_ms=320),
        SpeechStopped(audio_end_ms=1472, speech_end_ms=960),
    ]
    assert not detector.speaking


def test_prefix_padding_is_floored_at_zero() -> None:
    detector = TurnDetector(TurnDetectionConfig(prefix_padding_ms=300))
    events = detector.feed(frames((QUIET, 2), (SPEECH, 3)), 32)
    assert events == [SpeechStarted(audio_start_ms=0, speech_start_ms=64)]


def test_stop_waits_for_the_whole_silence() -> None:
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=500))
    detector.feed(frames((SPEECH, 5)), FRAME)
    assert detector.feed(frames((QUIET, 15)), FRAME) == []  # 480 ms of silence: not yet
    assert detector.feed([QUIET], FRAME) == [SpeechStopped(audio_end_ms=672, speech_end_ms=160)]


def test_a_short_pause_does_not_end_the_turn() -> None:
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=300))
    events = detector.feed(frames((SPEECH, 10), (QUIET, 8), (SPEECH, 10), (QUIET, 10)), FRAME)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert events[1].speech_end_ms == 28 * 32  # type: ignore[union-attr]


def test_min_speech_rejects_a_blip_and_keeps_the_true_start() -> None:
    detector = TurnDetector(TurnDetectionConfig(min_speech_ms=200, prefix_padding_ms=0))
    assert detector.feed(frames((QUIET, 3), (SPEECH, 4), (QUIET, 3)), FRAME) == []  # 128 ms: a cough
    events = detector.feed(frames((SPEECH, 6)), FRAME)  # starts at frame 10 = 320 ms
    assert events == []  # 192 ms so far
    assert detector.feed([SPEECH], FRAME) == [SpeechStarted(audio_start_ms=320, speech_start_ms=320)]


def test_hovering_probability_neither_starts_nor_ends_speech() -> None:
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=300))
    assert detector.feed(frames((HOVER, 50)), FRAME) == []
    detector.feed(frames((SPEECH, 5)), FRAME)
    # A trailing "mmm" keeps the turn open however long it lasts...
    assert detector.feed(frames((HOVER, 40)), FRAME) == []
    assert detector.speaking
    # ...and real silence afterwards ends it, with speech_end at the last confident frame.
    events = detector.feed(frames((QUIET, 10)), FRAME)
    assert events == [SpeechStopped(audio_end_ms=(55 + 40 + 10) * 32, speech_end_ms=55 * 32)]


def test_reset_forgets_speech_but_keeps_the_clock() -> None:
    detector = TurnDetector()
    detector.feed(frames((SPEECH, 5)), FRAME)
    detector.reset()
    assert not detector.speaking
    assert detector.feed(frames((QUIET, 40)), FRAME) == []
    assert detector.position_ms == 45 * 32
    assert detector.feed([SPEECH], FRAME) == [SpeechStarted(audio_start_ms=1140, speech_start_ms=1440)]


def test_update_applies_to_speech_in_progress() -> None:
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=2000))
    detector.feed(frames((SPEECH, 5), (QUIET, 10)), FRAME)
    detector.update(TurnDetectionConfig(silence_duration_ms=200))
    assert detector.feed([QUIET], FRAME) == [SpeechStopped(audio_end_ms=512, speech_end_ms=160)]


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_semantic_vad_waits_by_eagerness_and_hint(eagerness: str) -> None:
    finished, unknown, unfinished = SEMANTIC_SILENCE_MS["medium" if eagerness == "auto" else eagerness]
    config = TurnDetectionConfig(type="semantic_vad", eagerness=eagerness)  # type: ignore[arg-type]
    for hint, wait in ((True, finished), (None, unknown), (False, unfinished)):
        detector = TurnDetector(config)
        detector.feed(frames((SPEECH, 10)), 10.0)
        detector.hint_phrase_finished(hint)
        assert detector.feed(frames((QUIET, int(wait // 10) - 1)), 10.0) == []
        stopped = SpeechStopped(audio_end_ms=100 + int(wait), speech_end_ms=100)
        assert detector.feed([QUIET], 10.0) == [stopped]


def test_semantic_hint_is_cleared_by_more_speech() -> None:
    detector = TurnDetector(TurnDetectionConfig(type="semantic_vad", eagerness="high"))
    detector.feed(frames((SPEECH, 10)), 10.0)
    detector.hint_phrase_finished(False)  # "...and"
    detector.feed(frames((QUIET, 50), (SPEECH, 10)), 10.0)  # the caller went on after 500 ms
    events = detector.feed(frames((QUIET, 60)), 10.0)
    assert events[0].audio_end_ms - events[0].speech_end_ms == SEMANTIC_SILENCE_MS["high"][1]  # type: ignore[union-attr]


def test_server_vad_ignores_hints() -> None:
    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=300))
    detector.feed(frames((SPEECH, 10)), 10.0)
    detector.hint_phrase_finished(False)
    events = detector.feed(frames((QUIET, 30)), 10.0)
    assert events == [SpeechStopped(audio_end_ms=400, speech_end_ms=100)]


def test_config_from_an_openai_session() -> None:
    wire = {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 400,
        "create_response": True,
        "interrupt_response": True,
        "idle_timeout_ms": None,
    }
    config = TurnDetectionConfig.from_openai(wire, min_speech_ms=200)
    assert config == TurnDetectionConfig(
        threshold=0.6, prefix_padding_ms=200, silence_duration_ms=400, min_speech_ms=200
    )
    semantic = TurnDetectionConfig.from_openai({"type": "semantic_vad", "eagerness": "low"})
    assert semantic.required_silence_ms(None) == SEMANTIC_SILENCE_MS["low"][1]
    with pytest.raises(TurnDetectionError):
        TurnDetectionConfig.from_openai({"type": "server_vad", "threshold": 2})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"silence_duration_ms": -1},
        {"prefix_padding_ms": float("nan")},
        {"min_speech_ms": float("inf")},
        {"eagerness": "eager"},
        {"type": "push_to_talk"},
    ],
)
def test_bad_config_is_a_typed_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(TurnDetectionError):
        TurnDetectionConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "probs, frame_ms",
    [([0.5], 0.0), ([0.5], float("nan")), ([1.2], 32.0), ([float("nan")], 32.0), (["0.5"], 32.0)],
)
def test_bad_input_is_a_typed_error_and_changes_nothing(probs: list[float], frame_ms: float) -> None:
    detector = TurnDetector()
    with pytest.raises(TurnDetectionError):
        detector.feed(probs, frame_ms)
    assert detector.position_ms == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("What is the status of order 4567?", True),
        ("I want to check.", True),
        ("I want to check the status of my order and", False),
        ("Book me for tomorrow at um.", False),
        ("I'd like to talk to", False),
        ("My number is,", False),
        ("Yes.", True),
        ("", None),
        ("  ...  ", None),
    ],
)
def test_phrase_looks_finished(text: str, expected: bool | None) -> None:
    assert phrase_looks_finished(text) is expected


# --- properties ---------------------------------------------------------------------------------

probabilities = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), max_size=300)
configs = st.builds(
    TurnDetectionConfig,
    threshold=st.floats(min_value=0.05, max_value=0.95),
    prefix_padding_ms=st.integers(min_value=0, max_value=1000),
    silence_duration_ms=st.integers(min_value=0, max_value=1500),
    min_speech_ms=st.integers(min_value=0, max_value=500),
)
frame_lengths = st.sampled_from([10.0, 20.0, 30.0, 32.0])


def run_frame_by_frame(
    config: TurnDetectionConfig, probs: list[float], frame_ms: float
) -> list[tuple[float, TurnEvent]]:
    detector = TurnDetector(config)
    out: list[tuple[float, TurnEvent]] = []
    for p in probs:
        out.extend((detector.position_ms, e) for e in detector.feed([p], frame_ms))
    return out


@settings(max_examples=300, deadline=None)
@given(config=configs, probs=probabilities, frame_ms=frame_lengths)
def test_events_alternate_and_times_are_ordered(
    config: TurnDetectionConfig, probs: list[float], frame_ms: float
) -> None:
    timed = run_frame_by_frame(config, probs, frame_ms)
    last_time = 0.0
    for i, (now, event) in enumerate(timed):
        assert isinstance(event, SpeechStarted if i % 2 == 0 else SpeechStopped)
        if isinstance(event, SpeechStarted):
            assert 0 <= event.audio_start_ms <= event.speech_start_ms
            assert event.audio_start_ms == max(0, round(event.speech_start_ms - config.prefix_padding_ms))
            assert event.speech_start_ms >= last_time  # a new turn begins after the last one ended
            assert now - event.speech_start_ms >= config.min_speech_ms - 1e-6
            last_time = event.speech_start_ms
        else:
            assert last_time < event.speech_end_ms <= event.audio_end_ms == round(now)
            assert event.audio_end_ms - event.speech_end_ms >= config.silence_duration_ms - 1
            last_time = event.audio_end_ms


@settings(max_examples=200, deadline=None)
@given(config=configs, probs=probabilities, frame_ms=frame_lengths, cuts=st.lists(st.integers(0, 300)))
def test_chunking_does_not_change_events(
    config: TurnDetectionConfig, probs: list[float], frame_ms: float, cuts: list[int]
) -> None:
    whole = TurnDetector(config).feed(probs, frame_ms)
    chunked_detector = TurnDetector(config)
    chunked: list[TurnEvent] = []
    bounds = sorted({0, len(probs), *(c for c in cuts if c < len(probs))})
    for a, b in itertools.pairwise(bounds):
        chunked.extend(chunked_detector.feed(probs[a:b], frame_ms))
    assert chunked == whole


@settings(max_examples=100, deadline=None)
@given(config=configs, frame_ms=frame_lengths, n=st.integers(1, 300))
def test_constant_input(config: TurnDetectionConfig, frame_ms: float, n: int) -> None:
    assert TurnDetector(config).feed([0.0] * n, frame_ms) == []
    events = TurnDetector(config).feed([1.0] * n, frame_ms)
    assert events in ([], [SpeechStarted(audio_start_ms=0, speech_start_ms=0)])
    assert (events != []) == (n * frame_ms >= config.min_speech_ms)


def test_speech_that_may_be_echo_never_starts_a_turn_but_carries_one_on() -> None:
    detector = TurnDetector(TurnDetectionConfig(min_speech_ms=64, prefix_padding_ms=0))
    # Two seconds of what the VAD calls speech, none of it louder than the agent's echo: no turn.
    assert detector.feed([0.9] * 100, 20, [False] * 100) == []
    # A loud frame starts it; the quieter speech after it counts towards the 64 ms.
    events = detector.feed([0.9] * 4, 20, [True, False, False, False])
    assert events == [SpeechStarted(audio_start_ms=2000, speech_start_ms=2000)]
    with pytest.raises(TurnDetectionError):
        detector.feed([0.9, 0.9], 20, [True])


def test_speech_may_start_just_after_the_loud_onset_the_vad_scored_late() -> None:
    """The VAD's score crosses the threshold a frame after the loud onset it heard: still a start. Two frames
    of echo after a lone loud click are the limit; a third is not."""
    late = TurnDetector(TurnDetectionConfig(min_speech_ms=40, prefix_padding_ms=0))
    assert late.feed([0.3, 0.9, 0.9], 20, [True, False, False]) == [SpeechStarted(audio_start_ms=20,
                                                                                 speech_start_ms=20)]
    click = TurnDetector(TurnDetectionConfig(min_speech_ms=40, prefix_padding_ms=0))
    assert click.feed([0.0, 0.0, 0.0, 0.9, 0.9, 0.9], 20, [True, False, False, False, False, False]) == []


def test_speech_before_the_agent_talked_does_not_let_its_echo_start_a_turn() -> None:
    """Frames fed without loudness (the agent silent: no echo to rule out) give echo no head start once the
    agent talks."""
    detector = TurnDetector(TurnDetectionConfig(min_speech_ms=40, prefix_padding_ms=0))
    assert detector.feed([0.0] * 5, 20) == []
    assert detector.feed([0.9] * 10, 20, [False] * 10) == []

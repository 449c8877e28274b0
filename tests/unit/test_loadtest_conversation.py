"""One scripted caller, driven by hand: what its microphone sends, and the latencies it measures from
what comes back. No sockets and no clock: time is whatever the test says."""

from __future__ import annotations

import pytest

from voxgate.loadtest.conversation import Conversation, Phase, Timing
from voxgate.loadtest.scenario import BARGE_IN_LINE, REQUESTS, TOOL_REQUEST, Scenario

FRAME = 0.02
FRAMES = dict.fromkeys((*REQUESTS, TOOL_REQUEST, BARGE_IN_LINE), 50)  # every line takes 1 s


def caller(scenario: Scenario, hold_s: float = 30.0) -> Conversation:
    timing = Timing(frame_s=FRAME, hold_s=hold_s, quiet_s=0.5, first_quiet_s=1.0, reply_timeout_s=3.0)
    return Conversation(scenario, FRAMES, timing, start=100.0)


def speak_until_quiet(conversation: Conversation, now: float) -> tuple[float, float]:
    """Tick the microphone until a line has been said; (time of its first frame, time of its last)."""
    first = None
    while conversation.phase is not Phase.AWAIT_REPLY:
        frame = conversation.frame(now)
        if frame is not None and first is None:
            first = now
        now = round(now + FRAME, 6)
        assert now < 200, "the caller never spoke"
    assert first is not None
    return first, round(now - FRAME, 6)


def test_a_turn_waits_for_quiet_says_a_line_and_times_the_reply_from_the_end_of_speech() -> None:
    conversation = caller(Scenario.SPEAK)
    assert conversation.frame(100.02) is None  # silence at first: a phone agent may be greeting
    first, end = speak_until_quiet(conversation, 100.04)
    assert first == pytest.approx(101.0)  # first_quiet_s after the start
    assert conversation.frame(end + FRAME) is None  # silence again while it waits
    conversation.heard(end + 0.42, 0.2)
    assert conversation.first_response_ms == [pytest.approx(420.0)]
    conversation.heard(end + 0.5, 1.0)  # the rest of the reply: not another latency
    assert conversation.first_response_ms == [pytest.approx(420.0)]
    # The next request comes only after the reply has played out (end + 1.62) and quiet_s has passed.
    assert conversation.frame(end + 2.1) is None
    second_first, _ = speak_until_quiet(conversation, end + 2.13)
    assert second_first == pytest.approx(end + 2.13)
    assert conversation.unanswered == 0


def test_an_unanswered_turn_is_counted_and_the_call_goes_on() -> None:
    conversation = caller(Scenario.TOOL)
    _, end = speak_until_quiet(conversation, 100.0)
    assert conversation.frame(end + 3.1) is not None  # reply_timeout_s passed in silence: it asks again
    assert conversation.unanswered == 1 and conversation.phase is Phase.SAY
    conversation.heard(end + 3.2, 0.2)  # a late reply, heard while it talks, is not a first response
    assert conversation.first_response_ms == []


def test_a_barge_in_starts_at_the_first_reply_audio_and_is_timed_to_the_gateways_signal() -> None:
    conversation = caller(Scenario.BARGE_IN)
    _, end = speak_until_quiet(conversation, 100.0)
    conversation.heard(end + 0.4, 0.2)  # the reply's first audio: the caller talks over it
    assert conversation.phase is Phase.SAY
    onset, _ = speak_until_quiet(conversation, end + 0.42)
    # (speak_until_quiet ran the whole line; the signal is fed as if it came 0.25 s after the onset)
    marks = conversation.interrupted(onset - FRAME + 0.25)
    assert conversation.barge_in_ms == [pytest.approx(250.0)]
    assert marks == []
    conversation.interrupted(onset + 0.5)  # a second signal for the same barge-in does not count twice
    assert conversation.barge_in_ms == [pytest.approx(250.0)]


def test_a_barge_in_the_gateway_never_signals_is_missed() -> None:
    conversation = caller(Scenario.BARGE_IN)
    _, end = speak_until_quiet(conversation, 100.0)
    conversation.heard(end + 0.4, 0.2)
    _, barge_end = speak_until_quiet(conversation, end + 0.42)
    conversation.heard(barge_end + 0.4, 0.5)  # the barge-in line's own reply, and no signal before it
    assert conversation.barge_ins_missed == 1 and conversation.barge_in_ms == []
    assert len(conversation.first_response_ms) == 2


def test_a_caller_hangs_up_at_the_first_pause_after_its_hold_and_a_listener_never_speaks() -> None:
    listener = caller(Scenario.LISTEN, hold_s=5.0)
    ticks = 0
    while not listener.done:
        assert listener.frame(100.0 + ticks * FRAME) is None
        ticks += 1
    assert 250 <= ticks <= 252  # the hold, to a frame

    talker = caller(Scenario.SPEAK, hold_s=1.5)
    _, end = speak_until_quiet(talker, 100.0)  # still in its turn when the hold passes
    assert not talker.done
    talker.heard(end + 0.3, 0.2)
    talker.frame(end + 1.5)  # the reply has played and quiet_s passed: the pause after the hold
    assert talker.done


def test_marks_discarded_by_a_clear_come_back_to_be_echoed() -> None:
    conversation = caller(Scenario.SPEAK)
    conversation.heard(100.0, 1.0)
    conversation.playback.mark(100.0, "item:500")
    conversation.playback.mark(100.0, "item:1000")
    assert conversation.playback.due_marks(100.5) == []
    assert conversation.interrupted(100.2) == ["item:500", "item:1000"]
    assert not conversation.playback.playing(100.21)

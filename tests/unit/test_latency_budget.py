"""The latency budget of a turn, stage by stage, on a fake clock whose every tick is known."""

from __future__ import annotations

import pytest

from voxgate.observability.latency_budget import STAGES, BargeIn, LatencyBudget, TurnLatency


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += ms / 1000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def budget(clock: FakeClock) -> tuple[LatencyBudget, list[TurnLatency], list[BargeIn]]:
    turns: list[TurnLatency] = []
    barge_ins: list[BargeIn] = []
    return LatencyBudget(clock, on_turn=turns.append, on_barge_in=barge_ins.append), turns, barge_ins


def test_every_stage_of_a_heard_turn(clock: FakeClock) -> None:
    latency, turns, _ = budget(clock)
    latency.speech_ended(silence_ms=500)  # the VAD listened to 500 ms of silence before deciding
    for mark, ms in (("transcript", 120), ("first_token", 3), ("tts_first_audio", 80)):
        clock.advance(ms)
        latency.mark(mark)
    clock.advance(2)
    latency.sent("item_1", heard_known=True)
    assert turns == []  # waits for the caller to hear it
    clock.advance(40)
    latency.heard("item_other")  # another item's frame does not end this turn
    latency.heard("item_1")
    assert turns == [TurnLatency(1, {"vad": 500, "transcript": 120, "first_token": 3, "tts_first_audio": 80,
                                     "first_audio_sent": 2, "first_audio_heard": 40}, 745, True)]
    assert turns[0].stages.keys() == set(STAGES)


def test_marks_that_never_come_are_none_and_the_next_stage_spans_them(clock: FakeClock) -> None:
    latency, turns, _ = budget(clock)
    latency.speech_ended(silence_ms=0)
    clock.advance(300)
    latency.mark("first_token")  # an upstream model: no transcript of the gateway's own
    latency.mark("first_token")  # only the first time counts
    clock.advance(10)
    latency.sent(None, heard_known=False)  # a WebSocket client plays audio itself: the turn ends when sent
    assert turns[0].stages == {"vad": 0, "transcript": None, "first_token": 300, "tts_first_audio": None,
                               "first_audio_sent": 10, "first_audio_heard": None}
    assert (turns[0].total_ms, turns[0].heard) == (310, False)


def test_a_turn_never_answered_reports_nothing_and_a_cut_one_ends_at_sent(clock: FakeClock) -> None:
    latency, turns, barge_ins = budget(clock)
    latency.speech_ended(200)
    latency.mark("transcript")
    latency.speech_ended(200)  # the caller went on speaking: the first turn got no answer
    assert turns == []
    clock.advance(100)
    latency.sent("item_2", heard_known=True)
    started = clock()
    clock.advance(30)
    latency.barge_in(speech_ms=250, started=started)  # cut before its first frame was heard
    assert [(t.total_ms, t.heard) for t in turns] == [(300, False)]
    assert barge_ins == [BargeIn(stop_ms=280)]
    latency.heard("item_2")  # too late: the turn is closed
    assert len(turns) == 1 and turns[0].seq == 1


def test_marks_outside_a_turn_are_ignored_and_unknown_marks_refused(clock: FakeClock) -> None:
    latency, turns, _ = budget(clock)
    latency.mark("first_token")  # a greeting: no caller turn is open
    latency.sent("item_g", heard_known=False)
    latency.finish()
    assert turns == []
    with pytest.raises(ValueError):
        latency.mark("lunch")


def test_a_barge_in_the_agent_paused_for_counts_to_the_pause_not_the_confirmation(clock: FakeClock) -> None:
    """The agent stopped at the caller when the onset was heard (20 ms of speech, 2 ms to pause the line);
    the confirmation 60 ms later changes nothing the caller heard."""
    latency, _, barge_ins = budget(clock)
    held = clock()
    clock.advance(2)
    paused = clock()
    clock.advance(60)
    latency.barge_in(speech_ms=20, started=held, stopped=paused)
    assert barge_ins == [BargeIn(stop_ms=22)]

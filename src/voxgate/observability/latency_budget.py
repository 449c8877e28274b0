"""A turn's latency budget, stage by stage, as the caller lives it (sans-IO: the clock is passed in).

A turn runs from the end of the caller's speech to the first agent audio the caller hears. Its marks, in
order: the end of speech (the VAD decision, less the trailing silence it listened to), the VAD decision,
the transcript, the engine's first output (a brain's or upstream's first token), the first TTS audio, the
first audio sent to the transport, and the first audio heard at the caller (the playback record: carrier
marks, RTP and WebRTC frames released on the line's clock). A stage is the time between its mark and the
previous mark that happened; a mark that never comes (an upstream model transcribes nothing for the
gateway, a text reply has no TTS) leaves its stage None rather than a made-up zero.

A barge-in is timed too: from the start of the caller's speech to the agent's audio stopped at the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MARKS", "STAGES", "BargeIn", "LatencyBudget", "TurnLatency"]

# The marks of a turn, in the order they happen; each stage is named after the mark that ends it.
MARKS = ("speech_end", "vad", "transcript", "first_token", "tts_first_audio", "first_audio_sent",
         "first_audio_heard")
STAGES = MARKS[1:]


@dataclass(frozen=True, slots=True)
class TurnLatency:
    """One finished turn: each stage in ms (None: that mark never came) and the total the caller waited."""

    seq: int
    stages: dict[str, float | None]
    total_ms: float  # end of speech to first audio heard (or sent, where hearing is not known)
    heard: bool  # the total ends at the caller's ear, not at the transport
    started: float = field(default=0.0, compare=False)  # the clock when the caller's speech ended


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller spoke over the agent: how long until the agent's audio stopped at the caller."""

    stop_ms: float  # start of the caller's speech to playback stopped


class LatencyBudget:
    """One call's turns. `clock` is in seconds (time.monotonic, or a test's fake). A finished turn or
    barge-in goes to `on_turn` / `on_barge_in` (the session records and exports it)."""

    def __init__(self, clock: Callable[[], float], *, on_turn: Callable[[TurnLatency], None],
                 on_barge_in: Callable[[BargeIn], None]) -> None:
        self._clock = clock
        self._on_turn = on_turn
        self._on_barge_in = on_barge_in
        self._marks: dict[str, float] = {}
        self._awaiting_heard: str | None = None  # the item whose first heard frame ends the turn
        self._seq = 0

    def speech_ended(self, silence_ms: float) -> None:
        """The VAD decided the turn is over, `silence_ms` of caller audio after the speech ended. A turn
        still open (its audio never heard) is finished first."""
        self.finish()
        now = self._clock()
        self._marks = {"speech_end": now - max(0.0, silence_ms) / 1000.0, "vad": now}

    def mark(self, name: str) -> None:
        """`name` (one of MARKS) happened now; only its first time in a turn counts."""
        if name not in MARKS:
            raise ValueError(f"unknown latency mark {name!r}")
        if self._marks and name not in self._marks:
            self._marks[name] = self._clock()

    def sent(self, item_id: str | None, heard_known: bool) -> None:
        """The first agent audio (or text) of the turn left for the transport. Where the transport reports
        what the caller heard (`heard_known`), the turn waits for `heard(item_id)`; else it ends here."""
        if not self._marks or "first_audio_sent" in self._marks:
            return
        self.mark("first_audio_sent")
        if heard_known and item_id is not None:
            self._awaiting_heard = item_id
        else:
            self.finish()

    def heard(self, item_id: str) -> None:
        """The line released the first frame of `item_id` to the caller."""
        if self._awaiting_heard == item_id:
            self.mark("first_audio_heard")
            self.finish()

    def finish(self) -> None:
        """End the open turn with what it has (a barge-in, a new turn or the end of the call)."""
        marks, self._marks, self._awaiting_heard = self._marks, {}, None
        if "first_audio_sent" not in marks:
            return  # the agent never answered this turn: there is no latency to report
        self._seq += 1
        stages: dict[str, float | None] = {}
        previous = marks["speech_end"]
        for name in STAGES:
            at = marks.get(name)
            if at is None:
                stages[name] = None
                continue
            stages[name] = _ms(at - previous)
            previous = at
        heard = "first_audio_heard" in marks
        self._on_turn(TurnLatency(self._seq, stages, _ms(previous - marks["speech_end"]), heard,
                                  marks["speech_end"]))

    def close(self) -> None:
        """The call is over: its open turn ends with what it has, and nothing more is reported (the
        callbacks, which point back at the session, are let go)."""
        self.finish()
        self._on_turn = _ignore
        self._on_barge_in = _ignore

    def barge_in(self, speech_ms: float, started: float, stopped: float | None = None) -> None:
        """Playback was stopped; `started` is the clock when the stop was decided, `speech_ms` how much
        caller speech the VAD had heard by then, `stopped` the clock once the transport had stopped it (now
        if None; earlier where the agent was paused at the VAD's first trigger and this confirms it)."""
        self.finish()
        stop_ms = _ms((self._clock() if stopped is None else stopped) - started + max(0.0, speech_ms) / 1000.0)
        self._on_barge_in(BargeIn(stop_ms))

    def now(self) -> float:
        return self._clock()


def _ignore(_: object) -> None:
    """What a closed budget reports to."""


def _ms(seconds: float) -> float:
    """Seconds as ms to the microsecond (a clock's float noise is not a measurement), never negative."""
    return max(0.0, round(seconds * 1000.0, 3))

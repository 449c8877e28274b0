"""One caller's side of a scripted call, sans-IO: what the microphone sends next, and what it measured.

The shell calls `frame(now)` whenever the caller's next microphone frame is due (every 20 ms on a phone,
40 ms on the WebSocket) and sends what it returns: a frame of a spoken line, or silence (None). It
reports what came back: `heard(now, seconds)` for agent audio, `interrupted(now)` when the gateway
silenced the agent because the caller spoke over it (a carrier's `clear`, the Realtime
`input_audio_buffer.speech_started` a client stops its player on). Times are the shell's monotonic
clock in seconds; nothing here reads it.

A turn: wait until the agent has been quiet for `quiet_s` (longer at the start, where a phone agent
greets), say the next request, wait for the reply: first-response latency runs from the end of the
caller's speech (when its last frame was sent, i.e. captured) to the first agent audio after it. In a
barge-in call the caller starts its barge-in line at the first audio of the first reply; barge-in
latency runs from the onset of that speech to the gateway's signal. A call that has held `hold_s` ends
at the next pause between turns, and at `hard_stop` whatever it is doing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from voxgate.loadtest.carrier_line import LinePlayback
from voxgate.loadtest.scenario import BARGE_IN_LINE, Scenario, requests_of

__all__ = ["Conversation", "Frame", "Timing"]

Frame = tuple[str, int]  # (line, frame index within it)


@dataclass(frozen=True)
class Timing:
    frame_s: float  # the microphone's frame
    hold_s: float  # how long the caller stays on the line
    quiet_s: float = 0.8  # agent silence that ends its turn
    first_quiet_s: float = 2.5  # silence at the start before the caller speaks (a phone agent greets first)
    reply_timeout_s: float = 15.0  # a turn with no agent audio by then is unanswered

    @property
    def grace_s(self) -> float:
        """How long past `hold_s` a call may run to finish its turn."""
        return self.reply_timeout_s + 30.0


class Phase(Enum):
    SETTLE = "settle"  # waiting for the agent to be quiet before the next turn
    SAY = "say"
    AWAIT_REPLY = "await_reply"
    AWAIT_QUIET = "await_quiet"  # the reply is playing
    DONE = "done"


@dataclass
class Conversation:
    scenario: Scenario
    line_frames: Mapping[str, int]  # how many microphone frames each line takes
    timing: Timing
    start: float
    playback: LinePlayback = field(default_factory=LinePlayback)  # what the caller's speaker plays
    first_response_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    unanswered: int = 0  # turns the agent never answered within reply_timeout_s
    barge_ins_missed: int = 0  # barge-ins the gateway never signalled (the reply had ended)
    phase: Phase = Phase.SETTLE
    _requests: tuple[str, ...] = ()
    _turn: int = 0
    _line: str = ""
    _index: int = 0
    _speech_end: float = 0.0
    _deadline: float = 0.0
    _barge_onset: float | None = None
    _barge_signalled: bool = False
    _barged: bool = False

    def __post_init__(self) -> None:
        self._requests = requests_of(self.scenario)

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def hard_stop(self) -> float:
        return self.start + self.timing.hold_s + self.timing.grace_s

    def begin(self, now: float) -> None:
        """The call is connected (the webhook, the answer and the handshake took until now): the hold and
        the first wait for quiet count from here."""
        self.start = now

    def stop(self) -> None:
        """The run is over: hang up now (a turn in flight is not counted)."""
        self.phase = Phase.DONE

    # -- the microphone ----------------------------------------------------------------------------

    def frame(self, now: float) -> Frame | None:
        """The frame to send now: a line's next frame, or None for silence."""
        if self.phase is not Phase.DONE and now >= self.hard_stop:
            self.phase = Phase.DONE
        if self.phase is Phase.AWAIT_REPLY and now > self._deadline:
            self.unanswered += 1
            self.phase = Phase.SETTLE
        if self.phase is Phase.AWAIT_QUIET and (self._quiet(now, self.timing.quiet_s) or now > self._deadline):
            self.phase = Phase.SETTLE
        if self.phase is Phase.SETTLE:  # in the same frame as the pause that led here
            self._settle(now)
        if self.phase is not Phase.SAY:
            return None
        frame = (self._line, self._index)
        if self._index == 0 and self._line == BARGE_IN_LINE:
            self._barge_onset = now - self.timing.frame_s  # this frame was captured from then to now
        self._index += 1
        if self._index >= self.line_frames[self._line]:
            self._speech_end = now
            self._deadline = now + self.timing.reply_timeout_s
            self.phase = Phase.AWAIT_REPLY
        return frame

    def _settle(self, now: float) -> None:
        if now >= self.start + self.timing.hold_s:
            self.phase = Phase.DONE
        elif self._requests and self._quiet(now, self.timing.quiet_s if self._turn or self._agent_spoke else
                                            self.timing.first_quiet_s):
            self._say(self._requests[self._turn % len(self._requests)])
            self._turn += 1

    @property
    def _agent_spoke(self) -> bool:
        return self.playback.play_until > self.start

    def _say(self, line: str) -> None:
        self._line, self._index, self.phase = line, 0, Phase.SAY

    def _quiet(self, now: float, for_s: float) -> bool:
        """The agent has said nothing for `for_s` (counting from the call's start)."""
        return now - max(self.playback.play_until, self.start) >= for_s

    # -- what came back ----------------------------------------------------------------------------

    def heard(self, now: float, seconds: float) -> None:
        """Agent audio lasting `seconds` arrived."""
        self.playback.audio(now, seconds)
        if self.phase is not Phase.AWAIT_REPLY:
            return
        self.first_response_ms.append((now - self._speech_end) * 1000.0)
        if self._line == BARGE_IN_LINE and not self._barge_signalled:
            self.barge_ins_missed += 1
        if self.scenario is Scenario.BARGE_IN and not self._barged:
            self._barged = True
            self._say(BARGE_IN_LINE)  # over the reply's first audio
        else:
            self._deadline = now + self.timing.reply_timeout_s + 60.0  # a reply that never ends moves on
            self.phase = Phase.AWAIT_QUIET

    def interrupted(self, now: float) -> list[str]:
        """The gateway silenced the agent for the caller's speech; returns the marks the line discards."""
        if self._barge_onset is not None and not self._barge_signalled:
            self._barge_signalled = True
            self.barge_in_ms.append((now - self._barge_onset) * 1000.0)
        return self.playback.clear(now)

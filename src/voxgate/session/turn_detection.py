"""Turn detection: when the caller starts and stops talking, from per-frame speech probabilities.

`TurnDetector` is sans-IO: the caller feeds it the probabilities a VAD produced for consecutive frames
of the input stream (`voxgate.engines.local.vad`) and gets `SpeechStarted` / `SpeechStopped` events
back. It reads no clock: time is the number of frames fed times their length, counted from the start
of the input stream, which is what OpenAI's `audio_start_ms` / `audio_end_ms` measure.

Semantics follow OpenAI's `server_vad`:

- speech starts at the first frame whose probability reaches `threshold`; the event reports that time
  minus `prefix_padding_ms` (floored at 0), the point from which the turn's audio is kept;
- speech stops once `silence_duration_ms` of silence has followed it; the event reports the time of
  that decision (so it includes the silence, as OpenAI's does) and, separately, when speech ended.

Local additions, each there for a reason:

- `min_speech_ms`: speech must last this long before `SpeechStarted` is declared (the reported start
  is still the first speech frame). During agent playback a click or a cough would otherwise cut the
  agent off.
- Echo: the caller may say, per frame, which frames are louder than the agent's own echo could be
  (`feed(..., loud=...)`, see `voxgate.session.echo_gate`). Speech then starts only at or just after
  (`LOUD_ONSET_FRAMES`) a loud frame: echo alone never starts a turn, however long it lasts; once
  started, quieter speech frames carry the turn on.
- Hysteresis (as Silero's own segmenter does): once speaking, a frame only counts as silence below
  `threshold - 0.15`. Frames in between (a trailing "mmm", breath, a soft syllable) neither count as
  speech nor start the silence clock, so a phrase that trails off is not cut mid-word.
- `semantic_vad`: OpenAI decides "has the caller finished?" with a model. Locally the caller may pass
  a hint for the current pause through `hint_phrase_finished()` — typically `phrase_looks_finished()`
  on a transcript of the audio so far — and the silence required depends on the eagerness and on that
  hint: short after a finished sentence, long after "...and", medium when unknown. The long waits are
  OpenAI's documented maxima (8 s / 4 s / 2 s for low / medium / high). A hint describes the words so
  far, so the next speech frame clears it.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, cast

Eagerness = Literal["low", "medium", "high", "auto"]
HYSTERESIS = 0.15
# Speech may start this many frames after a frame louder than any echo: the VAD's score crosses the
# threshold a frame or two after the onset it heard, when the syllable may already be fading.
LOUD_ONSET_FRAMES = 2

# Silence (ms) a semantic_vad turn needs before it ends: (phrase finished, unknown, phrase unfinished).
SEMANTIC_SILENCE_MS: dict[str, tuple[float, float, float]] = {
    "high": (300.0, 500.0, 2000.0),
    "medium": (500.0, 800.0, 4000.0),
    "low": (800.0, 1500.0, 8000.0),
}


class TurnDetectionError(ValueError):
    """A bad configuration or bad input to the turn detector."""


@dataclass(frozen=True)
class TurnDetectionConfig:
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: float = 300.0
    silence_duration_ms: float = 500.0  # server_vad only
    min_speech_ms: float = 0.0
    eagerness: Eagerness = "auto"  # semantic_vad only

    def __post_init__(self) -> None:
        if self.type not in ("server_vad", "semantic_vad"):
            raise TurnDetectionError(f"type must be server_vad or semantic_vad, not {self.type!r}")
        if not (0.0 <= self.threshold <= 1.0):
            raise TurnDetectionError(f"threshold must be within 0..1, got {self.threshold}")
        for name in ("prefix_padding_ms", "silence_duration_ms", "min_speech_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise TurnDetectionError(f"{name} must be a finite number >= 0, got {value}")
        if self.eagerness not in ("low", "medium", "high", "auto"):
            raise TurnDetectionError(f"eagerness must be low, medium, high or auto, not {self.eagerness!r}")

    @classmethod
    def from_openai(cls, turn_detection: Mapping[str, Any], **local: Any) -> TurnDetectionConfig:
        """From a session's `turn_detection` object; fields that are not turn timing are ignored.

        `local` sets what OpenAI has no field for, e.g. `min_speech_ms` from the agent's barge-in setting.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in turn_detection.items() if k in known and v is not None}
        return cls(**{**values, **local})

    def required_silence_ms(self, phrase_finished: bool | None) -> float:
        """How long a pause must last to end the turn."""
        if self.type == "server_vad":
            return self.silence_duration_ms
        finished, unknown, unfinished = SEMANTIC_SILENCE_MS["medium" if self.eagerness == "auto" else self.eagerness]
        if phrase_finished is None:
            return unknown
        return finished if phrase_finished else unfinished


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # first speech frame minus prefix padding, floored at 0 (OpenAI's field)
    speech_start_ms: int  # the first speech frame itself


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int  # when the stop was decided, trailing silence included (OpenAI's field)
    speech_end_ms: int  # end of the last speech frame


TurnEvent = SpeechStarted | SpeechStopped


class TurnDetector:
    """Speech start/stop events from per-frame speech probabilities; see the module docstring."""

    def __init__(self, config: TurnDetectionConfig | None = None) -> None:
        self.config = config or TurnDetectionConfig()
        self._position_ms = 0.0
        self.reset()

    @property
    def position_ms(self) -> float:
        """Stream time of the end of the last frame fed."""
        return self._position_ms

    @property
    def speaking(self) -> bool:
        """True between `SpeechStarted` and `SpeechStopped`."""
        return self._speaking

    @property
    def onset_pending(self) -> bool:
        """A frame has crossed the threshold, and `min_speech_ms` has yet to say whether speech started."""
        return self._candidate_start is not None

    def reset(self) -> None:
        """Forget any speech in progress, silently. The stream clock keeps running."""
        self._speaking = False
        self._candidate_start: float | None = None  # first speech frame of a not-yet-declared start
        self._last_speech_end = 0.0
        self._quiet_since: float | None = None  # start of the current pause (below the low threshold)
        self._phrase_finished: bool | None = None
        self._since_loud = LOUD_ONSET_FRAMES + 1  # frames since the last one louder than any echo

    def update(self, config: TurnDetectionConfig) -> None:
        """Apply a new configuration; speech in progress continues under the new rules."""
        self.config = config

    def hint_phrase_finished(self, finished: bool | None) -> None:
        """Tell a semantic_vad detector whether the words so far look like a whole phrase."""
        if self._speaking:
            self._phrase_finished = finished

    def feed(self, probs: list[float], frame_ms: float, loud: list[bool] | None = None) -> list[TurnEvent]:
        """Advance over consecutive frames of `frame_ms` each; return the events they caused, in order.
        `loud`, one per frame: whether it is louder than any echo of the agent (None: every frame is)."""
        if not (math.isfinite(frame_ms) and frame_ms > 0):
            raise TurnDetectionError(f"frame_ms must be a finite number > 0, got {frame_ms}")
        # Checked as objects: a caller's list may hold anything (compiled, a `float` loop variable would
        # raise TypeError itself). A float is tested first: the ABC's isinstance costs more than the step.
        for p in cast("list[object]", probs):
            if not ((type(p) is float or isinstance(p, numbers.Real)) and 0.0 <= float(p) <= 1.0):
                raise TurnDetectionError(f"speech probabilities must be numbers within 0..1, got {p!r}")
        if loud is not None and len(loud) != len(probs):
            raise TurnDetectionError(f"{len(loud)} loudness flags for {len(probs)} frames")
        events: list[TurnEvent] = []
        for index, p in enumerate(probs):
            start = self._position_ms
            self._position_ms = end = start + frame_ms
            if loud is None:  # no echo to rule out; and nothing of this carries into a time with echo
                self._since_loud = LOUD_ONSET_FRAMES + 1
                may_start = True
            else:
                self._since_loud = 0 if loud[index] else self._since_loud + 1
                may_start = self._since_loud <= LOUD_ONSET_FRAMES
            event = self._step(float(p), start, end, may_start)
            if event is not None:
                events.append(event)
        return events

    def _step(self, p: float, start: float, end: float, loud: bool) -> TurnEvent | None:
        config = self.config
        high = config.threshold
        low = max(high - HYSTERESIS, 0.0)
        if not self._speaking:
            if self._candidate_start is None:
                if p < high or not loud:  # silence, or speech that may be the agent's echo
                    return None
                self._candidate_start = start
            elif p < low:  # too short: an echo blip or a cough
                self._candidate_start = None
                return None
            if end - self._candidate_start < config.min_speech_ms:
                return None
            self._speaking = True
            self._last_speech_end = end
            self._quiet_since = None
            self._phrase_finished = None
            first = self._candidate_start
            self._candidate_start = None
            return SpeechStarted(
                audio_start_ms=round(max(0.0, first - config.prefix_padding_ms)),
                speech_start_ms=round(first),
            )
        if p >= high:
            self._last_speech_end = end
            self._quiet_since = None
            self._phrase_finished = None  # more words came: a hint about the words so far is stale
        elif p < low and self._quiet_since is None:
            self._quiet_since = start
        if self._quiet_since is None or end - self._quiet_since < config.required_silence_ms(self._phrase_finished):
            return None
        self._speaking = False
        self._quiet_since = None
        self._phrase_finished = None
        return SpeechStopped(audio_end_ms=round(end), speech_end_ms=round(self._last_speech_end))


# Words after which an English phrase is almost never over: conjunctions, articles, prepositions,
# fillers. Whisper ends nearly every segment with a full stop, so punctuation alone says little.
_CONTINUATION_WORDS = frozenset(
    """
    and or but so because if then than that which who whose when while although though unless until
    the a an my your our their his her its this these those some any no every
    to of for with from at in on by about into onto over under between after before as like
    is are was were am be been being do does did have has had will would can could should shall may
    might must i we you he she they it um uh er erm hmm uhm mm well also plus
    """.split()
)
_WORD = re.compile(r"[a-z']+|\d+")


def phrase_looks_finished(text: str) -> bool | None:
    """Guess whether a transcript ends where a speaker would stop: None for no words at all."""
    stripped = text.strip()
    words = _WORD.findall(stripped.lower())
    if not words:
        return None
    if stripped.endswith((",", "...", "…", "-", "—", ":", ";")):
        return False
    return words[-1] not in _CONTINUATION_WORDS

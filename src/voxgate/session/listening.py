"""Listening to the caller: decode → VAD → turn events → speculation → commit.

Caller audio is decoded into the input buffer and scored by the VAD; the `TurnDetector` turns the scores
into speech started/stopped, with the buffer cut to exactly the prefix padding before the speech. During
a turn's first pause it starts transcribing speculatively; outside speech it trims the idle line and
watches the idle timeout. What a turn means for the call (barge-in, the user item, a response) is the
session's: listening asks for it through `ListeningHooks`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voxgate.audio.formats import AudioFormat, AudioFormatError, InputDecoder, encode_pcm
from voxgate.audio.resample import StreamResampler
from voxgate.protocol import server_events as se
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.ids import new_id
from voxgate.protocol.session_config import SessionConfig
from voxgate.session.echo_gate import EchoGate
from voxgate.session.turn_detection import (
    SpeechStarted,
    SpeechStopped,
    TurnDetectionConfig,
    TurnDetector,
    TurnEvent,
    phrase_looks_finished,
)

STT_RATE = 16000  # what the engine's transcribe() takes
VAD_OFFLOAD_MS = 250
SPECULATE_AFTER_FRAMES = 4  # ~130 ms of pause before transcribing speculatively
# Silence appended to a speculative decode. Whisper learnt utterances that end in a pause: cut ~130 ms after
# the last word, tiny.en hears a trailing "and" as "end." (a finished phrase, so semantic_vad ended the turn
# early), and with this much silence after it, as the turn's final decode has, it hears "and...".
SPECULATIVE_PAUSE_MS = 300
QUIET_MIN_SPEECH_MS = 60  # speech that starts a turn while the agent is silent
# The agent pauses on the first trigger only where the check is shorter than this: a longer one would
# outlast the line's hold (`Playout`'s MAX_HOLD_S, 0.3 s), and the agent then stops at the confirmation.
HOLD_UP_TO_MIN_SPEECH_MS = 200


class VadStream(Protocol):
    frame_ms: float  # each probability `feed` returns covers this much audio

    def use_rate(self, input_rate: int) -> int:
        """The rate the stream will be fed at for caller audio arriving at `input_rate` (its own if it can
        take that one: a phone's 8 kHz then needs no resampling per frame); resets the stream."""
        ...

    def feed(self, pcm: np.ndarray) -> list[float]: ...

    def reset(self) -> None: ...


class Transcriber(Protocol):
    """The engine, as far as listening is concerned: speculative transcription of a turn in progress."""

    transcribes: bool

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str | None: ...


class ListeningHooks(Protocol):
    """What listening asks of the session it listens for."""

    @property
    def config(self) -> SessionConfig: ...

    def emit(self, event: se.ServerEvent) -> None: ...

    def agent_audible(self) -> bool:
        """Is the agent talking (generating, or still playing out at the caller)?"""
        ...

    async def barge_in(self) -> None:
        """The caller started speaking, and `interrupt_response` is on."""
        ...

    async def hold_agent(self) -> None:
        """The VAD's first trigger while the agent is audible, and `interrupt_response` is on: pause the agent
        at the caller until `min_speech_ms` says whether this is a barge-in."""
        ...

    async def resume_agent(self) -> None:
        """It was not speech (a cough, a click): play on where the agent paused."""
        ...

    def turn_ended(self, item_id: str) -> None:
        """Speech stopped (announced as `item_id`): commit the turn and maybe respond."""
        ...

    def idle_timed_out(self) -> None:
        """The caller has said nothing for `idle_timeout_ms` since the agent last spoke."""
        ...


class _Released:
    """The hooks of a listener whose session has closed: its last config, and nothing happens."""

    def __init__(self, config: SessionConfig) -> None:
        self._config = config

    @property
    def config(self) -> SessionConfig:
        return self._config

    def emit(self, event: se.ServerEvent) -> None:
        pass

    def agent_audible(self) -> bool:
        return False

    async def barge_in(self) -> None:
        pass

    async def hold_agent(self) -> None:
        pass

    async def resume_agent(self) -> None:
        pass

    def turn_ended(self, item_id: str) -> None:
        pass

    def idle_timed_out(self) -> None:
        pass


@dataclass
class InputBuffer:
    """Audio appended since the last commit or clear, as wire bytes and as PCM at the VAD's rate.

    PCM a transport decoded itself (a browser's Opus) has no wire bytes: it is put into the input format
    only when a commit takes it (`wire_bytes`), so the idle line trimmed away never is. `wire` covers the
    first `wire_samples` of the PCM."""

    rate: int
    wire: bytearray = field(default_factory=bytearray)
    pcm: list[np.ndarray] = field(default_factory=list)
    pcm_samples: int = 0
    wire_samples: int = 0
    start_ms: float = 0.0  # stream time of the buffer's first sample

    def append(self, pcm: np.ndarray, wire: bytes | None, fmt: AudioFormat) -> None:
        if wire is not None:
            if self.wire_samples < self.pcm_samples:  # PCM before it: its wire bytes first, in order
                self._encode_rest(fmt)
            self.wire.extend(wire)
            self.wire_samples += pcm.size
        self.pcm.append(pcm)
        self.pcm_samples += pcm.size

    def wire_bytes(self, fmt: AudioFormat) -> bytes:
        """The buffer in the input format `fmt`."""
        if self.wire_samples < self.pcm_samples:
            self._encode_rest(fmt)
        return bytes(self.wire)

    def _encode_rest(self, fmt: AudioFormat) -> None:
        rest = self.pcm_array()[self.wire_samples:]
        if fmt.rate != self.rate:  # once per commit, not per frame: a filter that holds nothing back
            resampler = StreamResampler(self.rate, fmt.rate, quality="HQ")
            rest = np.concatenate((resampler.process(rest), resampler.flush()))
        self.wire.extend(encode_pcm(rest, fmt))
        self.wire_samples = self.pcm_samples

    def duration_ms(self) -> float:
        return self.pcm_samples * 1000.0 / self.rate

    def pcm_array(self) -> np.ndarray:
        if len(self.pcm) > 1:  # joined once: a commit, a speculation and the wire bytes all read it
            self.pcm = [np.concatenate(self.pcm)]
        return self.pcm[0] if self.pcm else np.zeros(0, dtype=np.int16)

    def drop_before(self, stream_ms: float, fmt: AudioFormat) -> None:
        """Forget the audio before stream time `stream_ms`: the PCM to the sample, the wire bytes
        (in `fmt`, maybe at another rate) to the same instant."""
        samples = min(round((stream_ms - self.start_ms) * self.rate / 1000), self.pcm_samples)
        if samples <= 0:
            return
        dropped_ms = samples * 1000 / self.rate
        pcm = self.pcm_array()[samples:]
        if samples >= self.wire_samples:
            self.wire.clear()
        else:
            wire_bytes = round(dropped_ms * fmt.rate / 1000) * fmt.bytes_per_sample
            del self.wire[:wire_bytes]
        self.wire_samples = max(0, self.wire_samples - samples)
        self.pcm = [pcm]
        self.pcm_samples = pcm.size
        self.start_ms += dropped_ms

    def speech_pcm(self) -> np.ndarray:
        """The buffer at STT_RATE, resampled in one go when the VAD reads another rate (once per turn,
        not once per frame)."""
        pcm = self.pcm_array()
        if self.rate == STT_RATE:
            return pcm
        resampler = StreamResampler(self.rate, STT_RATE)
        return np.concatenate((resampler.process(pcm), resampler.flush()))


@dataclass(frozen=True)
class Utterance:
    """The input buffer as a commit takes it."""

    wire: bytes  # as the caller sent it, in the input format
    speech_pcm: np.ndarray | None  # at STT_RATE, for an engine that transcribes
    speculation: asyncio.Task[str | None] | None  # a transcription of it already under way


class Listening:
    def __init__(self, hooks: ListeningHooks, transcriber: Transcriber, vad: VadStream | None, *,
                 barge_in_min_speech_ms: int, max_buffer_ms: int, echo_margin_db: float | None = None) -> None:
        self._hooks = hooks
        self._transcriber = transcriber
        self._vad = vad
        self._barge_in_min_speech_ms = barge_in_min_speech_ms
        self._max_buffer_ms = max_buffer_ms
        self._echo = EchoGate(echo_margin_db)
        config = hooks.config
        self._rate = self._use_rate(config.input_format.rate)
        self._decoder = InputDecoder(config.input_format, self._rate)
        self._buffer = InputBuffer(self._rate)
        self.stream_ms = 0.0  # total caller audio received, the clock of audio_start/end_ms
        # Stream times of the last turn's first speech frame and of its end (the latency budget reads them).
        self.speech_started_ms = 0.0
        self.speech_ended_ms = 0.0
        self._detector = self._make_detector(config.turn_detection)
        # What the scored frames read of the config, kept here: SessionConfig is interpreted Python, where
        # each attribute costs a dictionary lookup, 33 times a second a call (`reconfigure` sets them again).
        self._input_format = config.input_format
        self._idle_timeout_ms = self._idle_timeout(config)
        self._speech_item_id: str | None = None  # the user item a speech_started announced
        self._detector_origin_ms = 0.0
        self._idle_since_ms: float | None = None  # stream time the line went quiet after the agent spoke
        self._quiet_frames = 0
        self._speculation: asyncio.Task[str | None] | None = None
        self._holding = False  # the agent is paused at the caller while an onset is checked (`hold_agent`)
        self.tap: Callable[[np.ndarray, int], None] | None = None  # hears every decoded frame (the recording)
        self._pcm_resampler: StreamResampler | None = None  # PCM a transport decoded at another rate

    # -- what the session tells it ----------------------------------------------------------------

    def reconfigure(self, old: SessionConfig, new: SessionConfig) -> None:
        """A session update: a new input format or turn detection takes effect from the next audio."""
        if new.input_format != old.input_format:
            rate = self._use_rate(new.input_format.rate)
            if rate != self._rate:  # the audio buffered so far is at the old rate: start over
                self._rate = rate
                self._buffer = InputBuffer(rate, start_ms=self.stream_ms)
            self._decoder = InputDecoder(new.input_format, rate)
        self._input_format = new.input_format
        self._idle_timeout_ms = self._idle_timeout(new)
        if new.turn_detection != old.turn_detection:
            self._detector = self._make_detector(new.turn_detection)
            self._detector_origin_ms = self.stream_ms  # its clock starts now; events are in stream time

    def agent_audibility_changed(self) -> None:
        """A response started or ended: barge-in needs longer speech while the agent talks."""
        if self._detector is not None:
            self._detector.update(dataclasses.replace(self._detector.config, min_speech_ms=self._min_speech_ms()))

    def agent_spoke(self, pcm: np.ndarray, rate: int) -> None:
        """Audio on its way to the caller: how loud its echo in the caller's line can be."""
        self._echo.agent_spoke(pcm, rate)

    def agent_finished(self) -> None:
        """A response ended: the idle timeout counts from here."""
        self._idle_since_ms = self.stream_ms

    def buffered_ms(self) -> float:
        return self._buffer.duration_ms()

    def take(self) -> Utterance:
        """Empty the buffer into an utterance for a commit."""
        utterance = Utterance(wire=self._buffer.wire_bytes(self._input_format),
                              speech_pcm=self._buffer.speech_pcm() if self._transcriber.transcribes else None,
                              speculation=self._speculation)
        self._speculation = None
        self.clear()
        return utterance

    def clear(self) -> None:
        self._buffer = InputBuffer(self._rate, start_ms=self.stream_ms)
        self._speech_item_id = None
        if self._speculation is not None:
            self._speculation.cancel()
            self._speculation = None

    def drop_speech(self) -> None:
        """What the VAD heard since the last turn was a key's tone, not words: a PCI entry's in-band DTMF,
        which carriers pass on beside the key event. A turn it started is dropped (`input_audio_buffer.
        cleared`, no item, no response), and a run of tones never adds up to one."""
        if self._detector is None:
            return
        speaking = self._detector.speaking
        self._detector.reset()
        if speaking:
            self.clear()
            self._hooks.emit(se.InputAudioBufferCleared())

    def close(self) -> None:
        if self._speculation is not None:
            self._speculation.cancel()

    def release(self) -> None:
        """The session has closed: let go of it (the hooks are the session) and of the recording's tap."""
        self._hooks = _Released(self._hooks.config)
        self.tap = None

    # -- caller audio -----------------------------------------------------------------------------

    @property
    def rate(self) -> int:
        """The rate the caller is listened to at (the VAD's): what a transport that decodes the caller's
        audio itself (a browser's Opus) decodes to, so that nothing resamples it frame by frame."""
        return self._rate

    def append_nowait(self, data: bytes) -> Awaitable[None] | None:
        """See `Session.append_audio_nowait`."""
        try:
            pcm = self._decoder.decode(data)
        except AudioFormatError as exc:
            raise RealtimeError("invalid_audio", str(exc), param="audio") from exc
        return self._hear(pcm, data)

    def append_pcm_nowait(self, pcm: np.ndarray, rate: int) -> Awaitable[None] | None:
        """See `Session.append_pcm_nowait`."""
        if rate != self._rate:
            resampler = self._pcm_resampler
            if resampler is None or resampler.in_rate != rate or resampler.out_rate != self._rate:
                resampler = self._pcm_resampler = StreamResampler(rate, self._rate)
            pcm = resampler.process(pcm)
        return self._hear(pcm, None)

    def _hear(self, pcm: np.ndarray, wire: bytes | None) -> Awaitable[None] | None:
        """A frame at the listening rate (and as the caller sent it, where it came as wire bytes)."""
        if not pcm.size:
            return None
        if self.tap is not None:
            self.tap(pcm, self._rate)
        self._buffer.append(pcm, wire, self._input_format)
        self.stream_ms += pcm.size * 1000.0 / self._rate
        if self._detector is not None and self._vad is not None:
            audible = self._hooks.agent_audible()
            if not audible:
                self._echo.agent_quiet()
            if self._detector.config.min_speech_ms != self._min_speech_ms(audible):
                self.agent_audibility_changed()
            loud = self._echo.gate(pcm)  # which frames are louder than the agent's echo (None: no gate)
            if pcm.size >= self._rate * VAD_OFFLOAD_MS // 1000:
                # A burst of audio (a client sending faster than real time) is scored off the loop;
                # a 20-100 ms frame costs ~0.1 ms, less than the thread hop, so it stays inline.
                return self._score_offloaded(pcm, loud)
            return self._take_scores(self._vad.feed(pcm), loud)
        self._check_buffer_size()
        return None

    def _make_detector(self, td: dict[str, Any] | None) -> TurnDetector | None:
        if td is None:
            return None
        return TurnDetector(TurnDetectionConfig.from_openai(td, min_speech_ms=self._min_speech_ms()))

    def _use_rate(self, input_rate: int) -> int:
        """The VAD's rate for this input (its stream reset), and the echo gate aligned with its frames."""
        if self._vad is None:
            return STT_RATE
        rate = self._vad.use_rate(input_rate)
        self._echo.use_frames(round(self._vad.frame_ms * rate / 1000))
        return rate

    @staticmethod
    def _idle_timeout(config: SessionConfig) -> int | None:
        timeout = (config.turn_detection or {}).get("idle_timeout_ms")
        return int(timeout) if timeout else None

    def _min_speech_ms(self, audible: bool | None = None) -> int:
        # Short noises must not cut the agent off: while it is talking, the caller has to speak for a while
        # before it counts as barge-in (its echo is the echo gate's to rule out).
        audible = self._hooks.agent_audible() if audible is None else audible
        return self._barge_in_min_speech_ms if audible else QUIET_MIN_SPEECH_MS

    async def _score_offloaded(self, pcm: np.ndarray, loud: list[bool] | None) -> None:
        assert self._vad is not None
        probs = await asyncio.get_running_loop().run_in_executor(None, self._vad.feed, pcm)
        rest = self._take_scores(probs, loud)
        if rest is not None:
            await rest

    def _take_scores(self, probs: list[float], loud: list[bool] | None = None) -> Awaitable[None] | None:
        """Turn the VAD's scores into turn events; an awaitable when one of them starts a turn. `loud`: which
        frames are louder than the agent's echo (None: no echo to rule out)."""
        assert self._detector is not None
        assert self._vad is not None
        if loud is not None and len(loud) != len(probs):  # a VAD whose frames are not the ones counted
            loud = None
        if not probs:  # a 20 ms frame that completes no 30 ms VAD frame: nothing to turn into events
            self._after_scores(probs)
            return None
        turn_events = self._detector.feed(probs, self._vad.frame_ms, loud)
        hold = self._hold_change()
        if hold is not None or any(isinstance(turn_event, SpeechStarted) for turn_event in turn_events):
            return self._take_turn_events(turn_events, probs, hold)
        for turn_event in turn_events:  # only ends of speech: nothing to await
            if isinstance(turn_event, SpeechStopped):
                self._on_speech_stopped(self._detector_origin_ms + turn_event.audio_end_ms,
                                        self._detector_origin_ms + turn_event.speech_end_ms)
        self._after_scores(probs)
        return None

    def _hold_change(self) -> bool | None:
        """Whether to pause the agent at the caller (True) or play on (False) after the frames just scored:
        the seed's "cancel on the first VAD trigger", with `min_speech_ms` still deciding what a barge-in is.
        None: no change."""
        assert self._detector is not None
        pending = self._detector.onset_pending
        if pending == self._holding:
            return None
        if self._holding:
            self._holding = False
            return False
        td = self._hooks.config.turn_detection or {}
        if (not td.get("interrupt_response", True) or self._detector.config.min_speech_ms > HOLD_UP_TO_MIN_SPEECH_MS
                or not self._hooks.agent_audible()):
            return None
        self._holding = True
        return True

    async def _take_turn_events(self, turn_events: list[TurnEvent], probs: list[float],
                                hold: bool | None = None) -> None:
        if hold:
            await self._hooks.hold_agent()
        for turn_event in turn_events:
            if isinstance(turn_event, SpeechStarted):
                await self._on_speech_started(self._detector_origin_ms + turn_event.audio_start_ms)
            elif isinstance(turn_event, SpeechStopped):
                self._on_speech_stopped(self._detector_origin_ms + turn_event.audio_end_ms,
                                        self._detector_origin_ms + turn_event.speech_end_ms)
        if hold is False:  # after a barge-in's clear this is moot: the clear ended the hold
            await self._hooks.resume_agent()
        self._after_scores(probs)

    def _after_scores(self, probs: list[float]) -> None:
        if self._speech_item_id is None:
            self._trim_idle_buffer()
            self._check_idle()
        else:
            self._speculate(probs)
        self._check_buffer_size()

    def _check_buffer_size(self) -> None:
        if self._buffer.duration_ms() > self._max_buffer_ms:
            if self._speech_item_id is not None:
                # A monologue longer than the buffer: end the turn here rather than grow without bound.
                self._on_speech_stopped(self.stream_ms)
            else:
                self.clear()
                raise RealtimeError("input_audio_buffer_full",
                                    f"The input audio buffer holds at most {self._max_buffer_ms // 1000} s; "
                                    "commit or clear it.", param="audio")

    def _check_idle(self) -> None:
        """idle_timeout_ms: the caller has said nothing for that long since the agent last spoke."""
        timeout = self._idle_timeout_ms
        if not timeout or self._idle_since_ms is None:
            return
        if self._hooks.agent_audible():
            self._idle_since_ms = self.stream_ms  # the silence starts when the agent stops talking
            return
        if self.stream_ms - self._idle_since_ms < timeout:
            return
        start, self._idle_since_ms = self._idle_since_ms, None  # once per silence
        item_id = new_id("item")
        self._hooks.emit(se.InputAudioBufferTimeoutTriggered(audio_start_ms=int(start),
                                                             audio_end_ms=int(self.stream_ms), item_id=item_id))
        self._hooks.idle_timed_out()

    def _speculate(self, probs: list[float]) -> None:
        """Start transcribing at the first real pause, before silence_duration_ms confirms the turn.

        The turn usually does end there, so the transcript is ready (or nearly) when it is confirmed,
        taking most of the STT time off the caller's wait. Speech after the pause voids the guess.
        """
        assert self._detector is not None
        threshold = self._detector.config.threshold
        for p in probs:
            if p >= threshold:
                self._quiet_frames = 0
                if self._speculation is not None:
                    self._speculation.cancel()
                    self._speculation = None
            elif p < threshold - 0.15:
                self._quiet_frames += 1
        if (self._speculation is None and self._quiet_frames >= SPECULATE_AFTER_FRAMES
                and self._transcriber.transcribes):
            pcm = self._buffer.speech_pcm()
            pause = np.zeros(STT_RATE * SPECULATIVE_PAUSE_MS // 1000, dtype=np.int16)
            task = asyncio.get_running_loop().create_task(self._transcriber.transcribe(np.concatenate((pcm, pause))))
            task.add_done_callback(self._hint_phrase)
            self._speculation = task
            if self._detector.config.type == "semantic_vad":
                # Until the words are known, assume the caller may go on; they end the turn once read.
                self._detector.hint_phrase_finished(False)

    def _hint_phrase(self, task: asyncio.Task[str | None]) -> None:
        """semantic_vad: words that trail off ("...and", "um") earn a longer wait than a whole phrase."""
        if task.cancelled() or task.exception() is not None or self._detector is None:
            return
        text = task.result()
        if text is not None and self._speculation is task:
            self._detector.hint_phrase_finished(phrase_looks_finished(text))

    def _trim_idle_buffer(self) -> None:
        """Outside speech, an idle line must not grow memory: keep what a turn starting now could need
        (its prefix padding, the speech it needs to be declared, and a VAD frame still being scored).
        The turn itself is cut to its exact start when it is declared (`_on_speech_started`)."""
        assert self._detector is not None and self._vad is not None
        config = self._detector.config
        keep_ms = config.prefix_padding_ms + config.min_speech_ms + self._vad.frame_ms
        if self._buffer.duration_ms() - keep_ms < 1000.0:  # trim in steps, not on every frame
            return
        self._buffer.drop_before(self.stream_ms - keep_ms, self._input_format)

    async def _on_speech_started(self, audio_start_ms: float) -> None:
        # The turn's audio starts where the event says: exactly the prefix padding before the first
        # speech frame, whatever the idle trimming happened to leave.
        self._buffer.drop_before(audio_start_ms, self._input_format)
        padding = self._detector.config.prefix_padding_ms if self._detector is not None else 0.0
        self.speech_started_ms = min(self.stream_ms, audio_start_ms + padding)
        self._speech_item_id = new_id("item")
        self._idle_since_ms = None
        self._quiet_frames = 0
        self._hooks.emit(se.InputAudioBufferSpeechStarted(audio_start_ms=int(audio_start_ms),
                                                          item_id=self._speech_item_id))
        td = self._hooks.config.turn_detection or {}
        if td.get("interrupt_response", True):
            await self._hooks.barge_in()

    def _on_speech_stopped(self, audio_end_ms: float, speech_end_ms: float | None = None) -> None:
        item_id = self._speech_item_id or new_id("item")
        self._hooks.emit(se.InputAudioBufferSpeechStopped(audio_end_ms=int(audio_end_ms), item_id=item_id))
        self._speech_item_id = None
        self.speech_ended_ms = audio_end_ms if speech_end_ms is None else speech_end_ms
        self._hooks.turn_ended(item_id)

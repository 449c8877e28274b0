"""The Session: one call's conversation, input buffer, turn-taking and responses.

A transport feeds it client events (`handle_message`) and caller audio (`append_audio`) and drains
its `outbound` queue; an engine produces the content of each response. Everything a call does is
decided here, so every transport gets the same barge-in, truncation, tools and bookkeeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voxgate.agents import AgentConfig
from voxgate.audio.formats import AudioFormat, AudioFormatError, InputDecoder
from voxgate.audio.resample import StreamResampler
from voxgate.engines.base import Engine
from voxgate.observability import metrics
from voxgate.protocol import client_events as ce
from voxgate.protocol import server_events as se
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import ContentPart, Dialect, Item
from voxgate.protocol.session_config import SessionConfig, default_turn_detection
from voxgate.session.conversation import Conversation
from voxgate.session.outbound import Outbound
from voxgate.session.playback import PlaybackTracker
from voxgate.session.recorder import CallRecorder
from voxgate.session.response import ResponseRun, ResponseSettings
from voxgate.session.turn_detection import (
    SpeechStarted,
    SpeechStopped,
    TurnDetectionConfig,
    TurnDetector,
    TurnEvent,
    phrase_looks_finished,
)
from voxgate.tools.redaction import redact, redact_offloaded
from voxgate.tools.registry import ToolRegistry

log = logging.getLogger("voxgate.session")

STT_RATE = 16000  # what the engine's transcribe() takes
VAD_OFFLOAD_MS = 250
SPECULATE_AFTER_FRAMES = 4  # ~130 ms of pause before transcribing speculatively
# Silence appended to a speculative decode. Whisper learnt utterances that end in a pause: cut ~130 ms after
# the last word, tiny.en hears a trailing "and" as "end." (a finished phrase, so semantic_vad ended the turn
# early), and with this much silence after it, as the turn's final decode has, it hears "and...".
SPECULATIVE_PAUSE_MS = 300
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than 100 ms of audio
PHONE_TRANSPORTS = frozenset({"twilio", "telnyx", "sip"})  # a carrier can move these calls to a person


class Caller(Protocol):
    """The transport's end of the call, as the session needs it."""

    transport: str
    playback: PlaybackTracker

    async def interrupt_playback(self) -> None:
        """Stop agent audio at the caller now (carrier `clear`, drop RTP queue, flush the track)."""

    async def transfer(self, target: str, reason: str) -> None: ...

    async def hang_up(self, reason: str) -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...


class VadStream(Protocol):
    frame_ms: float  # each probability `feed` returns covers this much audio

    def use_rate(self, input_rate: int) -> int:
        """The rate the stream will be fed at for caller audio arriving at `input_rate` (its own if it can
        take that one: a phone's 8 kHz then needs no resampling per frame); resets the stream."""
        ...

    def feed(self, pcm: np.ndarray) -> list[float]: ...

    def reset(self) -> None: ...


@dataclass
class _InputBuffer:
    """Audio appended since the last commit or clear, as wire bytes and as PCM at the VAD's rate."""

    rate: int
    wire: bytearray = field(default_factory=bytearray)
    pcm: list[np.ndarray] = field(default_factory=list)
    pcm_samples: int = 0
    start_ms: float = 0.0  # stream time of the buffer's first sample

    def duration_ms(self) -> float:
        return self.pcm_samples * 1000.0 / self.rate

    def pcm_array(self) -> np.ndarray:
        return np.concatenate(self.pcm) if self.pcm else np.zeros(0, dtype=np.int16)

    def drop_before(self, stream_ms: float, fmt: AudioFormat) -> None:
        """Forget the audio before stream time `stream_ms`: the PCM to the sample, the wire bytes
        (in `fmt`, maybe at another rate) to the same instant."""
        samples = min(round((stream_ms - self.start_ms) * self.rate / 1000), self.pcm_samples)
        if samples <= 0:
            return
        dropped_ms = samples * 1000 / self.rate
        pcm = self.pcm_array()[samples:]
        wire_bytes = round(dropped_ms * fmt.rate / 1000) * fmt.bytes_per_sample
        del self.wire[:wire_bytes]
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


class Session:
    def __init__(
        self,
        *,
        agent: AgentConfig,
        engine: Engine,
        tools: ToolRegistry,
        caller: Caller,
        dialect: Dialect = "ga",
        recorder: CallRecorder | None = None,
        vad_factory: Callable[[], VadStream] | None = None,
        model: str = "voxgate-local",
        outbound_events: int = 512,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_item_text_chars: int = ce.MAX_ITEM_TEXT_CHARS,
        max_input_buffer_s: int = 120,
        max_seconds: int = 3600,
        audio_lead_ms: float = 1500.0,
        fallback_engine: Engine | None = None,
        session_id: str | None = None,
        initial_config: dict[str, Any] | None = None,
    ) -> None:
        self.id = session_id or new_id("sess")
        self.agent = agent
        self.engine = engine
        self.tools = tools
        self.caller = caller
        self.dialect: Dialect = dialect
        self.recorder = recorder
        self.outbound = Outbound(outbound_events)
        self.max_message_bytes = max_message_bytes
        self.max_item_text_chars = max_item_text_chars
        self.audio_lead_ms = audio_lead_ms
        self.fallback_engine = fallback_engine  # speaks the apology when `engine` fails mid-call
        self.max_input_buffer_ms = max_input_buffer_s * 1000
        self.config = SessionConfig(
            id=self.id,
            model=model,
            instructions=agent.instructions,
            voice=agent.voice,
            turn_detection=default_turn_detection(
                agent.turn_taking.silence_duration_ms, agent.turn_taking.threshold
            ),
            expires_at=int(time.time()) + max_seconds,
        )
        if initial_config:  # e.g. the session an ephemeral key was minted for
            self.config = self.config.updated(initial_config, "ga", self._voices() or None)
        self.conversation = Conversation()
        self.brain_state: dict[str, Any] = {}
        self.closed = False
        self.draining = False  # the gateway is shutting down and ending this call (recorded `drained`)
        self.end_reason = ""
        self.outcome = ""

        self._vad = vad_factory() if vad_factory else None
        self._rate = self._vad.use_rate(self.config.input_format.rate) if self._vad else STT_RATE
        self._decoder = InputDecoder(self.config.input_format, self._rate)
        self._buffer = _InputBuffer(self._rate)
        self._stream_ms = 0.0  # total caller audio received, the clock of audio_start/end_ms
        self._response: ResponseRun | None = None
        self._last_spoken: tuple[str, Item] | None = None  # (response id, item) a barge-in would cut
        self._detector = self._make_detector()
        self._speech_item_id: str | None = None  # the user item a speech_started announced
        self._detector_origin_ms = 0.0
        self._idle_since_ms: float | None = None  # stream time the line went quiet after the agent spoke
        self._quiet_frames = 0
        self._speculation: asyncio.Task[str | None] | None = None
        self._transcriptions: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_actions: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.turn_ended_at: float | None = None  # monotonic time the caller's last turn ended
        self.first_response_ms: float | None = None
        self.turns = 0
        self.interruptions = 0
        self.started_at = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, *, greet: bool = False, caller_id: str | None = None) -> None:
        metrics.SESSIONS_STARTED.labels(self.caller.transport).inc()
        metrics.SESSIONS_ACTIVE.inc()
        if self.recorder:
            self.recorder.start_call(self, caller_id)
        self.emit(se.SessionCreated(session=self.config))
        if greet:
            lines = [x for x in (self.agent.disclosure, self.agent.greeting) if x]
            if lines:
                self.say(" ".join(lines))

    async def close(self, reason: str = "client_closed", status: str = "completed") -> None:
        if self.closed:
            return
        self.closed = True
        self.end_reason = self.end_reason or reason
        if self._response is not None:
            await self._response.cancel("client_cancelled")
        if self._speculation is not None:
            self._speculation.cancel()
        for task in [*self._tasks, *self._transcriptions.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._transcriptions.values(), return_exceptions=True)
        try:  # e.g. the openai engine closes this session's upstream connection
            await self.engine.close_session(self.brain_state)
        except Exception:
            log.exception("session %s: the engine failed to close its session state", self.id)
        metrics.SESSIONS_ACTIVE.dec()
        if self.draining and status == "completed":
            status = "drained"
        if self.outbound.overflowed:
            status = "dropped"
            metrics.BUFFER_OVERFLOWS.inc()
        if self.recorder:
            await self.recorder.end_call(self, status)
        self.outbound.close()

    # -- output ------------------------------------------------------------------------------------

    def emit(self, event: se.ServerEvent) -> None:
        """Queue a server event (the transport serialises it for its client's dialect)."""
        metrics.EVENTS.labels("out", event.type).inc()
        self.outbound.put(event)

    def emit_audio(self, event: se.ResponseOutputAudioDelta) -> bool:
        """Queue an audio delta; False when the queue dropped it (a client that does not read)."""
        sent = self.outbound.put_audio(event)
        if not sent:
            metrics.AUDIO_DROPPED.inc()
        return sent

    def error(self, exc: RealtimeError) -> None:
        metrics.ERRORS.labels(exc.code).inc()
        self.emit(exc.to_event())

    # -- input: client events ----------------------------------------------------------------------

    async def handle_message(self, raw: str | bytes) -> None:
        """One client event off the wire. Never raises: mistakes become `error` events."""
        try:
            event = ce.parse_client_event(raw, self.dialect, self.max_message_bytes,
                                          max_item_chars=self.max_item_text_chars)
            metrics.EVENTS.labels("in", ce.WIRE_TYPES[type(event)]).inc()
            await self.handle_event(event)
        except RealtimeError as exc:
            self.error(exc)
        except Exception as exc:  # a bug must cost one event, not the call
            log.exception("session %s: failed to handle a client event", self.id)
            metrics.ERRORS.labels("server_error").inc()
            self.emit(se.ErrorEvent(error_type="server_error", code="server_error",
                                    message=f"Internal error: {type(exc).__name__}"))

    async def handle_event(self, event: ce.ClientEvent) -> None:
        try:
            await self._dispatch(event)
        except RealtimeError as exc:
            exc.event_id = exc.event_id or event.event_id
            raise

    async def _dispatch(self, event: ce.ClientEvent) -> None:
        match event:
            case ce.SessionUpdate(session=patch):
                self._update_session(patch)
            case ce.TranscriptionSessionUpdate(session=patch):
                self._update_transcription_session(patch)
            case ce.InputAudioBufferAppend(audio=audio):
                await self.append_audio(audio)
            case ce.InputAudioBufferCommit():
                self._commit(manual=True)
            case ce.InputAudioBufferClear():
                self._clear_buffer()
                self.emit(se.InputAudioBufferCleared())
            case ce.ConversationItemCreate():
                self._create_item(event)
            case ce.ConversationItemRetrieve(item_id=item_id):
                item = self._require_item(item_id)
                self.emit(se.ConversationItemRetrieved(item=item.snapshot(include_audio=True)))
            case ce.ConversationItemTruncate():
                self._truncate(event.item_id, event.content_index, event.audio_end_ms)
            case ce.ConversationItemDelete(item_id=item_id):
                self.conversation.delete(item_id)
                self.emit(se.ConversationItemDeleted(item_id=item_id))
            case ce.ResponseCreate(response=params):
                self.create_response(params)
            case ce.ResponseCancel(response_id=response_id):
                await self._cancel_by_client(response_id)
            case ce.OutputAudioBufferClear():
                await self._clear_output_buffer()

    def _voices(self) -> set[str]:
        return set(self.engine.voices())

    def configure(self, patch: dict[str, Any]) -> None:
        """Apply a GA-shaped session patch from the server side (transports, sideband)."""
        dialect, self.dialect = self.dialect, "ga"
        try:
            self._update_session(patch)
        finally:
            self.dialect = dialect

    def _update_session(self, patch: dict[str, Any]) -> None:
        new = self.config.updated(patch, self.dialect, self._voices() or None)
        if new.input_format != self.config.input_format:
            rate = self._vad.use_rate(new.input_format.rate) if self._vad else STT_RATE
            if rate != self._rate:  # the audio buffered so far is at the old rate: start over
                self._rate = rate
                self._buffer = _InputBuffer(rate, start_ms=self._stream_ms)
            self._decoder = InputDecoder(new.input_format, rate)
        if new.turn_detection != self.config.turn_detection:
            self.config = new
            self._detector = self._make_detector()
            self._detector_origin_ms = self._stream_ms  # its clock starts now; events are in stream time
        self.config = new
        self.emit(se.SessionUpdated(session=self.config))

    def _update_transcription_session(self, patch: dict[str, Any]) -> None:
        allowed = {"input_audio_format", "input_audio_transcription", "turn_detection",
                   "input_audio_noise_reduction", "include", "client_secret"}
        for key in patch:
            if key not in allowed:
                raise RealtimeError("unknown_parameter", f"Unknown parameter: 'session.{key}'.",
                                    param=f"session.{key}")
        self._update_session({k: v for k, v in patch.items() if k not in ("include", "client_secret")})
        self.emit(se.TranscriptionSessionUpdated(session=self.config))

    # -- input: audio ------------------------------------------------------------------------------

    def _make_detector(self) -> TurnDetector | None:
        td = self.config.turn_detection
        if td is None:
            return None
        return TurnDetector(TurnDetectionConfig.from_openai(td, min_speech_ms=self._min_speech_ms()))

    def _min_speech_ms(self) -> int:
        # Echo of the agent's own voice and short noises must not cut it off: while the agent is
        # talking, the caller has to speak for a while before it counts as barge-in.
        return self.agent.turn_taking.barge_in_min_speech_ms if self._agent_audible() else 60

    def _agent_audible(self) -> bool:
        """Is the agent talking: generating a response, or still playing one out at the caller?"""
        if self._response is not None:
            return True
        playback, last = self.caller.playback, self._last_spoken
        return (playback.server_side and last is not None
                and playback.heard_ms(last[1].id) < playback.sent_ms(last[1].id) - 1.0)

    async def append_audio(self, data: bytes) -> None:
        """Caller audio in the session's input format (from the wire or from a carrier)."""
        rest = self.append_audio_nowait(data)
        if rest is not None:
            await rest

    def append_audio_nowait(self, data: bytes) -> Awaitable[None] | None:
        """`append_audio` without a coroutine for the common case, for transports that take 50 frames a
        second per call: the frame is decoded, buffered and scored now, and None comes back. Only when
        the frame starts a turn (barge-in must finish before the next frame counts) or is a burst worth
        scoring off the loop does an awaitable come back, which the caller must await before it appends
        more. Raises RealtimeError like `append_audio`."""
        if self.closed:
            return None
        try:
            pcm = self._decoder.decode(data)
        except AudioFormatError as exc:
            raise RealtimeError("invalid_audio", str(exc), param="audio") from exc
        if not pcm.size:
            return None
        buffer = self._buffer
        buffer.wire.extend(data)
        buffer.pcm.append(pcm)
        buffer.pcm_samples += pcm.size
        self._stream_ms += pcm.size * 1000.0 / self._rate
        if self._detector is not None and self._vad is not None:
            if self._detector.config.min_speech_ms != self._min_speech_ms():
                self._detector_min_speech_update()
            if pcm.size >= self._rate * VAD_OFFLOAD_MS // 1000:
                # A burst of audio (a client sending faster than real time) is scored off the loop;
                # a 20-100 ms frame costs ~0.1 ms, less than the thread hop, so it stays inline.
                return self._score_offloaded(pcm)
            return self._take_scores(self._vad.feed(pcm))
        self._check_buffer_size()
        return None

    async def _score_offloaded(self, pcm: np.ndarray) -> None:
        assert self._vad is not None
        probs = await asyncio.get_running_loop().run_in_executor(None, self._vad.feed, pcm)
        rest = self._take_scores(probs)
        if rest is not None:
            await rest

    def _take_scores(self, probs: list[float]) -> Awaitable[None] | None:
        """Turn the VAD's scores into turn events; an awaitable when one of them starts a turn."""
        assert self._detector is not None
        assert self._vad is not None
        turn_events = self._detector.feed(probs, self._vad.frame_ms) if probs else []
        if any(isinstance(turn_event, SpeechStarted) for turn_event in turn_events):
            return self._take_turn_events(turn_events, probs)
        for turn_event in turn_events:  # only ends of speech: nothing to await
            if isinstance(turn_event, SpeechStopped):
                self._on_speech_stopped(self._detector_origin_ms + turn_event.audio_end_ms)
        self._after_scores(probs)
        return None

    async def _take_turn_events(self, turn_events: list[TurnEvent], probs: list[float]) -> None:
        for turn_event in turn_events:
            if isinstance(turn_event, SpeechStarted):
                await self._on_speech_started(self._detector_origin_ms + turn_event.audio_start_ms)
            elif isinstance(turn_event, SpeechStopped):
                self._on_speech_stopped(self._detector_origin_ms + turn_event.audio_end_ms)
        self._after_scores(probs)

    def _after_scores(self, probs: list[float]) -> None:
        if self._speech_item_id is None:
            self._trim_idle_buffer()
            self._check_idle()
        else:
            self._speculate(probs)
        self._check_buffer_size()

    def _check_buffer_size(self) -> None:
        if self._buffer.duration_ms() > self.max_input_buffer_ms:
            if self._speech_item_id is not None:
                # A monologue longer than the buffer: end the turn here rather than grow without bound.
                self._on_speech_stopped(self._stream_ms)
            else:
                self._clear_buffer()
                raise RealtimeError("input_audio_buffer_full",
                                    f"The input audio buffer holds at most {self.max_input_buffer_ms // 1000} s; "
                                    "commit or clear it.", param="audio")

    def _check_idle(self) -> None:
        """idle_timeout_ms: the caller has said nothing for that long since the agent last spoke."""
        timeout = (self.config.turn_detection or {}).get("idle_timeout_ms")
        if not timeout or self._idle_since_ms is None:
            return
        if self._agent_audible():
            self._idle_since_ms = self._stream_ms  # the silence starts when the agent stops talking
            return
        if self._stream_ms - self._idle_since_ms < timeout:
            return
        start, self._idle_since_ms = self._idle_since_ms, None  # once per silence
        item_id = new_id("item")
        self.emit(se.InputAudioBufferTimeoutTriggered(audio_start_ms=int(start), audio_end_ms=int(self._stream_ms),
                                                      item_id=item_id))
        self.say(self.agent.idle_prompt)

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
        if self._speculation is None and self._quiet_frames >= SPECULATE_AFTER_FRAMES and self.engine.transcribes:
            pcm = self._buffer.speech_pcm()
            pause = np.zeros(STT_RATE * SPECULATIVE_PAUSE_MS // 1000, dtype=np.int16)
            task = asyncio.get_running_loop().create_task(self.engine.transcribe(np.concatenate((pcm, pause))))
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
        self._buffer.drop_before(self._stream_ms - keep_ms, self.config.input_format)

    async def _on_speech_started(self, audio_start_ms: float) -> None:
        # The turn's audio starts where the event says: exactly the prefix padding before the first
        # speech frame, whatever the idle trimming happened to leave.
        self._buffer.drop_before(audio_start_ms, self.config.input_format)
        self._speech_item_id = new_id("item")
        self._idle_since_ms = None
        self._quiet_frames = 0
        self.emit(se.InputAudioBufferSpeechStarted(audio_start_ms=int(audio_start_ms), item_id=self._speech_item_id))
        td = self.config.turn_detection or {}
        if td.get("interrupt_response", True):
            await self.barge_in()

    async def barge_in(self) -> None:
        """The caller spoke over the agent: silence the agent first, then do the bookkeeping.

        The agent may still be talking after its response is done: a transport that plays audio
        at real time (phone, WebRTC) is seconds behind generation, so that counts too.
        """
        if not self._agent_audible():
            return
        self.interruptions += 1
        metrics.INTERRUPTIONS.inc()
        await self._silence_agent("turn_detected")

    async def _silence_agent(self, reason: str) -> None:
        """Stop the agent mid-sentence: at the transport first, then its response; the item keeps what
        was heard."""
        response = self._response
        playback = self.caller.playback
        await self.caller.interrupt_playback()
        if response is not None:
            await response.cancel(reason)
        if playback.server_side and self._last_spoken is not None:
            response_id, item = self._last_spoken
            self._last_spoken = None
            if self.conversation.get(item.id) is not None:
                self._truncate(item.id, 0, int(playback.heard_ms(item.id)), clamp=True)
            self.emit(se.OutputAudioBufferCleared(response_id=response_id))

    def spoke(self, response_id: str, item: Item) -> None:
        """A response started sending audio for `item` (the one a barge-in would cut)."""
        self._last_spoken = (response_id, item)

    def _on_speech_stopped(self, audio_end_ms: float) -> None:
        item_id = self._speech_item_id or new_id("item")
        self.emit(se.InputAudioBufferSpeechStopped(audio_end_ms=int(audio_end_ms), item_id=item_id))
        self._speech_item_id = None
        self.turn_ended_at = time.monotonic()
        td = self.config.turn_detection or {}
        item = self._commit(manual=False, item_id=item_id)
        if item is not None and td.get("create_response", True) and self._response is None:
            self.create_response(ce.ResponseParams())

    def _commit(self, *, manual: bool, item_id: str | None = None) -> Item | None:
        duration = self._buffer.duration_ms()
        if manual and duration < MIN_COMMIT_MS:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {duration:.2f}ms of audio.",
            )
        if manual:
            self.turn_ended_at = time.monotonic()
        pcm = self._buffer.speech_pcm() if self.engine.transcribes else None
        part = ContentPart(type="input_audio", audio=bytearray(self._buffer.wire),
                           audio_format=self.config.input_format)
        item = Item(id=item_id or new_id("item"), type="message", role="user", content=[part])
        speculation, self._speculation = self._speculation, None
        self._clear_buffer()
        previous = self.conversation.add(item)
        self.emit(se.InputAudioBufferCommitted(item_id=item.id, previous_item_id=previous))
        self._announce_item(item, previous)
        self.turns += 1
        if pcm is not None:
            self._start_transcription(item, pcm, speculation)
        return item

    def _clear_buffer(self) -> None:
        self._buffer = _InputBuffer(self._rate, start_ms=self._stream_ms)
        self._speech_item_id = None
        if self._speculation is not None:
            self._speculation.cancel()
            self._speculation = None

    def _start_transcription(self, item: Item, pcm: np.ndarray,
                             speculation: asyncio.Task[str | None] | None = None) -> None:
        async def run() -> None:
            started = time.monotonic()
            try:
                text = await (speculation if speculation is not None else self.engine.transcribe(pcm))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("transcription failed")
                if self.config.transcription is not None:
                    self.emit(se.ConversationItemInputAudioTranscriptionFailed(
                        item_id=item.id, content_index=0, error_type="server_error", code="transcription_failed",
                        message=str(exc)))
                return
            if text is None:
                return
            metrics.STT_SECONDS.observe(time.monotonic() - started)
            # What the caller said about cards, SSNs or emails reaches no client, brain or record.
            shown = await redact_offloaded(text)
            item.content[0].transcript = shown
            if self.config.transcription is not None:
                if shown:
                    self.emit(se.ConversationItemInputAudioTranscriptionDelta(item_id=item.id, content_index=0,
                                                                              delta=shown))
                self.emit(se.ConversationItemInputAudioTranscriptionCompleted(
                    item_id=item.id, content_index=0, transcript=shown,
                    audio_seconds=round(pcm.size / STT_RATE, 3)))
            if self.recorder:
                self.recorder.item(self, item)

        task = asyncio.get_running_loop().create_task(run())
        self._transcriptions[item.id] = task
        task.add_done_callback(lambda _t: self._transcriptions.pop(item.id, None))

    async def transcripts_settled(self) -> None:
        """Wait until every committed user turn has its transcript (the brain needs the words)."""
        pending = list(self._transcriptions.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- conversation items ------------------------------------------------------------------------

    def _announce_item(self, item: Item, previous: str | None) -> None:
        snapshot = item.snapshot()
        self.emit(se.ConversationItemAdded(previous_item_id=previous, item=snapshot))
        self.emit(se.ConversationItemDone(previous_item_id=previous, item=snapshot))
        if self.recorder:
            self.recorder.item(self, item)

    def _create_item(self, event: ce.ConversationItemCreate) -> None:
        spec = event.item
        item_id = spec.get("id") or new_id("item")
        if spec["type"] == "message":
            parts = []
            for p in spec["content"]:
                if p["type"].endswith("text"):
                    parts.append(ContentPart(type=p["type"], text=p["text"]))
                else:
                    audio = p.get("audio")
                    if audio is not None:
                        try:
                            InputDecoder(self.config.input_format, STT_RATE).decode(audio)
                        except AudioFormatError as exc:
                            raise RealtimeError("invalid_audio", str(exc), param="item.content.audio") from exc
                    parts.append(ContentPart(type=p["type"], transcript=p.get("transcript"),
                                             audio=bytearray(audio) if audio is not None else None,
                                             audio_format=self.config.input_format))
            item = Item(id=item_id, type="message", role=spec["role"], content=parts)
        elif spec["type"] == "function_call":
            item = Item(id=item_id, type="function_call", call_id=spec["call_id"], name=spec["name"],
                        arguments=spec["arguments"])
        else:
            item = Item(id=item_id, type="function_call_output", call_id=spec["call_id"], output=spec["output"])
        after = event.previous_item_id if event.has_previous else None
        previous = self.conversation.add(item, after=after)
        self._announce_item(item, previous)
        if item.type == "message" and item.role == "user":
            self.turn_ended_at = time.monotonic()
            self.turns += 1
            for part in item.content:
                if part.type == "input_audio" and part.audio and part.transcript is None:
                    self._start_transcription(item, InputDecoder(self.config.input_format, STT_RATE)
                                              .decode(bytes(part.audio)))

    def _require_item(self, item_id: str) -> Item:
        item = self.conversation.get(item_id)
        if item is None:
            raise RealtimeError("item_not_found", f"Item with item_id {item_id!r} not found.", param="item_id")
        return item

    def _truncate(self, item_id: str, content_index: int, audio_end_ms: int, clamp: bool = False) -> None:
        item = self._require_item(item_id)
        if item.type != "message" or item.role != "assistant":
            raise RealtimeError("invalid_value", "Only assistant messages can be truncated.", param="item_id")
        if content_index >= len(item.content) or item.content[content_index].type != "output_audio":
            raise RealtimeError("invalid_value", "content_index does not point at an audio part.",
                                param="content_index")
        part = item.content[content_index]
        total = part.audio_ms
        if audio_end_ms > total + 1:
            if not clamp:
                raise RealtimeError(
                    "invalid_value",
                    f"Audio content of {total:.0f}ms is shorter than audio_end_ms {audio_end_ms}ms.",
                    param="audio_end_ms",
                )
            audio_end_ms = int(total)
        # The words are placed on the audio as it was spoken, so they are cut before the audio is.
        part.transcript = heard_transcript(part, audio_end_ms)
        fmt = part.audio_format
        if part.audio is not None and fmt is not None:
            keep = int(fmt.bytes_per_ms * audio_end_ms)
            keep -= keep % (2 if fmt.encoding == "pcm16" else 1)
            del part.audio[keep:]
        item.status = "incomplete"
        self.emit(se.ConversationItemTruncated(item_id=item_id, content_index=content_index,
                                               audio_end_ms=audio_end_ms))
        if self.recorder:
            self.recorder.item(self, item, truncated_at_ms=audio_end_ms)

    # -- responses ---------------------------------------------------------------------------------

    @property
    def response(self) -> ResponseRun | None:
        return self._response

    def _recover_from(self, failed: ResponseRun) -> None:
        """The engine failed on a call the gateway plays out: apologise in the local voice and hand over.

        A WebSocket client gets the error event and decides; a caller on a phone or in a browser would
        otherwise hear silence.
        """
        fallback = self.fallback_engine
        if fallback is None or failed.engine is fallback or not self.caller.playback.server_side:
            return
        self.create_response(ce.ResponseParams(), say=self.agent.apology, engine=fallback)
        target = self.agent.escalation.target
        if target:
            self.outcome = "escalated"
            self.end_reason = f"transferred: {self.end_reason or 'engine failure'}"
            metrics.ESCALATIONS.inc()
            self._after_response(lambda: self.caller.transfer(target, "the agent's engine failed"))

    def create_response(self, params: ce.ResponseParams, say: str | None = None,
                        engine: Engine | None = None) -> ResponseRun:
        if self._response is not None:
            raise RealtimeError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        settings = ResponseSettings.resolve(self, params)
        run = ResponseRun(self, settings, say=say, engine=engine)
        self._response = run
        self._detector_min_speech_update()

        def finished(_task: asyncio.Task[None]) -> None:
            if self._response is run:
                self._response = None
                self._detector_min_speech_update()
            if not self.closed:
                self.response_finished()
                if run.status == "failed":
                    self._recover_from(run)

        task = asyncio.get_running_loop().create_task(run.run())
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(finished)
        return run

    def say(self, text: str) -> ResponseRun | None:
        """Speak a fixed line (greeting, disclosure, handover) as an ordinary response."""
        if self._response is not None or self.closed:
            return None
        return self.create_response(ce.ResponseParams(), say=text)

    def _detector_min_speech_update(self) -> None:
        if self._detector is not None:
            self._detector.update(dataclasses.replace(self._detector.config, min_speech_ms=self._min_speech_ms()))

    async def _cancel_by_client(self, response_id: str | None) -> None:
        response = self._response
        if response is None or (response_id is not None and response_id != response.id):
            raise RealtimeError("response_cancel_not_active", "Cancellation failed: no active response found.",
                                param="response_id" if response_id else None)
        await self.caller.interrupt_playback()
        await response.cancel("client_cancelled")

    async def _clear_output_buffer(self) -> None:
        """The client asks the server to stop playing (WebRTC/SIP): cut at what was heard."""
        await self.caller.interrupt_playback()
        response = self._response
        if response is not None:
            await response.cancel("client_cancelled")
        response_id = response.id if response else (self._last_spoken[0] if self._last_spoken else "")
        if self.caller.playback.server_side and self._last_spoken is not None:
            _, item = self._last_spoken
            self._last_spoken = None
            if self.conversation.get(item.id) is not None:
                self._truncate(item.id, 0, int(self.caller.playback.heard_ms(item.id)), clamp=True)
        self.emit(se.OutputAudioBufferCleared(response_id=response_id))

    # -- call actions (tools and transports use these) --------------------------------------------

    # A tool that moves or ends the call runs mid-response, before the agent has said its handover
    # line; the call is moved once that response has finished (the transport then waits for the
    # caller to have heard it).

    async def transfer(self, target: str, reason: str) -> None:
        reason = redact(reason)[0]  # the model's words, kept in the call record
        self.outcome = "escalated"
        self.end_reason = f"transferred: {reason}"
        metrics.ESCALATIONS.inc()
        self._after_response(lambda: self.caller.transfer(target, reason))

    async def hang_up(self, reason: str) -> None:
        reason = redact(reason)[0]
        self.end_reason = reason
        self._after_response(lambda: self.caller.hang_up(reason))

    def drain(self) -> None:
        """The gateway is shutting down with this call still up: end it politely, recorded `drained`.

        Whatever the agent is saying is cut short; a phone caller then hears the handover line and is
        moved to the agent's escalation target (when it has one), anyone else hears the goodbye and the
        call is hung up once it has been heard.
        """
        if self.closed or self.draining:
            return
        self.draining = True
        target = self.agent.escalation.target if self.caller.transport in PHONE_TRANSPORTS else ""
        self.end_reason = "drained: handed to the escalation target" if target else "drained: goodbye"

        async def wind_down() -> None:
            if self._response is not None or self._agent_audible():
                await self._silence_agent("client_cancelled")
            self.say(self.agent.escalation.handover_line if target else self.agent.goodbye)
            if target:
                self._after_response(lambda: self.caller.transfer(target, "the gateway is shutting down"))
            else:
                self._after_response(lambda: self.caller.hang_up("drained"))

        task = asyncio.get_running_loop().create_task(wind_down())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after_response(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._pending_actions.append(action)
        if self._response is None:
            self.response_finished()

    def response_finished(self) -> None:
        """Called as a response ends: run the call actions its tools asked for."""
        self._idle_since_ms = self._stream_ms
        actions, self._pending_actions = self._pending_actions, []
        for action in actions:
            task = asyncio.get_running_loop().create_task(action())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def send_dtmf(self, digits: str) -> None:
        await self.caller.send_dtmf(digits)

    # Key presses reach the brain through `brain_state`, a contract with the flow brain:
    #   "dtmf"       every key pressed outside a PCI entry, in order
    #   "key_press"  the menu key the next response answers (the brain pops it)
    #   "keypad"     set by the brain while it collects a PCI argument: {"digits": str, "done": bool, ...};
    #                the digits live there only: no event, item, log line or record ever holds them.

    def dtmf_received(self, digit: str) -> None:
        """A key press from the caller (phones): a PCI digit, a menu choice, or just an event for the client."""
        keypad = self.brain_state.get("keypad")
        if keypad is not None and not keypad.get("done"):
            if digit == "#":
                keypad["done"] = True
                self._respond_to_keys()
            elif digit == "*":  # start the entry over, as IVRs do
                keypad["digits"] = ""
            else:
                keypad["digits"] = keypad.get("digits", "") + digit
            return
        self.emit(se.InputAudioBufferDtmfEventReceived(event=digit, received_at=int(time.time())))
        digits = self.brain_state.setdefault("dtmf", [])
        digits.append(digit)
        if digit in self.agent.dtmf_menu:
            self.brain_state["key_press"] = digit
            self._respond_to_keys()

    def _respond_to_keys(self) -> None:
        """Answer a key press like an utterance: silence the agent if it is talking, then respond."""

        async def respond() -> None:
            await self.barge_in()
            response = self._response
            if response is not None and response.task is not None:
                await asyncio.wait([response.task], timeout=1.0)
                await asyncio.sleep(0)  # let its done-callback clear `_response`
            if self.closed or self._response is not None:
                return  # a spoken turn got there first; its response reads the key press
            self.turn_ended_at = time.monotonic()
            self.turns += 1
            self.create_response(ce.ResponseParams())

        task = asyncio.get_running_loop().create_task(respond())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def tool_arguments(self, name: str, arguments: str) -> str:
        """The arguments a gateway tool really runs with: masked PCI values swapped for the typed digits.

        The brain calls a PCI tool with masks ("****1111"), so the conversation, the model's context and
        the record only ever see those; the digits wait in `brain_state["pci_vault"]` and are used once.
        """
        vault = self.brain_state.get("pci_vault")
        if not vault or vault.get("tool") != name:
            return arguments
        del self.brain_state["pci_vault"]
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
        if not isinstance(parsed, dict):
            return arguments
        return json.dumps({**parsed, **vault.get("values", {})})

    def note_first_response(self) -> None:
        """Called by a response when its first audio (or text) leaves: the turn latency KPI."""
        if self.turn_ended_at is None:
            return
        latency_ms = (time.monotonic() - self.turn_ended_at) * 1000.0
        self.turn_ended_at = None
        metrics.FIRST_RESPONSE_SECONDS.observe(latency_ms / 1000.0)
        if self.first_response_ms is None:
            self.first_response_ms = latency_ms

    def tool_context_roles(self) -> frozenset[str]:
        return frozenset({"caller"})

    def __repr__(self) -> str:
        return f"<Session {self.id} agent={self.agent.name} transport={self.caller.transport}>"


def heard_transcript(part: ContentPart, audio_end_ms: float) -> str:
    """The words of an audio part that were spoken before `audio_end_ms`.

    The engine emits each sentence's text just before its audio, so `part.segments` records where
    every sentence starts; within a sentence, words are spread by their length.
    """
    segments = part.segments
    if not segments:
        return "" if audio_end_ms <= 0 else (part.transcript or "")
    words: list[str] = []
    total_ms = part.audio_ms or audio_end_ms
    for i, (start, text) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else max(total_ms, start)
        if start >= audio_end_ms:
            break
        tokens = text.split()
        if end <= audio_end_ms:
            words.extend(tokens)
            continue
        span = max(end - start, 1.0)
        weights = np.cumsum([len(t) + 1 for t in tokens], dtype=float)
        heard_fraction = (audio_end_ms - start) / span
        for token, upto in zip(tokens, weights / weights[-1], strict=True):
            if upto <= heard_fraction + 1e-9:
                words.append(token)
        break
    return " ".join(words)


"""The Session: one call's conversation, turn-taking and responses.

A transport feeds it client events (`handle_message`) and caller audio (`append_audio`) and drains
its `outbound` queue; an engine produces the content of each response. Everything a call does is
decided here, so every transport gets the same barge-in, truncation, tools and bookkeeping. Its parts
live beside it: `Listening` hears the caller's turns and reports them through `ListeningHooks`, a
`ResponseRun` speaks through its `ResponseHost`, the `Keypad` holds key presses and PCI entries, and
the `CallRecorder` is told what to keep; the Session is the hooks and the host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import numpy as np

from voxgate.agents import AgentConfig
from voxgate.audio.formats import AudioFormatError, InputDecoder
from voxgate.engines.base import Engine, ToolCall, ToolSpec
from voxgate.observability import metrics
from voxgate.observability.latency_budget import BargeIn, LatencyBudget, TurnLatency
from voxgate.protocol import client_events as ce
from voxgate.protocol import server_events as se
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import ContentPart, Dialect, Item
from voxgate.protocol.session_config import SessionConfig, default_turn_detection
from voxgate.roles import GATEWAY_CALL_ROLES
from voxgate.session.call_recording import CallRecording
from voxgate.session.consent import Consent
from voxgate.session.conversation import Conversation
from voxgate.session.handoff import Handoff, handoff_of
from voxgate.session.keypad import Keypad, KeyPress
from voxgate.session.listening import STT_RATE, Listening, Utterance, VadStream
from voxgate.session.outbound import Outbound
from voxgate.session.playback import PlaybackTracker
from voxgate.session.recorder import CallRecorder, CallSummary
from voxgate.session.response import ResponseRun, ResponseSettings
from voxgate.session.typed_cards import without_cards_offloaded
from voxgate.tools.redaction import holds_card, redact, redact_offloaded
from voxgate.tools.registry import ToolContext, ToolRegistry, ToolResult, run_on_call

log = logging.getLogger("voxgate.session")

MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than 100 ms of audio
# Caller speech that interrupts the agent on a line the gateway plays (an agent may set its own): two VAD
# frames, heard while the agent is already paused at the caller (`hold_agent`).
BARGE_IN_CHECK_MS = 64
PHONE_TRANSPORTS = frozenset({"twilio", "telnyx", "sip"})  # a carrier can move these calls to a person


class Caller(Protocol):
    """The transport's end of the call, as the session needs it."""

    transport: str
    playback: PlaybackTracker

    async def interrupt_playback(self) -> None:
        """Stop agent audio at the caller now (carrier `clear`, drop RTP queue, flush the track)."""

    async def hold_playback(self) -> None:
        """The caller may be barging in: pause the agent's audio at the caller where it is, until
        `resume_playback` or `interrupt_playback` (nothing to do where the client plays the audio itself)."""

    async def resume_playback(self) -> None:
        """It was not a barge-in: play on from where `hold_playback` paused."""

    async def transfer(self, target: str, reason: str) -> None: ...

    async def hang_up(self, reason: str) -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...


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
        recording: CallRecording | None = None,
        roles: frozenset[str] = GATEWAY_CALL_ROLES,
    ) -> None:
        self.id = session_id or new_id("sess")
        self.roles = roles  # what its gateway tools may do: the opening key's roles (voxgate/roles.py)
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
        self.brain_state: dict[str, Any] = {}  # the engine's, per call (e.g. the openai engine's connection)
        self.keypad = Keypad()
        self.closed = False
        self.draining = False  # the gateway is shutting down and ending this call (recorded `drained`)
        self.end_reason = ""
        self.outcome = ""
        self.record_metadata: dict[str, Any] = {}  # the transport's additions to the record (a SIP call's media)

        self._response: ResponseRun | None = None
        self._last_spoken: tuple[str, Item] | None = None  # (response id, item) a barge-in would cut
        # While the agent is paused at the caller for a possible barge-in: the clock and the caller audio
        # received when the pause began, and the clock once the transport had paused it.
        self._held: tuple[float, float, float] | None = None
        barge_in_check = agent.turn_taking.barge_in_min_speech_ms
        if barge_in_check is None:  # a check only where the agent can be paused at the caller meanwhile
            barge_in_check = BARGE_IN_CHECK_MS if caller.playback.server_side else 0
        self.listening = Listening(self, engine, vad_factory() if vad_factory else None,
                                   barge_in_min_speech_ms=barge_in_check,
                                   max_buffer_ms=max_input_buffer_s * 1000,
                                   echo_margin_db=agent.turn_taking.barge_in_echo_margin_db)
        self._transcriptions: dict[str, asyncio.Task[None]] = {}
        # The call's audio on disk (the agent's `recording`), the caller's consent to it, and whether an
        # operator marked the present span sensitive (silenced in the recording, like a PCI entry).
        self.recording = recording
        self.consent = Consent(agent.recording) if recording is not None else None
        self.marked_sensitive = False
        self._greet_after_consent = False
        self._discarding: asyncio.Task[None] | None = None  # a declined recording being deleted
        self.handoff: Handoff | None = None  # the latest hand-off to a person, once there is one
        self.operator: str | None = None  # the key of an operator who took the call over: the agent is silent
        self._keypad_line_due = False  # a card was typed: ask for the keypad once the next response ends
        self.caller_id: str | None = None  # who is calling (a number, an address), for the hand-off card
        self.escalated: Callable[[Handoff], None] | None = None  # told of each hand-off (the gateway's queue)
        if recording is not None:
            recording.sensitive = self.recording_silenced
            self.listening.tap = recording.caller
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_actions: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.turn_ended_at: float | None = None  # monotonic time the caller's last turn ended
        self.first_response_ms: float | None = None
        self.turns = 0
        self.interruptions = 0
        self.fallthroughs = 0  # turns answered with the agent's fallback line
        self.started_at = time.monotonic()
        self.latency = LatencyBudget(time.monotonic, on_turn=self._turn_timed, on_barge_in=self._barge_in_timed)
        caller.playback.on_heard = self.latency.heard

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, *, greet: bool = False, caller_id: str | None = None, opening: str = "") -> None:
        """Open the call record and say what opens the call: the recording notice, `opening` (a line for a
        caller coming back to the agent), the disclosure and the greeting."""
        metrics.SESSIONS_STARTED.labels(self.caller.transport).inc()
        metrics.SESSIONS_ACTIVE.inc()
        self.caller_id = caller_id
        if self.recorder:
            self.recorder.start_call(self.id, agent=self.agent.name, transport=self.caller.transport,
                                     dialect=self.dialect, caller=caller_id, model=self.config.model)
        self.emit(se.SessionCreated(session=self.config))
        if self.consent is not None:  # recorded: the notice comes before anything else, on every transport
            policy = self.agent.recording
            lines = [policy.notice]
            if self.consent.pending:
                lines.append(policy.consent_prompt)
                self._greet_after_consent = greet
            elif greet:
                lines += [x for x in (opening, self.agent.disclosure, self.agent.greeting) if x]
            self.say(" ".join(lines))
        elif greet:
            lines = [x for x in (opening, self.agent.disclosure, self.agent.greeting) if x]
            if lines:
                self.say(" ".join(lines))

    async def close(self, reason: str = "client_closed", status: str = "completed") -> None:
        if self.closed:
            return
        self.closed = True
        self.end_reason = self.end_reason or reason
        if self._response is not None:
            await self._response.cancel("client_cancelled")
        self.listening.close()
        for task in [*self._tasks, *self._transcriptions.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._transcriptions.values(), return_exceptions=True)
        try:  # e.g. the openai engine closes this session's upstream connection
            await self.engine.close_session(self.brain_state)
        except Exception:
            log.exception("session %s: the engine failed to close its session state", self.id)
        metrics.SESSIONS_ACTIVE.dec()
        self.latency.close()  # a turn still waiting to be heard ends with what it has
        if self.draining and status == "completed":
            status = "drained"
        if self.outbound.overflowed:
            status = "dropped"
            metrics.BUFFER_OVERFLOWS.inc()
        if self._discarding is not None:
            await asyncio.shield(self._discarding)
        if self.recording is not None:
            self.record_metadata["recording"] = await self._finish_recording()
        elif self.consent is not None:
            self.record_metadata["recording"] = {"consent": self.consent.record()}
        if self.recorder:
            await self.recorder.end_call(CallSummary(
                status=status, outcome=self.outcome, end_reason=self.end_reason,
                duration_s=time.monotonic() - self.started_at, first_response_ms=self.first_response_ms,
                turns=self.turns, interruptions=self.interruptions, metadata=self.record_metadata or None,
                fallthroughs=self.fallthroughs, buffer_overflow=self.outbound.overflowed))
        self.outbound.close()
        self._let_go()

    def _let_go(self) -> None:
        """Drop what points back at this closed session from its parts (listening's hooks; the caller's
        playback, which told the latency budget, whose callbacks are the session's), so the call is freed
        by reference counting once its transport lets go too. Left in cycles, every ended call waits for
        the cycle collector's full pass, which walks every live call: tens of ms of silence on each of
        them at a few hundred calls."""
        self.listening.release()
        if self.recording is not None:  # saved: nothing reads its sensitivity (a method of this session) again
            self.recording.sensitive = _saved
        playback = self.caller.playback
        playback.on_heard = None
        playback.line = None  # the line's playout tells the tracker of each item it starts playing

    # -- output ------------------------------------------------------------------------------------

    def emit(self, event: se.ServerEvent) -> None:
        """Queue a server event (the transport serialises it for its client's dialect)."""
        metrics.EVENTS.labels("out", event.type).inc()
        self.outbound.put(event)

    def emit_audio(self, event: se.ResponseOutputAudioDelta) -> bool:
        """Queue an audio delta; False when the queue dropped it (a client that does not read)."""
        dropped = self.outbound.dropped_audio_events
        sent = self.outbound.put_audio(event)
        if sent and self.recording is not None and not self.caller.playback.server_side:
            self.recording.agent(event.pcm, event.format.rate)  # a WebSocket client plays it: what was sent
        self.listening.agent_spoke(event.pcm, event.format.rate)
        if self.outbound.dropped_audio_events != dropped:  # full; a cut response's audio is no loss
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
                self.listening.clear()
                self.emit(se.InputAudioBufferCleared())
            case ce.ConversationItemCreate():
                [spec], cards = await without_cards_offloaded([event.item])
                self._create_item(dataclasses.replace(event, item=spec))
                if cards:
                    self._card_typed(spec)
            case ce.ConversationItemRetrieve(item_id=item_id):
                item = self._require_item(item_id)
                self.emit(se.ConversationItemRetrieved(item=item.snapshot(include_audio=True)))
            case ce.ConversationItemTruncate():
                self._truncate(event.item_id, event.content_index, event.audio_end_ms)
            case ce.ConversationItemDelete(item_id=item_id):
                self.conversation.delete(item_id)
                self.emit(se.ConversationItemDeleted(item_id=item_id))
            case ce.ResponseCreate(response=params):
                if self.consent is not None and self.consent.pending:
                    raise RealtimeError("consent_pending", "The caller has not yet answered the recording "
                                        "consent question; the agent answers nothing else until they do.")
                if params.input:
                    entries, cards = await without_cards_offloaded(params.input)
                    params = dataclasses.replace(params, input=entries)
                    if cards:
                        self._card_typed({})
                self.create_response(params)
            case ce.ResponseCancel(response_id=response_id):
                await self._cancel_by_client(response_id)
            case ce.OutputAudioBufferClear():
                await self._clear_output_buffer()
            case ce.InputAudioBufferDtmfEvent(event=key):
                self.dtmf_received(key)  # a page's keypad: PCI entry and menus as on a phone

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
        old, new = self.config, self.config.updated(patch, self.dialect, self._voices() or None)
        self.config = new
        self.listening.reconfigure(old, new)
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

    def agent_audible(self) -> bool:
        """Is the agent talking: generating a response, or still playing one out at the caller?"""
        if self._response is not None:
            return True
        last = self._last_spoken
        if last is None:
            return False
        playback, item_id = self.caller.playback, last[1].id
        return playback.server_side and playback.heard_ms(item_id) < playback.sent_ms(item_id) - 1.0

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
        return self.listening.append_nowait(data)

    def append_pcm_nowait(self, pcm: np.ndarray, rate: int) -> Awaitable[None] | None:
        """`append_audio_nowait` for a transport that decodes the caller's codec itself (a browser's Opus):
        int16 PCM at `rate`, best at `listening.rate`, where nothing resamples it. Buffered as PCM, it is
        put into the input format only when a commit takes it."""
        if self.closed:
            return None
        return self.listening.append_pcm_nowait(pcm, rate)

    # -- turns (the listening hooks) ---------------------------------------------------------------

    def turn_ended(self, item_id: str) -> None:
        """Speech stopped: the turn becomes a user item, answered unless `create_response` is off."""
        self.turn_ended_at = time.monotonic()
        self.latency.speech_ended(self.listening.stream_ms - self.listening.speech_ended_ms)
        td = self.config.turn_detection or {}
        item = self._commit(manual=False, item_id=item_id)
        if item is not None and self.consent is not None and self.consent.pending:
            self._hear_consent(item)
            return
        if item is not None and td.get("create_response", True) and self._response is None:
            self.create_response(ce.ResponseParams())

    def idle_timed_out(self) -> None:
        self.say(self.agent.idle_prompt)

    async def barge_in(self) -> None:
        """The caller spoke over the agent: silence the agent first, then do the bookkeeping.

        The agent may still be talking after its response is done: a transport that plays audio
        at real time (phone, WebRTC) is seconds behind generation, so that counts too.
        """
        if not self.agent_audible():
            return
        self.interruptions += 1
        metrics.INTERRUPTIONS.inc()
        started, heard_ms, stopped = self.latency.now(), self.listening.stream_ms, None
        if self._held is not None:  # the agent already stopped at the caller when the onset was heard
            started, heard_ms, stopped = self._held
            self._held = None
            metrics.AGENT_PAUSES.labels("barge_in").inc()
        await self._silence_agent("turn_detected")
        self.latency.barge_in(heard_ms - self.listening.speech_started_ms, started, stopped)

    async def hold_agent(self) -> None:
        """The VAD's first trigger over the agent: pause it at the caller while the turn detector decides
        whether the caller is barging in (the next frame or two)."""
        if not self.caller.playback.server_side:
            return  # the client plays the audio: it stops on `speech_started`
        started, heard_ms = self.latency.now(), self.listening.stream_ms
        await self.caller.hold_playback()
        self._held = (started, heard_ms, self.latency.now())

    async def resume_agent(self) -> None:
        """The trigger was not speech: play on."""
        if self._held is not None:
            self._held = None
            metrics.AGENT_PAUSES.labels("played_on").inc()
            await self.caller.resume_playback()

    async def _silence_agent(self, reason: str) -> None:
        """Stop the agent mid-sentence: at the transport first, then its response; the item keeps what
        was heard."""
        response = self._response
        playback = self.caller.playback
        await self._stop_playback()
        if response is not None:
            await response.cancel(reason)
        if playback.server_side and self._last_spoken is not None:
            response_id, item = self._last_spoken
            self._last_spoken = None
            if self.conversation.get(item.id) is not None:
                self._truncate(item.id, 0, int(playback.heard_ms(item.id)), clamp=True)
            self.emit(se.OutputAudioBufferCleared(response_id=response_id))

    async def _stop_playback(self) -> None:
        """Silence the agent at the caller now. On a server-playback transport the audio still queued for
        it is dropped first, and the active response's later deltas refused: the session, not the
        transport, decides that late audio is not played."""
        if self.caller.playback.server_side:
            self.outbound.cut_audio(self._response.id if self._response is not None else None)
        await self.caller.interrupt_playback()

    def spoke(self, response_id: str, item: Item) -> None:
        """A response started sending audio for `item` (the one a barge-in would cut)."""
        self._last_spoken = (response_id, item)

    def _commit(self, *, manual: bool, item_id: str | None = None) -> Item | None:
        duration = self.listening.buffered_ms()
        if manual and duration < MIN_COMMIT_MS:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {duration:.2f}ms of audio.",
            )
        if manual:
            self.turn_ended_at = time.monotonic()
        utterance: Utterance = self.listening.take()
        part = ContentPart(type="input_audio", audio=bytearray(utterance.wire), audio_format=self.config.input_format)
        item = Item(id=item_id or new_id("item"), type="message", role="user", content=[part])
        previous = self.conversation.add(item)
        self.emit(se.InputAudioBufferCommitted(item_id=item.id, previous_item_id=previous))
        self._announce_item(item, previous)
        self.turns += 1
        if utterance.speech_pcm is not None:
            self._start_transcription(item, utterance.speech_pcm, utterance.speculation)
        return item

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
            self.latency.mark("transcript")
            # What the caller said about cards, SSNs or emails reaches no client, brain or record.
            shown = await redact_offloaded(text)
            item.content[0].transcript = shown
            if self.agent.pci_mode and shown != text and holds_card(text):
                self._keypad_please()
            if self.config.transcription is not None:
                if shown:
                    self.emit(se.ConversationItemInputAudioTranscriptionDelta(item_id=item.id, content_index=0,
                                                                              delta=shown))
                self.emit(se.ConversationItemInputAudioTranscriptionCompleted(
                    item_id=item.id, content_index=0, transcript=shown,
                    audio_seconds=round(pcm.size / STT_RATE, 3)))
            if self.recorder:
                self.recorder.item(item)

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
            self.recorder.item(item)

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
            self.recorder.item(item, truncated_at_ms=audio_end_ms)

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
            self._hand_off("the agent's engine failed")
            self._after_response(lambda: self.caller.transfer(target, "the agent's engine failed"))

    def create_response(self, params: ce.ResponseParams, say: str | None = None,
                        engine: Engine | None = None) -> ResponseRun:
        if self.operator is not None:
            raise RealtimeError("operator_on_call", "An operator has taken this call over; the agent answers "
                                "nothing more.")
        if self._response is not None:
            raise RealtimeError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        settings = ResponseSettings.resolve(params, config=self.config, dialect=self.dialect, voices=self._voices(),
                                            session_id=self.id, audio_lead_ms=self.audio_lead_ms)
        run = ResponseRun(self, settings, engine or self.engine, say=say)
        self._response = run
        self.listening.agent_audibility_changed()

        def finished(_task: asyncio.Task[None]) -> None:
            if say is None and self.agent.fallback and run.spoken_text().strip() == self.agent.fallback.strip():
                self.fallthroughs += 1
                metrics.FALLTHROUGHS.inc()
            if self._response is run:
                self._response = None
                self.listening.agent_audibility_changed()
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
        if self._response is not None or self.closed or self.operator is not None:
            return None
        return self.create_response(ce.ResponseParams(), say=text)

    async def _cancel_by_client(self, response_id: str | None) -> None:
        response = self._response
        if response is None or (response_id is not None and response_id != response.id):
            raise RealtimeError("response_cancel_not_active", "Cancellation failed: no active response found.",
                                param="response_id" if response_id else None)
        await self._stop_playback()
        await response.cancel("client_cancelled")

    async def _clear_output_buffer(self) -> None:
        """The client asks the server to stop playing (WebRTC/SIP): cut at what was heard."""
        await self._stop_playback()
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
        self._hand_off(reason)
        if self.recorder:
            self.recorder.audit("call.transferred", {"target": target, "transport": self.caller.transport})
        self._after_response(lambda: self.caller.transfer(target, reason))

    def _hand_off(self, reason: str) -> None:
        """Who is calling and why, for the person taking over (the escalation queue, a SIP whisper)."""
        self.handoff = handoff_of(call_id=self.id, agent=self.agent.name, transport=self.caller.transport,
                                  caller=self.caller_id, reason=reason, items=self.conversation.visible(),
                                  owner=self.recorder.owner if self.recorder else None)
        if self.escalated is not None:
            self.escalated(self.handoff)

    async def take_over(self, operator: str) -> None:
        """An operator takes the call over from the escalation queue (the transport now carries their
        voice): the agent stops mid-sentence, if it is talking, and answers nothing more."""
        self.operator = operator
        await self._silence_agent("client_cancelled")

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
            if self._response is not None or self.agent_audible():
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
        self.listening.agent_finished()
        actions, self._pending_actions = self._pending_actions, []
        for action in actions:
            task = asyncio.get_running_loop().create_task(action())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._keypad_line_due:
            self._keypad_line_due = False
            self._say_after(self.agent.pci_keypad_line)

    async def send_dtmf(self, digits: str) -> None:
        await self.caller.send_dtmf(digits)

    def dtmf_received(self, digit: str) -> None:
        """A key press from the caller (phones): a PCI digit, a menu choice, or just an event for the client."""
        if self.consent is not None and self.consent.pending:
            self.emit(se.InputAudioBufferDtmfEventReceived(event=digit, received_at=int(time.time())))
            verdict = self.consent.key(digit)
            if verdict is not None:
                self._consent_given(verdict)
            return
        press = self.keypad.press(digit, self.agent.dtmf_menu)
        if press in (KeyPress.TYPED, KeyPress.ENTERED):
            self.listening.drop_speech()  # the key's own tone on the line is no turn of the caller's
        if press is KeyPress.TYPED:
            return  # a PCI digit: no event, item, log line or record ever holds it
        if press is not KeyPress.ENTERED:
            self.emit(se.InputAudioBufferDtmfEventReceived(event=digit, received_at=int(time.time())))
        if press in (KeyPress.ENTERED, KeyPress.MENU):
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

    # -- recording and consent ---------------------------------------------------------------------

    def recording_silenced(self) -> bool:
        """Whether the recording hears silence now: a PCI value being typed, or a span marked sensitive."""
        return self.keypad.entry is not None or self.marked_sensitive

    def mark_sensitive(self, sensitive: bool) -> None:
        """An operator (the control API) marks what follows sensitive, or ends the span."""
        self.marked_sensitive = sensitive

    def _keypad_please(self) -> None:
        """The caller read a card number out: whatever the agent was about to say to it is cut, and the
        caller is asked to use the keypad instead (the number itself was redacted before anyone saw it)."""
        metrics.PCI_SPOKEN_CARDS.inc()

        async def ask() -> None:
            response = self._response
            if response is not None or self.agent_audible():
                await self._silence_agent("turn_detected")
            if response is not None and response.task is not None:
                await asyncio.wait([response.task], timeout=1.0)
                await asyncio.sleep(0)  # its done-callback clears `_response`
            if not self.closed:
                self.say(self.agent.pci_keypad_line)

        self._spawn(ask())

    def _card_typed(self, spec: dict[str, Any]) -> None:
        """A client typed a card number (masked before anyone saw it): on a PCI agent's call the caller is
        asked to use the keypad once the next response ends. A typed item is answered when the client asks
        (`response.create`), so the line follows that answer rather than racing it."""
        metrics.PCI_TYPED_CARDS.inc()
        if self.agent.pci_mode and spec.get("role", "user") == "user":
            self._keypad_line_due = True

    def _hear_consent(self, item: Item) -> None:
        """The caller's turn while consent is awaited: its words (once transcribed) are the answer."""

        async def hear() -> None:
            transcription = self._transcriptions.get(item.id)
            if transcription is not None:
                await asyncio.gather(transcription, return_exceptions=True)
            if self.closed or self.consent is None or not self.consent.pending:
                return
            heard = item.content[0].transcript if item.content else None
            verdict = self.consent.heard(heard or "")
            if verdict is not None:
                self._consent_given(verdict)
            else:
                self._say_after(self.agent.recording.consent_prompt)

        task = asyncio.get_running_loop().create_task(hear())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _consent_given(self, agreed: bool) -> None:
        policy = self.agent.recording
        if agreed:
            lines = [policy.agreed_line, *([self.agent.greeting] if self._greet_after_consent and self.agent.greeting
                                          else [])]
            self._say_after(" ".join(lines))
            return
        recording, self.recording = self.recording, None
        self.listening.tap = None
        if recording is not None:  # no recording without a yes: what was taken while asking goes
            # Not one of the call's tasks, which close() cancels: the file must go even if the caller hangs up.
            self._discarding = asyncio.get_running_loop().create_task(recording.discard())
        if policy.on_decline == "continue":
            self._say_after(policy.declined_line)
            return
        self.end_reason = "recording consent declined"
        self._say_after(f"{policy.declined_line} {self.agent.goodbye}",
                        then=lambda: self.caller.hang_up("recording consent declined"))

    def _say_after(self, text: str, then: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Say `text` once the agent is quiet (the question may still be playing), then do `then`."""

        async def say() -> None:
            response = self._response
            if response is not None and response.task is not None:
                await asyncio.wait([response.task])
                await asyncio.sleep(0)  # its done-callback clears `_response`
            if self.closed:
                return
            self.say(text)
            if then is not None:
                self._after_response(then)

        self._spawn(say())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_recording(self) -> dict[str, Any]:
        assert self.recording is not None
        consent = self.consent.record() if self.consent is not None else None
        if consent is not None and consent["by"] == "voice" and consent["answer"]:
            consent["answer"] = redact(consent["answer"])[0]
        summary = await self.recording.save(consent)
        return {**summary.as_metadata(), "consent": consent}

    def note_first_response(self) -> None:
        """Called by a response when its first audio (or text) leaves: the turn latency KPI."""
        if self.turn_ended_at is None:
            return
        latency_ms = (time.monotonic() - self.turn_ended_at) * 1000.0
        self.turn_ended_at = None
        metrics.FIRST_RESPONSE_SECONDS.observe(latency_ms / 1000.0)
        if self.first_response_ms is None:
            self.first_response_ms = latency_ms
        playback = self.caller.playback
        self.latency.sent(self._last_spoken[1].id if self._last_spoken else None,
                          heard_known=playback.server_side and playback.line is not None)

    def note_latency(self, mark: str) -> None:
        self.latency.mark(mark)

    def _turn_timed(self, turn: TurnLatency) -> None:
        labels = (self.caller.transport, self.engine.name, self.agent.name)
        for stage, ms in turn.stages.items():
            if ms is not None:
                metrics.TURN_STAGE_SECONDS.labels(stage, *labels).observe(ms / 1000.0)
        metrics.TURN_SECONDS.labels(*labels).observe(turn.total_ms / 1000.0)
        if self.recorder:
            self.recorder.turn(turn)

    def _barge_in_timed(self, barge_in: BargeIn) -> None:
        metrics.BARGE_IN_STOP_SECONDS.labels(self.caller.transport, self.engine.name,
                                             self.agent.name).observe(barge_in.stop_ms / 1000.0)
        if self.recorder:
            self.recorder.barge_in(barge_in)

    # -- what responses ask of the call (ResponseHost) ------------------------------------------------

    @property
    def playback(self) -> PlaybackTracker:
        return self.caller.playback

    def engine_failed(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason  # the first cause is the one the record keeps

    def gateway_tools(self) -> list[ToolSpec]:
        # Offered whatever the call's roles: a tool it may not run answers with an error the model can say,
        # and the attempt is audited (run_gateway_tool), rather than the agent not knowing why it cannot help.
        return self.tools.specs()

    def is_gateway_tool(self, name: str) -> bool:
        return self.tools.has(name)

    async def run_gateway_tool(self, call: ToolCall) -> ToolResult:
        ctx = ToolContext(call_id=call.call_id, session_id=self.id, agent=self.agent, roles=self.roles, actions=self)
        # The engine's call carries masks for PCI values; the tool alone gets the digits typed for it.
        return await run_on_call(self.tools, call.name, self.keypad.tool_arguments(call.name, call.arguments), ctx,
                                 self.recorder)

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


def _saved() -> bool:
    """A saved recording's sensitivity."""
    return False

"""One response: from `response.created` to `response.done`, whatever happens in between.

The engine streams content; this turns it into OpenAI's event sequence (output items, content
parts, deltas, the `.done` events), runs gateway tools in place, and always finishes — completed,
cancelled on barge-in, or failed — with every open item closed and a `response.done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from voxgate.audio.formats import AudioFormat, AudioFormatError, encode_pcm
from voxgate.audio.resample import StreamResampler
from voxgate.engines.base import (
    AudioChunk,
    Engine,
    EngineError,
    HistoryEntry,
    ResponseRequest,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from voxgate.observability import metrics
from voxgate.protocol import client_events as ce
from voxgate.protocol import server_events as se
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import ContentPart, Dialect, Item

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from voxgate.agents import AgentConfig
    from voxgate.protocol.session_config import SessionConfig
    from voxgate.session.conversation import Conversation
    from voxgate.session.keypad import Keypad
    from voxgate.session.playback import PlaybackTracker
    from voxgate.session.recorder import CallRecorder
    from voxgate.tools.registry import ToolResult

log = logging.getLogger("voxgate.response")

MAX_TOOL_ROUNDS = 4  # gateway tools called back-to-back within one response
DELTA_MS = 200  # audio is sent in pieces of at most this much, so cancellation is fine-grained


class ResponseHost(Protocol):
    """What a response needs of the call it speaks in (the `Session` is one): where its events go, the
    conversation it adds to, what the engine is told, the gateway tools, and the playback it feeds."""

    @property
    def agent(self) -> AgentConfig: ...

    @property
    def brain_state(self) -> dict[str, Any]: ...

    @property
    def keypad(self) -> Keypad: ...

    @property
    def conversation(self) -> Conversation: ...

    @property
    def playback(self) -> PlaybackTracker: ...

    @property
    def recorder(self) -> CallRecorder | None: ...

    def emit(self, event: se.ServerEvent) -> None: ...

    def emit_audio(self, event: se.ResponseOutputAudioDelta) -> bool:
        """False when the delta was dropped (a client that does not read): it was not sent."""
        ...

    def error(self, exc: RealtimeError) -> None: ...

    async def transcripts_settled(self) -> None:
        """Every committed user turn has its transcript (the engine needs the words)."""
        ...

    def spoke(self, response_id: str, item: Item) -> None:
        """The response started audio for `item` (the one a barge-in would cut)."""
        ...

    def note_first_response(self) -> None:
        """The response's first audio or text left: the turn-latency KPI."""
        ...

    def note_latency(self, mark: str) -> None:
        """A mark of the turn's latency budget was reached (observability.latency_budget.MARKS)."""
        ...

    def engine_failed(self, reason: str) -> None:
        """The engine gave up on a response; the call record shows why."""
        ...

    def gateway_tools(self) -> list[ToolSpec]:
        """The gateway tools offered to the engine."""
        ...

    def is_gateway_tool(self, name: str) -> bool: ...

    async def run_gateway_tool(self, call: ToolCall) -> ToolResult:
        """Run a gateway tool the engine called (validated, redacted, recorded)."""
        ...


@dataclass(frozen=True)
class ResponseSettings:
    instructions: str
    modalities: list[str]
    voice: str
    output_format: AudioFormat
    client_tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    max_output_tokens: int | str
    in_conversation: bool
    metadata: dict[str, str] | None
    input: list[dict[str, Any]] | None
    conversation_id: str | None
    speed: float
    temperature: float
    audio_lead_ms: float  # how far ahead of real time its audio may run

    @classmethod
    def resolve(cls, p: ce.ResponseParams, *, config: SessionConfig, dialect: Dialect, voices: Collection[str],
                session_id: str, audio_lead_ms: float) -> ResponseSettings:
        """`p` over the session's `config`; `voices`: what the engine speaks (empty: any)."""
        cfg = config
        output_format = cfg.output_format
        if p.output_format is not None:
            try:
                output_format = (AudioFormat.from_beta(p.output_format) if dialect == "beta"
                                 else AudioFormat.from_ga(p.output_format))
            except (AudioFormatError, TypeError, AttributeError) as exc:
                raise RealtimeError("invalid_value", f"Invalid response output format: {exc}",
                                    param="response.audio.output.format") from exc
        voice = p.voice if p.voice is not None else cfg.voice
        if voices and voice not in voices:
            raise RealtimeError("invalid_value", f"Unsupported voice {voice!r}.", param="response.voice")
        return cls(
            instructions=p.instructions if p.instructions is not None else cfg.instructions,
            modalities=p.output_modalities or list(cfg.output_modalities),
            voice=voice,
            output_format=output_format,
            client_tools=p.tools if p.tools is not None else list(cfg.tools),
            tool_choice=p.tool_choice if p.tool_choice is not None else cfg.tool_choice,
            max_output_tokens=p.max_output_tokens if p.max_output_tokens is not None else cfg.max_output_tokens,
            in_conversation=p.conversation == "auto",
            metadata=p.metadata,
            input=p.input,
            conversation_id=f"conv_{session_id[5:]}" if p.conversation == "auto" else None,
            speed=cfg.speed,
            temperature=cfg.temperature,
            audio_lead_ms=audio_lead_ms,
        )

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


class ResponseRun:
    def __init__(self, host: ResponseHost, settings: ResponseSettings, engine: Engine, say: str | None = None) -> None:
        self.id = new_id("resp")
        self.host = host
        self.engine = engine
        self.status: se.ResponseStatus = "in_progress"
        self.settings = settings
        self.say = say
        self.task: asyncio.Task[None] | None = None
        self.output: list[Item] = []
        self.audio_item: Item | None = None  # the assistant item whose audio the caller is hearing
        self._message: Item | None = None
        self._resampler: StreamResampler | None = None  # engine audio -> the output format's rate
        self._cancel_reason: str | None = None
        self._first_sent = False
        self._private_history: list[HistoryEntry] = []  # gateway tool calls of an out-of-band response
        self._audio_ms_out = 0.0
        self._audio_started_at: float | None = None
        self._text_chars_out = 0
        self._engine_usage: dict[str, Any] | None = None  # real usage, from engines that report it

    # -- control -----------------------------------------------------------------------------------

    async def cancel(self, reason: str) -> None:
        """Stop now; returns once `response.done` (cancelled) has been queued."""
        if self.task is None or self.task.done():
            return
        self._cancel_reason = reason
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def run(self) -> None:
        s = self.host
        s.emit(se.ResponseCreated(response=self._resource()))
        status: se.ResponseStatus = "completed"
        error: RealtimeError | None = None  # why it failed
        try:
            await self._generate()
        except asyncio.CancelledError:
            status = "cancelled"
        except RealtimeError as exc:
            status, error = "failed", exc
            s.error(exc)
        except EngineError as exc:  # the engine says why (an upstream refused, timed out, dropped)
            log.warning("response %s failed: %s", self.id, exc)
            status, error = "failed", RealtimeError("engine_error", f"The engine failed: {exc}", type="server_error")
            s.error(error)
            s.engine_failed(f"engine_error: {exc}")
        except Exception as exc:
            log.exception("response %s failed", self.id)
            status, error = "failed", RealtimeError("engine_error", f"The engine failed: {type(exc).__name__}: {exc}",
                                                    type="server_error")
            s.error(error)
        self._close_message("incomplete" if status != "completed" else "completed")
        self.status = status
        self._engine_usage = self.engine.take_usage(s.brain_state)
        metrics.RESPONSES.labels(status).inc()
        s.emit(se.ResponseDone(response=self._resource(error)))
        if s.recorder:
            s.recorder.response_done(self.usage())

    def spoken_text(self) -> str:
        """What the response said (its messages' text or transcript), e.g. to tell a fallback line."""
        return " ".join(part.transcript or part.text or "" for item in self.output if item.type == "message"
                        for part in item.content)

    # -- generation --------------------------------------------------------------------------------

    async def _generate(self) -> None:
        s = self.host
        if self.say is None:
            await s.transcripts_settled()
        for _ in range(MAX_TOOL_ROUNDS + 1):
            request = self._request()
            ran_gateway_tool = False
            async with contextlib.aclosing(self.engine.respond(request)) as stream:  # type: ignore[type-var]
                async for out in stream:
                    s.note_latency("first_token")  # the brain's or upstream's first output
                    if isinstance(out, TextDelta):
                        self._text(out.text)
                    elif isinstance(out, AudioChunk):
                        if self.settings.audio:
                            s.note_latency("tts_first_audio")
                            await self._audio(out.pcm, out.rate)
                    elif isinstance(out, ToolCall):
                        self._close_message("completed")
                        if self._is_gateway_tool(out.name):
                            await self._run_gateway_tool(out)
                            ran_gateway_tool = True
                            break
                        self._client_tool_call(out)
                        return
                    await asyncio.sleep(0)  # let the writer drain between chunks
            if not ran_gateway_tool:
                return
            self._close_message("completed")

    def _is_gateway_tool(self, name: str) -> bool:
        # A client may shadow a gateway tool by declaring one of the same name: clients keep their code.
        if any(t["name"] == name for t in self.settings.client_tools):
            return False
        return self.host.is_gateway_tool(name)

    def _request(self) -> ResponseRequest:
        s = self.host
        history = self._input_history() if self.settings.input is not None else s.conversation.history()
        history = [*history, *self._private_history]
        tools: list[ToolSpec] = []
        if self.settings.tool_choice != "none":
            client_names = {t["name"] for t in self.settings.client_tools}
            tools = [ToolSpec(t["name"], t.get("description", ""), t.get("parameters", {}), server=False)
                     for t in self.settings.client_tools]
            if not tools or s.agent.client_tools == "extend":  # the agent's say whether they stand beside
                tools += [t for t in s.gateway_tools() if t.name not in client_names]
        return ResponseRequest(
            history=history,
            instructions=self.settings.instructions,
            tools=tools,
            tool_choice=self.settings.tool_choice,
            modalities=self.settings.modalities,
            voice=self.settings.voice,
            agent=s.agent,
            state=s.brain_state,
            keypad=s.keypad,
            user_audio_wire=bytes(part.audio) if (part := self._last_user_audio_part()) and part.audio else None,
            user_audio_format=part.audio_format if part else None,
            say=self.say,
            speed=self.settings.speed,
            temperature=self.settings.temperature,
            max_output_tokens=m if isinstance(m := self.settings.max_output_tokens, int) else None,
            zero_retention=s.recorder is not None and s.recorder.zero_retention,
        )

    def _input_history(self) -> list[HistoryEntry]:
        """History for a response given explicit `input` (item references or inline text messages)."""
        out: list[HistoryEntry] = []
        for i, entry in enumerate(self.settings.input or []):
            if not isinstance(entry, dict):
                raise RealtimeError("invalid_type", "response.input entries must be objects.",
                                    param=f"response.input[{i}]")
            if entry.get("type") == "item_reference":
                item = self.host.conversation.get(str(entry.get("id")))
                if item is None:
                    raise RealtimeError("item_not_found", f"Item {entry.get('id')!r} not found.",
                                        param=f"response.input[{i}].id")
                out.append(HistoryEntry(kind=item.role or "user", text=item.text) if item.type == "message"
                           else HistoryEntry(kind=item.type, name=item.name or "", call_id=item.call_id or "",
                                             arguments=item.arguments or "", output=item.output or ""))
            elif entry.get("type", "message") == "message":
                texts = [c.get("text") or c.get("transcript") or "" for c in entry.get("content", [])
                         if isinstance(c, dict)]
                role = entry.get("role", "user")
                if role not in ("user", "assistant", "system"):
                    raise RealtimeError("invalid_value", "Invalid role.", param=f"response.input[{i}].role")
                out.append(HistoryEntry(kind=role, text=" ".join(texts)))
            else:
                raise RealtimeError("invalid_value", "Unsupported response.input entry.",
                                    param=f"response.input[{i}].type")
        return out

    def _last_user_audio_part(self) -> ContentPart | None:
        for item in reversed(self.host.conversation.visible()):
            if item.role == "user":
                return next((p for p in item.content if p.type == "input_audio" and p.audio), None)
        return None

    # -- output items ------------------------------------------------------------------------------

    def _add_output_item(self, item: Item) -> int:
        """Announce a new output item (and add it to the conversation); returns its output_index."""
        s = self.host
        index = len(self.output)
        self.output.append(item)
        snapshot = item.snapshot()
        s.emit(se.ResponseOutputItemAdded(response_id=self.id, output_index=index, item=snapshot))
        if self.settings.in_conversation:
            previous = s.conversation.add(item)
            s.emit(se.ConversationItemAdded(previous_item_id=previous, item=snapshot))
        return index

    def _open_message(self) -> Item:
        if self._message is not None:
            return self._message
        s = self.host
        item = Item(id=new_id("item"), type="message", role="assistant", status="in_progress")
        index = self._add_output_item(item)
        if self.settings.audio:
            part = ContentPart(type="output_audio", transcript="", audio=bytearray(),
                               audio_format=self.settings.output_format)
        else:
            part = ContentPart(type="output_text", text="")
        item.content.append(part)
        s.emit(se.ResponseContentPartAdded(response_id=self.id, item_id=item.id, output_index=index,
                                           part=se.OutputPart("audio" if self.settings.audio else "text", "")))
        if self.settings.audio:
            if s.playback.server_side and self.audio_item is None:
                s.emit(se.OutputAudioBufferStarted(response_id=self.id))
            self.audio_item = item
            if self.settings.in_conversation:
                s.spoke(self.id, item)
        self._message = item
        self._resampler = None
        return item

    def _text(self, text: str) -> None:
        if not text:
            return
        s = self.host
        item = self._open_message()
        part = item.content[0]
        self._text_chars_out += len(text)
        if self.settings.audio:
            part.segments.append((part.audio_ms, text.strip()))
            part.transcript = (part.transcript or "") + text
            s.emit(se.ResponseOutputAudioTranscriptDelta(response_id=self.id, item_id=item.id,
                                                         output_index=self.output.index(item), delta=text))
        else:
            part.text = (part.text or "") + text
            s.emit(se.ResponseOutputTextDelta(response_id=self.id, item_id=item.id,
                                              output_index=self.output.index(item), delta=text))
            self._first_output()

    async def _audio(self, pcm: np.ndarray, rate: int) -> None:
        item = self._open_message()
        if self._resampler is None or self._resampler.in_rate != rate:
            self._resampler = StreamResampler(rate, self.settings.output_format.rate)
        self._send_audio(item, self._resampler.process(pcm))
        await self._keep_pace()

    async def _keep_pace(self) -> None:
        """Stay at most `audio_lead_ms` ahead of real time.

        Generating a whole reply at once would fill the caller's buffer with audio they may never
        hear; pacing keeps what was sent close to what was heard, lets a barge-in cancel the unsaid
        rest before it is synthesised, and bounds memory at every hop.
        """
        if self._audio_started_at is None:
            self._audio_started_at = time.monotonic()
            return
        lead_ms = self._audio_ms_out - (time.monotonic() - self._audio_started_at) * 1000.0
        excess_ms = lead_ms - self.settings.audio_lead_ms
        if excess_ms > 0:
            await asyncio.sleep(excess_ms / 1000.0)

    def _send_audio(self, item: Item, pcm: npt.NDArray[np.int16]) -> None:
        """PCM at the output format's rate, in deltas of at most DELTA_MS; the item keeps it as wire bytes."""
        s = self.host
        fmt = self.settings.output_format
        part = item.content[0]
        index = self.output.index(item)
        step = fmt.rate * DELTA_MS // 1000
        for start in range(0, pcm.size, step):
            piece = pcm[start:start + step]
            event = se.ResponseOutputAudioDelta(response_id=self.id, item_id=item.id, output_index=index,
                                                pcm=piece, format=fmt)
            if not s.emit_audio(event):
                continue  # dropped for a client that does not read: not sent, so not heard
            ms = piece.size * 1000.0 / fmt.rate
            assert part.audio is not None
            part.audio.extend(encode_pcm(piece, fmt))
            self._audio_ms_out += ms
            s.playback.sent(item.id, ms)
            self._first_output()

    def _first_output(self) -> None:
        if not self._first_sent:
            self._first_sent = True
            self.host.note_first_response()

    def _close_message(self, status: str) -> None:
        item = self._message
        if item is None:
            return
        s = self.host
        self._message = None
        part = item.content[0]
        index = self.output.index(item)
        if self.settings.audio:
            if self._resampler is not None and status == "completed":
                self._send_audio(item, self._resampler.flush())
            self._resampler = None
            s.emit(se.ResponseOutputAudioDone(response_id=self.id, item_id=item.id, output_index=index))
            s.emit(se.ResponseOutputAudioTranscriptDone(response_id=self.id, item_id=item.id, output_index=index,
                                                        transcript=part.transcript or ""))
            done_part = se.OutputPart("audio", part.transcript or "")
        else:
            s.emit(se.ResponseOutputTextDone(response_id=self.id, item_id=item.id, output_index=index,
                                             text=part.text or ""))
            done_part = se.OutputPart("text", part.text or "")
        s.emit(se.ResponseContentPartDone(response_id=self.id, item_id=item.id, output_index=index, part=done_part))
        item.status = "completed" if status == "completed" else "incomplete"
        snapshot = item.snapshot()
        s.emit(se.ResponseOutputItemDone(response_id=self.id, output_index=index, item=snapshot))
        if self.settings.in_conversation:
            s.emit(se.ConversationItemDone(previous_item_id=s.conversation.previous_of(item.id), item=snapshot))
            if s.recorder:
                s.recorder.item(item)

    # -- tools -------------------------------------------------------------------------------------

    def _client_tool_call(self, call: ToolCall) -> None:
        """A function call for the client to run: it answers with a function_call_output item."""
        s = self.host
        item = Item(id=new_id("item"), type="function_call", status="in_progress", call_id=call.call_id,
                    name=call.name, arguments="")
        index = self._add_output_item(item)
        s.emit(se.ResponseFunctionCallArgumentsDelta(response_id=self.id, item_id=item.id, output_index=index,
                                                     call_id=call.call_id, delta=call.arguments))
        s.emit(se.ResponseFunctionCallArgumentsDone(response_id=self.id, item_id=item.id, output_index=index,
                                                    call_id=call.call_id, name=call.name, arguments=call.arguments))
        item.arguments = call.arguments
        item.status = "completed"
        snapshot = item.snapshot()
        s.emit(se.ResponseOutputItemDone(response_id=self.id, output_index=index, item=snapshot))
        if self.settings.in_conversation:
            s.emit(se.ConversationItemDone(previous_item_id=s.conversation.previous_of(item.id), item=snapshot))
        self._first_output()
        if s.recorder:
            s.recorder.client_tool_call(item)

    async def _run_gateway_tool(self, call: ToolCall) -> None:
        """Run a gateway tool in place; the caller's client never sees the call, only the reply."""
        s = self.host
        result = await s.run_gateway_tool(call)
        call_item = Item(id=new_id("item"), type="function_call", call_id=call.call_id, name=call.name,
                         arguments=call.arguments)
        output_item = Item(id=new_id("item"), type="function_call_output", call_id=call.call_id,
                           output=result.output)
        if self.settings.in_conversation:
            s.conversation.add(call_item, internal=True)
            s.conversation.add(output_item, internal=True)
        else:
            self._private_history += [
                HistoryEntry(kind="function_call", name=call.name, call_id=call.call_id, arguments=call.arguments),
                HistoryEntry(kind="function_call_output", name=call.name, call_id=call.call_id,
                             output=result.output),
            ]

    # -- wire --------------------------------------------------------------------------------------

    def _resource(self, error: RealtimeError | None = None) -> se.ResponseResource:
        """This response as its `response.created` / `response.done` show it, now."""
        st = self.settings
        return se.ResponseResource(
            id=self.id,
            status=self.status,
            output=tuple(item.snapshot() for item in self.output),
            conversation_id=st.conversation_id,
            max_output_tokens=st.max_output_tokens,
            metadata=st.metadata,
            modalities=tuple(st.modalities),
            voice=st.voice,
            output_format=st.output_format,
            temperature=st.temperature,
            usage=self.usage() if self.status != "in_progress" else None,
            cancel_reason=(self._cancel_reason or "client_cancelled") if self.status == "cancelled" else None,
            error_type=error.type if error is not None else None,
            error_code=error.code if error is not None else None,
        )

    def usage(self) -> dict[str, Any]:
        """Token usage in OpenAI's shape: as the engine reported it (the openai engine), or else
        estimates on OpenAI's scale (about 4 characters a text token, 50 ms an audio token) for cost
        comparison, since the local engine has no tokens."""
        if self._engine_usage is not None:
            return reported_usage(self._engine_usage)
        history_chars = sum(len(e.text) + len(e.output) for e in self.host.conversation.history())
        input_text = history_chars // 4
        output_text = self._text_chars_out // 4
        output_audio = int(self._audio_ms_out // 50)
        return {
            "total_tokens": input_text + output_text + output_audio,
            "input_tokens": input_text,
            "output_tokens": output_text + output_audio,
            "input_token_details": {"text_tokens": input_text, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }


def reported_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """An engine's usage with every field OpenAI's shape has (an engine may report a subset)."""
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    return {
        **usage,
        "total_tokens": usage.get("total_tokens", 0),
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "input_token_details": {**inp, "text_tokens": inp.get("text_tokens", 0),
                                "audio_tokens": inp.get("audio_tokens", 0),
                                "cached_tokens": inp.get("cached_tokens", 0)},
        "output_token_details": {**out, "text_tokens": out.get("text_tokens", 0),
                                 "audio_tokens": out.get("audio_tokens", 0)},
    }

"""One upstream Realtime session, sans-IO: what to send before a response, and what each server event means.

The gateway's Session is the source of truth for the conversation: it holds only what the caller
actually heard. Before each response, `begin_response` mirrors that history onto the upstream *by
content*: upstream items that no longer match it (a reply trimmed by barge-in, items a client deleted,
output the gateway never used) are deleted, and whatever history is missing is created after the items
that still match. Truncation therefore needs no audio arithmetic here: a trimmed reply is re-created as
the text that was heard. Then `response.create`.

`receive` turns the upstream's server events into notes for the shell: engine outputs (text, 24 kHz
audio, function calls de-duplicated by call_id), the end of the response with its usage, rate limits,
errors, and events to send back (a cancel that had to wait for `response.created`).

The upstream always speaks GA; beta names are accepted on the way in for servers that still send them.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxgate.audio.formats import PCM24K
from voxgate.engines.base import AudioChunk, EngineOutput, HistoryEntry, ResponseRequest, TextDelta, ToolCall
from voxgate.protocol.ids import new_id as mint_id
from voxgate.protocol.usage import add_usage

UPSTREAM_RATE = 24000  # pcm16 both ways: the only PCM rate OpenAI Realtime speaks
SAY_INSTRUCTIONS = "Say exactly the following words, and nothing else: {text}"

_AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")
_TEXT_DELTAS = ("response.output_audio_transcript.delta", "response.output_text.delta",
                "response.audio_transcript.delta", "response.text.delta")


@dataclass(frozen=True)
class Send:
    """A client event the shell must send now."""

    event: dict[str, Any]


@dataclass(frozen=True)
class Output:
    """Content of the response in flight, for the engine's caller."""

    value: EngineOutput


@dataclass(frozen=True)
class ResponseEnded:
    status: str  # completed | cancelled | incomplete | failed
    error: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class RateLimits:
    limits: list[dict[str, Any]]


@dataclass(frozen=True)
class UpstreamError:
    """An `error` event that does not end the response in flight (logged and counted)."""

    code: str | None
    message: str


Note = Send | Output | ResponseEnded | RateLimits | UpstreamError


@dataclass(frozen=True)
class MirroredItem:
    entry: HistoryEntry  # the history entry this upstream item stands for
    item_id: str | None  # None: nothing was created upstream (an empty turn)


class UpstreamConversation:
    """The gateway's view of one upstream session: its items, its config, the response in flight."""

    def __init__(self, *, transcription: dict[str, Any] | None = None,
                 new_id: Callable[[str], str] = mint_id) -> None:
        self.items: list[MirroredItem] = []
        self.response_id: str | None = None
        self._transcription = transcription
        self._new_id = new_id
        self._sent_config: dict[str, Any] | None = None
        self._sent_voice: str | None = None
        self._voice_update: tuple[str, str] | None = None  # (event_id, voice) of the last voice change
        self.refused_voices: set[str] = set()
        self._create_event: str | None = None  # event_id of a response.create not yet answered
        self._cancel_wanted = False
        self._calls_seen: set[str] = set()
        self._odd_byte = b""  # a pcm16 sample split across two audio deltas
        self._usage: dict[str, Any] = {}

    @property
    def in_flight(self) -> bool:
        """A response was asked for and has not ended: another response.create would be refused."""
        return self._create_event is not None or self.response_id is not None

    # -- what to send ------------------------------------------------------------------------------

    def begin_response(self, request: ResponseRequest, user_audio: bytes | None = None) -> list[dict[str, Any]]:
        """Client events that bring the upstream in line with `request`, ending with `response.create`.

        `user_audio` is the latest user turn as pcm16 at 24 kHz; it goes with that turn's item.
        """
        if self.in_flight:
            raise RuntimeError("the upstream still has a response in flight")
        events = self._configure(request)
        events += self.mirror(request.history, user_audio)
        event_id = self._new_id("event")
        create: dict[str, Any] = {"type": "response.create", "event_id": event_id}
        if request.say is not None:
            create["response"] = {"instructions": SAY_INSTRUCTIONS.format(text=request.say), "tool_choice": "none"}
        events.append(create)
        self._create_event = event_id
        self._cancel_wanted = False
        self._odd_byte = b""
        return events

    def cancel(self) -> list[dict[str, Any]]:
        """Stop the response in flight; if it has not been created yet, cancel it as soon as it is."""
        if self.response_id is not None:
            return [{"type": "response.cancel", "event_id": self._new_id("event"), "response_id": self.response_id}]
        if self._create_event is not None:
            self._cancel_wanted = True
        return []

    def _configure(self, request: ResponseRequest) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        config: dict[str, Any] = {
            "type": "realtime",
            "instructions": request.instructions,
            "output_modalities": ["audio"] if "audio" in request.modalities else ["text"],
            "tools": [{"type": "function", "name": t.name, "description": t.description,
                       "parameters": copy.deepcopy(t.parameters)} for t in request.tools],
            "tool_choice": copy.deepcopy(request.tool_choice),
            # The gateway decides turns (its VAD, its barge-in): the upstream only answers when asked.
            "audio": {"input": {"format": PCM24K.to_ga(), "transcription": self._transcription,
                                "turn_detection": None},
                      "output": {"format": PCM24K.to_ga()}},
        }
        if request.zero_retention:  # no trace of the session in the upstream's Traces dashboard
            config["tracing"] = None
        if config != self._sent_config:
            events.append({"type": "session.update", "event_id": self._new_id("event"), "session": config})
            self._sent_config = config
        # The voice goes in an update of its own: an upstream that refuses it (a name only the local
        # engine knows) refuses that update alone and keeps its default voice.
        voice = request.voice
        if voice and voice != self._sent_voice and voice not in self.refused_voices:
            event_id = self._new_id("event")
            events.append({"type": "session.update", "event_id": event_id,
                           "session": {"type": "realtime", "audio": {"output": {"voice": voice}}}})
            self._sent_voice = voice
            self._voice_update = (event_id, voice)
        return events

    def mirror(self, history: Sequence[HistoryEntry], user_audio: bytes | None = None) -> list[dict[str, Any]]:
        """Deletes and creates that make the upstream conversation equal `history`, in order."""
        events: list[dict[str, Any]] = []
        kept: list[MirroredItem] = []
        matched = 0
        for mirrored in self.items:
            if matched < len(history) and mirrored.entry == history[matched]:
                kept.append(mirrored)
                matched += 1
            elif mirrored.item_id is not None:
                events.append({"type": "conversation.item.delete", "event_id": self._new_id("event"),
                               "item_id": mirrored.item_id})
        self.items = kept
        missing = list(history[matched:])
        # The latest user turn is the one `user_audio` belongs to; older turns go as their transcript.
        audio_index = max((i for i, e in enumerate(missing) if e.kind == "user"), default=None) \
            if user_audio else None
        for i, entry in enumerate(missing):
            item = self._item_for(entry, user_audio if i == audio_index else None)
            if item is None:
                self.items.append(MirroredItem(entry, None))
                continue
            events.append({"type": "conversation.item.create", "event_id": self._new_id("event"), "item": item})
            self.items.append(MirroredItem(entry, item["id"]))
        return events

    def _item_for(self, entry: HistoryEntry, audio: bytes | None) -> dict[str, Any] | None:
        item_id = self._new_id("item")
        if entry.kind == "function_call":
            return {"id": item_id, "type": "function_call", "call_id": entry.call_id, "name": entry.name,
                    "arguments": entry.arguments or "{}"}
        if entry.kind == "function_call_output":
            return {"id": item_id, "type": "function_call_output", "call_id": entry.call_id,
                    "output": entry.output}
        content: list[dict[str, Any]] = []
        if audio:
            part: dict[str, Any] = {"type": "input_audio", "audio": base64.b64encode(audio).decode()}
            if entry.text:
                part["transcript"] = entry.text  # the gateway's own transcript: nothing to transcribe twice
            content.append(part)
        elif entry.text:
            content.append({"type": "output_text" if entry.kind == "assistant" else "input_text",
                            "text": entry.text})
        if not content:
            return None
        return {"id": item_id, "type": "message", "role": entry.kind, "content": content}

    # -- what arrived ------------------------------------------------------------------------------

    def receive(self, event: dict[str, Any]) -> list[Note]:
        kind = event.get("type")
        if kind == "error":
            return self._error(event.get("error") or {})
        if kind == "response.created":
            response_id = (event.get("response") or {}).get("id")
            if self._create_event is None or self.response_id is not None or not isinstance(response_id, str):
                return []
            self._create_event = None
            self.response_id = response_id
            return [Send(e) for e in self.cancel()] if self._cancel_wanted else []
        if kind == "response.done":
            return self._done(event.get("response") or {})
        if kind == "rate_limits.updated":
            limits = event.get("rate_limits")
            return [RateLimits([x for x in limits if isinstance(x, dict)])] if isinstance(limits, list) else []
        if self.response_id is None or event.get("response_id") != self.response_id:
            return []  # session acks, transcripts, or the tail of a response nobody is waiting for
        if kind in _AUDIO_DELTAS:
            pcm = self._pcm(event.get("delta"))
            return [Output(AudioChunk(pcm, UPSTREAM_RATE))] if pcm.size else []
        if kind in _TEXT_DELTAS:
            delta = event.get("delta")
            return [Output(TextDelta(delta))] if isinstance(delta, str) and delta else []
        if kind == "response.function_call_arguments.done":
            return self._call(event.get("call_id"), event.get("name"), event.get("arguments"))
        if kind == "response.output_item.done":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                return self._call(item.get("call_id"), item.get("name"), item.get("arguments"))
        return []

    def _error(self, error: dict[str, Any]) -> list[Note]:
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = str(error.get("message") or "upstream error")
        caused_by = error.get("event_id")
        if caused_by is not None and self._voice_update is not None and caused_by == self._voice_update[0]:
            self.refused_voices.add(self._voice_update[1])
            self._sent_voice = None
            self._voice_update = None
            return [UpstreamError(code, f"voice refused, the upstream's default is used: {message}")]
        if caused_by is not None and caused_by == self._create_event:
            self._create_event = None
            return [ResponseEnded("failed", message, code)]
        return [UpstreamError(code, message)]

    def _done(self, response: dict[str, Any]) -> list[Note]:
        if self.response_id is None or response.get("id") != self.response_id:
            return []
        self.response_id = None
        for item in response.get("output") or []:
            entry = _entry_of(item) if isinstance(item, dict) else None
            if entry is not None:
                self.items.append(MirroredItem(entry, str(item["id"])))
        usage = response.get("usage")
        if isinstance(usage, dict):
            add_usage(self._usage, usage)
        status = str(response.get("status") or "completed")
        if status != "failed":
            return [ResponseEnded(status)]
        error = ((response.get("status_details") or {}).get("error") or {})
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = str(error.get("message") or code or error.get("type") or "the upstream response failed")
        return [ResponseEnded("failed", message, code)]

    def _call(self, call_id: Any, name: Any, arguments: Any) -> list[Note]:
        if not isinstance(call_id, str) or not isinstance(name, str) or call_id in self._calls_seen:
            return []  # announced twice (arguments.done and output_item.done), or resent
        self._calls_seen.add(call_id)
        return [Output(ToolCall(name, arguments if isinstance(arguments, str) and arguments else "{}", call_id))]

    def _pcm(self, delta: Any) -> np.ndarray:
        if not isinstance(delta, str):
            return np.zeros(0, dtype=np.int16)
        try:
            data = self._odd_byte + base64.b64decode(delta)
        except (binascii.Error, ValueError):
            return np.zeros(0, dtype=np.int16)
        cut = len(data) - len(data) % 2
        self._odd_byte = data[cut:]
        return np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)

    def take_usage(self) -> dict[str, Any] | None:
        """Usage of the responses that ended since the last call."""
        usage, self._usage = self._usage, {}
        return usage or None


def _entry_of(item: dict[str, Any]) -> HistoryEntry | None:
    """The history entry an upstream output item will be, once the gateway has it."""
    if not isinstance(item.get("id"), str):
        return None
    if item.get("type") == "function_call":
        return HistoryEntry(kind="function_call", name=str(item.get("name") or ""),
                            call_id=str(item.get("call_id") or ""), arguments=str(item.get("arguments") or "{}"))
    if item.get("type") == "message" and item.get("role") == "assistant":
        parts = [p for p in item.get("content") or [] if isinstance(p, dict)]
        text = " ".join(str(p.get("transcript") or p.get("text") or "") for p in parts).strip()
        return HistoryEntry(kind="assistant", text=text)
    return None



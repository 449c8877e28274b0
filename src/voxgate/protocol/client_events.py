"""Parsing client events: JSON text in, a typed event out, or a RealtimeError naming what is wrong.

Both dialects send the same client events (beta adds `transcription_session.update`); the
differences are in the shapes of `session` and `response`, which are normalised here to GA.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.items import Dialect, ga_content_type
from voxgate.protocol.json_text import parse_json
from voxgate.protocol.session_config import check_modalities, check_tool_choice, check_tools

DTMF_KEYS = frozenset("0123456789*#ABCD")  # a telephone keypad's keys (RFC 4733 events 0-15)


@dataclass(frozen=True)
class ClientEvent:
    event_id: str | None


@dataclass(frozen=True)
class SessionUpdate(ClientEvent):
    session: dict[str, Any]


@dataclass(frozen=True)
class TranscriptionSessionUpdate(ClientEvent):
    session: dict[str, Any]


@dataclass(frozen=True)
class InputAudioBufferAppend(ClientEvent):
    audio: bytes


@dataclass(frozen=True)
class InputAudioBufferCommit(ClientEvent):
    pass


@dataclass(frozen=True)
class InputAudioBufferClear(ClientEvent):
    pass


@dataclass(frozen=True)
class ConversationItemCreate(ClientEvent):
    item: dict[str, Any]  # normalised to GA content types
    previous_item_id: str | None
    has_previous: bool  # "previous_item_id": null (append) differs from absent only in spelling


@dataclass(frozen=True)
class ConversationItemRetrieve(ClientEvent):
    item_id: str


@dataclass(frozen=True)
class ConversationItemTruncate(ClientEvent):
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class ConversationItemDelete(ClientEvent):
    item_id: str


@dataclass(frozen=True)
class ResponseParams:
    """Per-response overrides; None means "use the session's"."""

    instructions: str | None = None
    output_modalities: list[str] | None = None
    voice: str | None = None
    output_format: Any = None  # raw wire value, checked by the session
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | str | None = None
    conversation: str = "auto"  # "auto" or "none" (out-of-band)
    metadata: dict[str, str] | None = None
    input: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ResponseCreate(ClientEvent):
    response: ResponseParams = field(default_factory=ResponseParams)


@dataclass(frozen=True)
class ResponseCancel(ClientEvent):
    response_id: str | None


@dataclass(frozen=True)
class OutputAudioBufferClear(ClientEvent):
    pass


@dataclass(frozen=True)
class InputAudioBufferDtmfEvent(ClientEvent):
    """voxgate's own: a key the caller pressed on a page's keypad (a browser call has no carrier to report
    one), the counterpart of the server's `input_audio_buffer.dtmf_event_received`."""

    event: str  # one of 0-9 * # A-D


WIRE_TYPES: dict[type[ClientEvent], str] = {
    SessionUpdate: "session.update",
    TranscriptionSessionUpdate: "transcription_session.update",
    InputAudioBufferAppend: "input_audio_buffer.append",
    InputAudioBufferCommit: "input_audio_buffer.commit",
    InputAudioBufferClear: "input_audio_buffer.clear",
    ConversationItemCreate: "conversation.item.create",
    ConversationItemRetrieve: "conversation.item.retrieve",
    ConversationItemTruncate: "conversation.item.truncate",
    ConversationItemDelete: "conversation.item.delete",
    ResponseCreate: "response.create",
    ResponseCancel: "response.cancel",
    OutputAudioBufferClear: "output_audio_buffer.clear",
    InputAudioBufferDtmfEvent: "input_audio_buffer.dtmf_event",
}


# OpenAI's largest Realtime context, 128k tokens, is about 512 KiB of text: no longer item is of use.
MAX_ITEM_TEXT_CHARS = 512 * 1024


def parse_client_event(raw: str | bytes, dialect: Dialect, max_bytes: int, *,
                       max_item_chars: int = MAX_ITEM_TEXT_CHARS) -> ClientEvent:
    """One client event, or a RealtimeError naming what is wrong. `max_item_chars` bounds the text one
    conversation item (or inline response input) may hold, checked before anything else is done with it."""
    if len(raw) > max_bytes:
        raise RealtimeError("message_too_large", f"Message of {len(raw)} bytes exceeds the limit of {max_bytes}.")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise RealtimeError("invalid_json", "A client event must be a JSON object.")
    event_id = data.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise RealtimeError("invalid_type", "event_id must be a string.", param="event_id")
    try:
        return _parse(data, dialect, event_id, max_item_chars)
    except RealtimeError as exc:
        exc.event_id = event_id
        raise


def _check_text_size(item: Any, param: str, max_chars: int) -> None:
    """Refuse an item whose text (every text, transcript, arguments and output in it) is over `max_chars`,
    naming the field where it goes over, before any of it is read."""
    if not isinstance(item, dict):
        return
    fields: list[tuple[str, Any]] = [(f"{param}.arguments", item.get("arguments")),
                                     (f"{param}.output", item.get("output"))]
    content = item.get("content")
    if isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict):
                fields += [(f"{param}.content[{i}].text", part.get("text")),
                           (f"{param}.content[{i}].transcript", part.get("transcript"))]
    sizes = [(where, len(text)) for where, text in fields if isinstance(text, str)]
    total = sum(size for _, size in sizes)
    if total <= max_chars:
        return
    running = 0
    for where, size in sizes:
        running += size
        if running > max_chars:
            raise RealtimeError(
                "string_above_max_length",
                f"Invalid '{where}': string too long. An item holds at most {max_chars} characters of text, "
                f"but this one holds {total}.", param=where)


def _parse(d: dict[str, Any], dialect: Dialect, eid: str | None, max_item_chars: int) -> ClientEvent:
    kind = d.get("type")
    if not isinstance(kind, str):
        raise RealtimeError("missing_required_parameter", "Missing required parameter: 'type'.", param="type")
    match kind:
        case "session.update":
            _fields(d, {"session"})
            return SessionUpdate(eid, _object(d, "session"))
        case "transcription_session.update" if dialect == "beta":
            _fields(d, {"session"})
            return TranscriptionSessionUpdate(eid, _object(d, "session"))
        case "input_audio_buffer.append":
            _fields(d, {"audio"})
            audio = _required_str(d, "audio")
            try:
                return InputAudioBufferAppend(eid, base64.b64decode(audio, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise RealtimeError("invalid_value", "'audio' is not valid base64.", param="audio") from exc
        case "input_audio_buffer.commit":
            _fields(d, set())
            return InputAudioBufferCommit(eid)
        case "input_audio_buffer.clear":
            _fields(d, set())
            return InputAudioBufferClear(eid)
        case "input_audio_buffer.dtmf_event":
            _fields(d, {"event"})
            key = _required_str(d, "event")
            if len(key) != 1 or key not in DTMF_KEYS:
                raise RealtimeError("invalid_value", "'event' must be one keypad key: 0-9, *, # or A-D.",
                                    param="event")
            return InputAudioBufferDtmfEvent(eid, key)
        case "conversation.item.create":
            _fields(d, {"item", "previous_item_id"})
            prev = d.get("previous_item_id")
            if prev is not None and not isinstance(prev, str):
                raise RealtimeError("invalid_type", "previous_item_id must be a string or null.",
                                    param="previous_item_id")
            item = _object(d, "item")
            _check_text_size(item, "item", max_item_chars)
            return ConversationItemCreate(eid, _item(item), prev, "previous_item_id" in d)
        case "conversation.item.retrieve":
            _fields(d, {"item_id"})
            return ConversationItemRetrieve(eid, _required_str(d, "item_id"))
        case "conversation.item.delete":
            _fields(d, {"item_id"})
            return ConversationItemDelete(eid, _required_str(d, "item_id"))
        case "conversation.item.truncate":
            _fields(d, {"item_id", "content_index", "audio_end_ms"})
            return ConversationItemTruncate(
                eid, _required_str(d, "item_id"), _required_int(d, "content_index"), _required_int(d, "audio_end_ms")
            )
        case "response.create":
            _fields(d, {"response"})
            resp = d.get("response")
            if resp is None:
                return ResponseCreate(eid)
            if not isinstance(resp, dict):
                raise RealtimeError("invalid_type", "'response' must be an object.", param="response")
            return ResponseCreate(eid, _response(resp, dialect, max_item_chars))
        case "response.cancel":
            _fields(d, {"response_id"})
            rid = d.get("response_id")
            if rid is not None and not isinstance(rid, str):
                raise RealtimeError("invalid_type", "response_id must be a string.", param="response_id")
            return ResponseCancel(eid, rid)
        case "output_audio_buffer.clear":
            _fields(d, {"response_id"})
            return OutputAudioBufferClear(eid)
    raise RealtimeError("invalid_event_type", f"Unknown event type: {kind!r}.", param="type")


def _fields(d: dict[str, Any], allowed: set[str]) -> None:
    for key in d:
        if key not in allowed and key not in ("type", "event_id"):
            raise RealtimeError("unknown_parameter", f"Unknown parameter: '{key}'.", param=key)


def _object(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    if value is None:
        raise RealtimeError("missing_required_parameter", f"Missing required parameter: '{key}'.", param=key)
    if not isinstance(value, dict):
        raise RealtimeError("invalid_type", f"Invalid type for '{key}': expected an object.", param=key)
    return value


def _required_str(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        raise RealtimeError("missing_required_parameter", f"Missing required parameter: '{key}'.", param=key)
    if not isinstance(value, str):
        raise RealtimeError("invalid_type", f"Invalid type for '{key}': expected a string.", param=key)
    return value


def _required_int(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    if value is None:
        raise RealtimeError("missing_required_parameter", f"Missing required parameter: '{key}'.", param=key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RealtimeError("invalid_type", f"Invalid type for '{key}': expected a non-negative integer.", param=key)
    return value


_ROLES = ("user", "assistant", "system")
_CONTENT_FOR_ROLE = {
    "user": ("input_text", "input_audio"),
    "system": ("input_text",),
    "assistant": ("output_text",),  # assistant audio items cannot be created by a client
}


def _item(item: dict[str, Any]) -> dict[str, Any]:
    kind = item.get("type", "message")
    _fields(item, {"id", "object", "status", "role", "content", "call_id", "name", "arguments", "output"})
    if "id" in item and (not isinstance(item["id"], str) or not item["id"] or len(item["id"]) > 64):
        raise RealtimeError("invalid_value", "item.id must be a non-empty string of at most 64 characters.",
                            param="item.id")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise RealtimeError("invalid_value", "item.role must be 'user', 'assistant' or 'system'.",
                                param="item.role")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise RealtimeError("invalid_value", "item.content must be a non-empty array.", param="item.content")
        parts = []
        for i, part in enumerate(content):
            p = f"item.content[{i}]"
            if not isinstance(part, dict):
                raise RealtimeError("invalid_type", f"{p} must be an object.", param=p)
            ptype = ga_content_type(str(part.get("type")))
            if ptype not in _CONTENT_FOR_ROLE[role]:
                raise RealtimeError("invalid_value", f"{p}.type {part.get('type')!r} is not allowed for role {role}.",
                                    param=f"{p}.type")
            if ptype.endswith("text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise RealtimeError("invalid_type", f"{p}.text must be a string.", param=f"{p}.text")
                parts.append({"type": ptype, "text": text})
            else:
                audio = part.get("audio")
                try:
                    raw = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
                except (binascii.Error, ValueError) as exc:
                    raise RealtimeError("invalid_value", f"{p}.audio is not valid base64.", param=f"{p}.audio") from exc
                transcript = part.get("transcript")
                if raw is None and not isinstance(transcript, str):
                    raise RealtimeError("missing_required_parameter", f"{p} needs audio or transcript.", param=p)
                parts.append({"type": ptype, "audio": raw, "transcript": transcript})  # type: ignore[dict-item]
        return {"type": "message", "id": item.get("id"), "role": role, "content": parts}
    if kind == "function_call":
        for key in ("call_id", "name"):
            _required_str(item, key)
        args = item.get("arguments", "{}")
        if not isinstance(args, str):
            raise RealtimeError("invalid_type", "item.arguments must be a JSON string.", param="item.arguments")
        return {"type": kind, "id": item.get("id"), "call_id": item["call_id"], "name": item["name"],
                "arguments": args}
    if kind == "function_call_output":
        call_id = item.get("call_id")
        output = item.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise RealtimeError("missing_required_parameter", "Missing required parameter: 'item.call_id'.",
                                param="item.call_id")
        if not isinstance(output, str):
            raise RealtimeError("invalid_type", "item.output must be a string.", param="item.output")
        return {"type": kind, "id": item.get("id"), "call_id": call_id, "output": output}
    raise RealtimeError("invalid_value", f"Unsupported item type {kind!r}.", param="item.type")


def _input_entry(entry: Any, param: str) -> None:
    """One `response.input` entry: an item reference, or an inline message whose parts hold text."""
    if not isinstance(entry, dict):
        raise RealtimeError("invalid_type", f"{param} must be an object.", param=param)
    kind = entry.get("type", "message")
    if kind == "item_reference":
        if not isinstance(entry.get("id"), str):
            raise RealtimeError("invalid_type", f"{param}.id must be a string.", param=f"{param}.id")
        return
    if kind != "message":
        raise RealtimeError("invalid_value", f"Unsupported {param}.type {kind!r}.", param=f"{param}.type")
    if entry.get("role", "user") not in _ROLES:
        raise RealtimeError("invalid_value", f"{param}.role must be 'user', 'assistant' or 'system'.",
                            param=f"{param}.role")
    content = entry.get("content", [])
    if not isinstance(content, list):
        raise RealtimeError("invalid_type", f"{param}.content must be an array.", param=f"{param}.content")
    for k, part in enumerate(content):
        where = f"{param}.content[{k}]"
        if not isinstance(part, dict):
            raise RealtimeError("invalid_type", f"{where} must be an object.", param=where)
        for key in ("text", "transcript"):
            if part.get(key) is not None and not isinstance(part[key], str):
                raise RealtimeError("invalid_type", f"{where}.{key} must be a string.", param=f"{where}.{key}")


def _response(r: dict[str, Any], dialect: Dialect, max_item_chars: int) -> ResponseParams:
    allowed = {"instructions", "tools", "tool_choice", "conversation", "metadata", "input", "prompt"}
    allowed |= {"modalities", "voice", "output_audio_format", "temperature", "max_response_output_tokens"} \
        if dialect == "beta" else {"output_modalities", "audio", "max_output_tokens", "reasoning"}
    for key in r:
        if key not in allowed:
            raise RealtimeError("unknown_parameter", f"Unknown parameter: 'response.{key}'.", param=f"response.{key}")
    instructions = r.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RealtimeError("invalid_type", "response.instructions must be a string.", param="response.instructions")
    conversation = r.get("conversation", "auto")
    if conversation not in ("auto", "none"):
        raise RealtimeError("invalid_value", "response.conversation must be 'auto' or 'none'.",
                            param="response.conversation")
    metadata = r.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise RealtimeError("invalid_value", "response.metadata must map at most 16 strings to strings.",
                            param="response.metadata")
    inputs = r.get("input")
    if inputs is not None:
        if not isinstance(inputs, list):
            raise RealtimeError("invalid_type", "response.input must be an array.", param="response.input")
        for i, entry in enumerate(inputs):
            _check_text_size(entry, f"response.input[{i}]", max_item_chars)
            _input_entry(entry, f"response.input[{i}]")
    mod_key = "modalities" if dialect == "beta" else "output_modalities"
    modalities = check_modalities(r[mod_key], f"response.{mod_key}", dialect) if mod_key in r else None
    voice = None
    output_format = None
    if dialect == "beta":
        voice = r.get("voice")
        output_format = r.get("output_audio_format")
    elif "audio" in r:
        audio = r["audio"]
        out = audio.get("output", {}) if isinstance(audio, dict) else None
        if not isinstance(out, dict):
            raise RealtimeError("invalid_type", "response.audio.output must be an object.",
                                param="response.audio.output")
        voice = out.get("voice")
        output_format = out.get("format")
    if voice is not None and not isinstance(voice, str):
        raise RealtimeError("invalid_type", "The response voice must be a string.", param="response.voice")
    max_key = "max_response_output_tokens" if dialect == "beta" else "max_output_tokens"
    max_tokens = r.get(max_key)
    if max_tokens is not None and max_tokens != "inf" and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 4096):
        raise RealtimeError("invalid_value", f"response.{max_key} must be 1..4096 or 'inf'.",
                            param=f"response.{max_key}")
    return ResponseParams(
        instructions=instructions,
        output_modalities=modalities,
        voice=voice,
        output_format=output_format,
        tools=check_tools(r["tools"], "response.tools") if "tools" in r else None,
        tool_choice=check_tool_choice(r["tool_choice"], "response.tool_choice") if "tool_choice" in r else None,
        max_output_tokens=max_tokens,
        conversation=conversation,
        metadata=metadata,
        input=inputs,
    )

"""Server events onto the wire: the one place a typed event becomes JSON, in the client's dialect.

GA is the gateway's own spelling. Beta renames seven events, has no counterpart for three (those are
not sent), and shapes sessions, items and responses its own way (they render themselves, see
`SessionConfig.to_wire` and `Item.to_wire`; a response is rendered here). Audio deltas carry PCM up
to here: this is where they are encoded to the session's output format and base64, for the Realtime
WebSocket and the WebRTC data channel alike.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from voxgate.audio.formats import encode_pcm
from voxgate.protocol.items import Dialect
from voxgate.protocol.server_events import (
    ConversationItemAdded,
    ConversationItemDone,
    ConversationItemInputAudioTranscriptionCompleted,
    ConversationItemInputAudioTranscriptionFailed,
    ConversationItemRetrieved,
    ErrorEvent,
    InputAudioBufferDtmfEventReceived,
    ResponseContentPartAdded,
    ResponseContentPartDone,
    ResponseCreated,
    ResponseDone,
    ResponseOutputAudioDelta,
    ResponseOutputItemAdded,
    ResponseOutputItemDone,
    ResponseResource,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
    TranscriptionSessionUpdated,
)

__all__ = ["encode_event", "wire_event"]

_BETA_NAMES = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
}
_NOT_IN_BETA = {
    "conversation.item.done",
    "input_audio_buffer.dtmf_event_received",
    "input_audio_buffer.timeout_triggered",
}


def wire_event(event: ServerEvent, dialect: Dialect) -> dict[str, Any] | None:
    """The event as `dialect` spells it (a JSON-ready dict), or None when that dialect has no such event."""
    kind = event.type
    if dialect == "beta":
        if kind in _NOT_IN_BETA:
            return None
        kind = _BETA_NAMES.get(kind, kind)
    out: dict[str, Any] = {"type": kind}
    if not isinstance(event, InputAudioBufferDtmfEventReceived):  # the one event OpenAI sends without an id
        out["event_id"] = event.event_id
    out.update(_body(event, dialect))
    return out


def encode_event(event: ServerEvent, dialect: Dialect) -> str | None:
    """`wire_event` as compact JSON text, ready for a WebSocket or a data channel."""
    wire = wire_event(event, dialect)
    return None if wire is None else json.dumps(wire, separators=(",", ":"))


def _body(event: ServerEvent, dialect: Dialect) -> dict[str, Any]:
    match event:
        case ResponseOutputAudioDelta():
            return {"response_id": event.response_id, "item_id": event.item_id,
                    "output_index": event.output_index, "content_index": event.content_index,
                    "delta": base64.b64encode(encode_pcm(event.pcm, event.format)).decode("ascii")}
        case SessionCreated() | SessionUpdated():
            return {"session": event.session.to_wire(dialect)}
        case TranscriptionSessionUpdated():
            config = event.session
            # The beta SDK's model requires a client_secret on this event, even on a WebSocket.
            return {"session": {
                "id": config.id,
                "object": "realtime.transcription_session",
                "input_audio_format": config.input_format.to_beta(),
                "input_audio_transcription": config.transcription,
                "turn_detection": config.turn_detection,
                "modalities": ["text"],
                "client_secret": {"value": "", "expires_at": config.expires_at},
            }}
        case ErrorEvent():
            return {"error": {"type": event.error_type, "code": event.code, "message": event.message,
                              "param": event.param, "event_id": event.client_event_id}}
        case ConversationItemAdded() | ConversationItemDone():
            return {"previous_item_id": event.previous_item_id, "item": event.item.to_wire(dialect)}
        case ConversationItemRetrieved():
            return {"item": event.item.to_wire(dialect, include_audio=True)}
        case ResponseOutputItemAdded() | ResponseOutputItemDone():
            return {"response_id": event.response_id, "output_index": event.output_index,
                    "item": event.item.to_wire(dialect)}
        case ResponseCreated() | ResponseDone():
            return {"response": _response(event.response, dialect)}
        case ResponseContentPartAdded() | ResponseContentPartDone():
            part = event.part
            return {"response_id": event.response_id, "item_id": event.item_id,
                    "output_index": event.output_index, "content_index": event.content_index,
                    "part": {"type": "audio", "transcript": part.text} if part.type == "audio"
                    else {"type": "text", "text": part.text}}
        case ConversationItemInputAudioTranscriptionCompleted():
            return {"item_id": event.item_id, "content_index": event.content_index,
                    "transcript": event.transcript,
                    "usage": {"type": "duration", "seconds": event.audio_seconds}}
        case ConversationItemInputAudioTranscriptionFailed():
            return {"item_id": event.item_id, "content_index": event.content_index,
                    "error": {"type": event.error_type, "code": event.code, "message": event.message,
                              "param": None}}
        case _:  # flat events: their fields are the wire's
            return {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "event_id"}


def _response(r: ResponseResource, dialect: Dialect) -> dict[str, Any]:
    details: dict[str, Any] | None = None
    if r.status == "cancelled":
        details = {"type": "cancelled", "reason": r.cancel_reason or "client_cancelled"}
    elif r.status == "failed":
        details = {"type": "failed", "error": {"type": r.error_type, "code": r.error_code}}
    out: dict[str, Any] = {
        "object": "realtime.response",
        "id": r.id,
        "status": r.status,
        "status_details": details,
        "output": [item.to_wire(dialect) for item in r.output],
        "conversation_id": r.conversation_id,
        "max_output_tokens": r.max_output_tokens,
        "usage": r.usage,
        "metadata": r.metadata,
    }
    if dialect == "beta":
        out.update(modalities=["text", "audio"] if r.audio else ["text"], voice=r.voice,
                   output_audio_format=r.output_format.to_beta(), temperature=r.temperature)
    else:
        out.update(output_modalities=list(r.modalities),
                   audio={"output": {"format": r.output_format.to_ga(), "voice": r.voice}})
    return out

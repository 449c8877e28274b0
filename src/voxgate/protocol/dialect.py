"""Outbound dialect translation: the session speaks GA; beta clients get beta names.

Items, sessions and responses are rendered per dialect where they are built (they know their own
shapes); this module only renames event types and drops the events beta does not have.
"""

from __future__ import annotations

from typing import Any

from voxgate.protocol.items import Dialect

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


def for_dialect(event: dict[str, Any], dialect: Dialect) -> dict[str, Any] | None:
    """The event as `dialect` spells it, or None when that dialect has no such event."""
    if dialect == "ga":
        return event
    kind = event["type"]
    if kind in _NOT_IN_BETA:
        return None
    renamed = _BETA_NAMES.get(kind)
    if renamed is None:
        return event
    return {**event, "type": renamed}


def dialect_from_handshake(headers: dict[str, str], subprotocols: list[str]) -> Dialect:
    """Beta when the client says `OpenAI-Beta: realtime=v1` (header or browser subprotocol)."""
    beta_header = headers.get("openai-beta", "")
    if "realtime=v1" in beta_header.replace(" ", "").split(","):
        return "beta"
    if "openai-beta.realtime-v1" in subprotocols:
        return "beta"
    return "ga"

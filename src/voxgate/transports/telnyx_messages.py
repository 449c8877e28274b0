"""Telnyx media streaming (bidirectional `rtp` mode), sans-IO: JSON frames in, typed events out.

Same shape as twilio_messages.py, with Telnyx's spelling (snake_case, `stream_id`, `call_control_id`).
Telnyx does not promise frame order, so media chunks go through a small reorder window. Outbound frames
carry no stream id. Wire format: ../shared/reference/telephony-protocols.md §2.2-2.3.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from voxgate.transports.media_stream import (
    CallEventError,
    CarrierErrorReported,
    CarrierMessageError,
    ChunkOrder,
    ChunksLost,
    MediaEncoding,
    MediaStreamEvent,
    StreamConnected,
    StreamStarted,
    chunk_number,
    decode_payload,
    mark_digit_or_stop,
    parse_frame,
    section,
)

__all__ = ["CODEC_ENCODINGS", "CallEvent", "TelnyxMediaStream", "parse_call_event"]

CODEC_ENCODINGS: dict[str, MediaEncoding] = {"PCMU": "pcmu", "PCMA": "pcma", "L16": "l16"}
L16_RATES = (8000, 16000, 22050, 24000, 48000)
MAX_FRAME_BYTES = 256 * 1024  # L16 at 48 kHz, one second, in base64, with room to spare


@dataclass(frozen=True)
class CallEvent:
    """One Call Control webhook, as far as the gateway acts on it."""

    event_id: str  # Telnyx's id of this event (the same on a redelivery); "" when absent
    event_type: str  # "call.initiated", "call.hangup", ...
    call_control_id: str
    direction: str  # "incoming" | "outgoing"
    from_number: str
    to_number: str
    client_state: dict[str, str] = field(default_factory=dict)  # what a command of ours asked to see again
    hangup_cause: str = ""


def parse_call_event(body: bytes) -> CallEvent:
    """`{"data": {"id", "event_type", "payload": {"call_control_id", ...}}}`, or CallEventError."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise CallEventError(f"body is not JSON: {str(exc)[:80]}") from exc
    data = message.get("data") if isinstance(message, dict) else None
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(payload, dict):
        raise CallEventError("expected a Telnyx call event: {data: {event_type, payload}}")
    event_type, call_control_id = data.get("event_type"), payload.get("call_control_id")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 64:
        raise CallEventError("data.event_type is missing or malformed")
    if not isinstance(call_control_id, str) or not call_control_id or len(call_control_id) > 256:
        raise CallEventError("data.payload.call_control_id is missing or malformed")
    event_id = data.get("id")
    return CallEvent(
        event_id=event_id[:128] if isinstance(event_id, str) else "", event_type=event_type,
        call_control_id=call_control_id, direction=_text(payload.get("direction"), "incoming"),
        from_number=_text(payload.get("from")), to_number=_text(payload.get("to")),
        client_state=_client_state(payload.get("client_state")), hangup_cause=_text(payload.get("hangup_cause")))


def _client_state(value: object) -> dict[str, str]:
    """A command's `client_state` (base64 of a JSON object of strings), as Telnyx hands it back; {} when it is
    absent or anything else (a state set by another application on the same connection)."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        return {}
    try:
        state = json.loads(base64.b64decode(value, validate=True))
    except (ValueError, RecursionError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {k: v[:256] for k, v in state.items() if isinstance(k, str) and isinstance(v, str)}


def _text(value: object, default: str = "") -> str:
    return value[:256] if isinstance(value, str) else default


class TelnyxMediaStream:
    def __init__(self, reorder_window: int = 3) -> None:
        self.started: StreamStarted | None = None
        self.stopped = False
        self._order = ChunkOrder(reorder_window)

    # -- inbound -----------------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> list[MediaStreamEvent]:
        message = parse_frame(text, MAX_FRAME_BYTES)
        kind = message.get("event")
        if kind == "connected":
            token = message.get("x-telnyx-streaming-auth-token")
            return [StreamConnected(token if isinstance(token, str) else None)]
        if kind == "start":
            return [self._start(message)]
        if kind not in ("media", "mark", "dtmf", "stop", "error"):
            raise CarrierMessageError("unknown_event", f"unknown event {str(kind)[:40]!r}")
        if kind == "error":  # may come before start (a stream that failed to set up)
            payload = message.get("payload")
            if not isinstance(payload, dict):
                payload = {}
            return [CarrierErrorReported(str(payload.get("code", "")), str(payload.get("title", ""))[:200],
                                         str(payload.get("detail", ""))[:500])]
        if self.started is None:
            raise CarrierMessageError(f"{kind}_before_start", f"{kind!r} arrived before 'start'")
        stream_id = message.get("stream_id", self.started.stream_id)
        if stream_id != self.started.stream_id:
            raise CarrierMessageError("unknown_stream", f"{kind!r} for stream {str(stream_id)[:70]!r}, "
                                   f"not this socket's {self.started.stream_id!r}")
        if kind == "media":
            return self._media(message)
        self.stopped = kind == "stop"
        return mark_digit_or_stop(kind, message)

    def _start(self, message: dict[str, Any]) -> StreamStarted:
        if self.started is not None:
            raise CarrierMessageError("duplicate_start", "a second 'start' on one socket")
        start = section(message, "start")
        stream_id = message.get("stream_id")
        call_control_id = start.get("call_control_id")
        if not isinstance(stream_id, str) or not stream_id or len(stream_id) > 128:
            raise CarrierMessageError("missing_field", "stream_id is missing or malformed", fatal=True)
        if not isinstance(call_control_id, str) or not call_control_id:
            raise CarrierMessageError("missing_field", "start.call_control_id is required", fatal=True)
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise CarrierMessageError("missing_field", "start.media_format must be an object", fatal=True)
        encoding = CODEC_ENCODINGS.get(str(fmt.get("encoding", "PCMU")).upper())
        try:
            rate, channels = int(fmt.get("sample_rate", 8000)), int(fmt.get("channels", 1))
        except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
            rate, channels = 0, 0
        if (encoding is None or (encoding != "l16" and rate != 8000) or (encoding == "l16" and rate not in L16_RATES)
                or channels != 1):
            raise CarrierMessageError("unsupported_format",
                                   f"media format {fmt!r} is not PCMU/PCMA 8 kHz or mono L16", fatal=True)
        raw = start.get("custom_parameters") or {}
        if isinstance(raw, list):  # the command takes [{name, value}]; accept it echoed either way
            raw = {str(p.get("name")): p.get("value") for p in raw if isinstance(p, dict)}
        if not isinstance(raw, dict):
            raise CarrierMessageError("missing_field", "start.custom_parameters must be an object", fatal=True)
        self.started = StreamStarted(
            stream_id=stream_id, call_id=call_control_id, account_id=str(start.get("user_id") or ""),
            parameters={str(k): str(v) for k, v in raw.items()}, encoding=encoding, sample_rate=rate,
            from_number=str(start.get("from") or ""), to_number=str(start.get("to") or ""))
        return self.started

    def _media(self, message: dict[str, Any]) -> list[MediaStreamEvent]:
        assert self.started is not None
        media = section(message, "media")
        if media.get("track", "inbound") != "inbound":
            return []  # with both_tracks Telnyx also echoes our own audio; the session wants the caller only
        data = decode_payload(media.get("payload"), self.started.encoding, self.started.sample_rate)
        ready, lost = self._order.push(chunk_number(media.get("chunk", message.get("sequence_number"))), data)
        events: list[MediaStreamEvent] = [ChunksLost(lost)] if lost else []
        events.extend(ready)
        return events

    # -- outbound ----------------------------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        return f'{{"event":"media","media":{{"payload":"{base64.b64encode(payload).decode("ascii")}"}}}}'

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "mark": {"name": name}}, separators=(",", ":"))

    def clear(self) -> str:
        return '{"event":"clear"}'

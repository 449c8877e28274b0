"""Twilio Media Streams, sans-IO: JSON frames in, typed events out; outbound frames as ready-made text.

    stream = TwilioMediaStream()
    for event in stream.receive(text):      # raises CarrierMessageError on a frame it refuses
        ...                                 # StreamConnected, StreamStarted, AudioReceived, MarkPlayed, ...
    ws.send(stream.media(frame_bytes)); ws.send(stream.mark("item_1:120")); ws.send(stream.clear())

Wire format: ../shared/reference/telephony-protocols.md §1.2-1.3. A bidirectional stream carries only
the caller's track, as μ-law 8 kHz.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from voxgate.transports.media_stream import (
    CallEventError,
    CarrierMessageError,
    ChunkOrder,
    ChunksLost,
    MediaStreamEvent,
    StreamConnected,
    StreamStarted,
    chunk_number,
    decode_payload,
    mark_digit_or_stop,
    parse_frame,
    section,
)

__all__ = ["TOKEN_PARAMETER", "TwilioMediaStream", "VoiceCall", "parse_voice_call"]

# SIDs are two letters + 32 hex digits; anything safe to splice into JSON text and URLs unescaped is
# accepted (whole string: `$` would let a trailing newline through).
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOKEN_PARAMETER = "token"  # the <Parameter> that carries the call's media token back in `start`
_ENCODINGS = {"audio/x-mulaw": "pcmu"}
MAX_FRAME_BYTES = 64 * 1024  # a media frame is ~300 bytes; refuse to parse anything huge


@dataclass(frozen=True)
class VoiceCall:
    """What Twilio's voice webhook says about a new call, as far as the gateway acts on it."""

    call_sid: str
    account_sid: str  # "" when absent (an unsigned request in dev mode)
    from_number: str
    to_number: str


def parse_voice_call(params: Iterable[tuple[str, str]]) -> VoiceCall:
    """The voice webhook's form fields; CallEventError without a usable CallSid. The SIDs end up in REST
    URLs, so they must look like SIDs."""
    fields = dict(params)
    call_sid, account_sid = fields.get("CallSid", ""), fields.get("AccountSid", "")
    if not _SID.fullmatch(call_sid):
        raise CallEventError("CallSid is missing or malformed")
    if account_sid and not _SID.fullmatch(account_sid):
        raise CallEventError("AccountSid is malformed")
    return VoiceCall(call_sid, account_sid, fields.get("From", "")[:256], fields.get("To", "")[:256])


class TwilioMediaStream:
    """One media WebSocket's protocol state: which stream it is, and the order of its chunks."""

    def __init__(self, reorder_window: int = 3) -> None:
        self.started: StreamStarted | None = None
        self.stopped = False
        self._order = ChunkOrder(reorder_window)
        self._media_prefix = ""

    @property
    def stream_sid(self) -> str | None:
        return self.started.stream_id if self.started else None

    # -- inbound -----------------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> list[MediaStreamEvent]:
        message = parse_frame(text, MAX_FRAME_BYTES)
        kind = message.get("event")
        if kind == "connected":
            return [StreamConnected()]
        if kind == "start":
            return [self._start(message)]
        if kind not in ("media", "mark", "dtmf", "stop"):
            raise CarrierMessageError("unknown_event", f"unknown event {str(kind)[:40]!r}")
        if self.started is None:
            raise CarrierMessageError(f"{kind}_before_start", f"{kind!r} arrived before 'start'")
        if message.get("streamSid") != self.started.stream_id:
            raise CarrierMessageError("unknown_stream", f"{kind!r} for stream {str(message.get('streamSid'))[:70]!r}, "
                                   f"not this socket's {self.started.stream_id!r}")
        if kind == "media":
            return self._media(message)
        self.stopped = kind == "stop"
        return mark_digit_or_stop(kind, message)

    def _start(self, message: dict[str, Any]) -> StreamStarted:
        if self.started is not None:
            raise CarrierMessageError("duplicate_start", "a second 'start' on one socket")
        start = section(message, "start")
        sid = message.get("streamSid", start.get("streamSid"))
        if not isinstance(sid, str) or not _SID.fullmatch(sid):
            raise CarrierMessageError("missing_field", "start.streamSid is missing or malformed", fatal=True)
        call_sid, account_sid = start.get("callSid"), start.get("accountSid")
        if not isinstance(call_sid, str) or not isinstance(account_sid, str) or not (
                _SID.fullmatch(call_sid) and _SID.fullmatch(account_sid)):
            raise CarrierMessageError("missing_field", "start.callSid and start.accountSid are required", fatal=True)
        fmt = start.get("mediaFormat") or {}
        encoding = fmt.get("encoding", "audio/x-mulaw") if isinstance(fmt, dict) else None
        rate = fmt.get("sampleRate", 8000) if isinstance(fmt, dict) else 0
        if not isinstance(encoding, str) or encoding not in _ENCODINGS or rate not in (8000, "8000"):
            raise CarrierMessageError("unsupported_format", f"media format {str(fmt)[:100]} is not μ-law 8 kHz",
                                   fatal=True)
        raw = start.get("customParameters") or {}
        if not isinstance(raw, dict):
            raise CarrierMessageError("missing_field", "start.customParameters must be an object", fatal=True)
        parameters = {str(k): str(v) for k, v in raw.items()}
        self.started = StreamStarted(
            stream_id=sid, call_id=call_sid, account_id=account_sid, parameters=parameters, encoding="pcmu",
            sample_rate=8000, from_number=parameters.get("from", ""), to_number=parameters.get("to", ""))
        self._media_prefix = f'{{"event":"media","streamSid":"{sid}","media":{{"payload":"'
        return self.started

    def _media(self, message: dict[str, Any]) -> list[MediaStreamEvent]:
        media = section(message, "media")
        if media.get("track", "inbound") != "inbound":
            return []  # a bidirectional stream only carries the caller; ignore anything else
        data = decode_payload(media.get("payload"), "pcmu", 8000)
        ready, lost = self._order.push(chunk_number(media.get("chunk")), data)
        events: list[MediaStreamEvent] = [ChunksLost(lost)] if lost else []
        events.extend(ready)
        return events

    # -- outbound ----------------------------------------------------------------------------------

    def media(self, payload: bytes) -> str:
        """A `media` frame for raw μ-law bytes (no header); formatted by hand, it is the hot path."""
        self._require_started()
        return f'{self._media_prefix}{base64.b64encode(payload).decode("ascii")}"}}}}'

    def mark(self, name: str) -> str:
        started = self._require_started()
        return json.dumps({"event": "mark", "streamSid": started.stream_id, "mark": {"name": name}},
                          separators=(",", ":"))

    def clear(self) -> str:
        started = self._require_started()
        return f'{{"event":"clear","streamSid":"{started.stream_id}"}}'

    def _require_started(self) -> StreamStarted:
        if self.started is None:
            raise RuntimeError("nothing can be sent on a Twilio stream before its 'start'")
        return self.started

"""What a carrier's media stream says, whichever carrier it is: the events and errors both codecs produce.

Twilio Media Streams and Telnyx media streaming are the same idea with different spellings (`streamSid`
vs `stream_id`, `customParameters` vs `custom_parameters`). Their codecs (twilio_messages.py,
telnyx_messages.py) turn JSON frames into these events, so the call shell (carrier_call.py) is written once.
The same modules read the carriers' call webhooks, and refuse one they cannot act on with CallEventError.
Sans-IO: nothing here reads a socket or a clock.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "DTMF_DIGITS",
    "AudioReceived",
    "CallEventError",
    "CarrierErrorReported",
    "CarrierMessageError",
    "ChunkOrder",
    "ChunksLost",
    "DigitPressed",
    "MarkPlayed",
    "MediaEncoding",
    "MediaStreamEvent",
    "StreamConnected",
    "StreamStarted",
    "StreamStopped",
    "chunk_number",
    "decode_payload",
]

MediaEncoding = Literal["pcmu", "pcma", "l16"]
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MAX_PAYLOAD_MS = 1000  # carriers send 20 ms; anything past a second is not a media chunk


class CarrierMessageError(ValueError):
    """A carrier frame the codec refused. `code` is a short stable name (a metric label); `fatal` ends the
    call."""

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


class CallEventError(ValueError):
    """A carrier webhook whose body is not a call event the gateway can act on (an HTTP 400)."""


@dataclass(frozen=True)
class StreamConnected:
    auth_token: str | None = None  # Telnyx echoes the stream_auth_token it was given


@dataclass(frozen=True)
class StreamStarted:
    stream_id: str
    call_id: str  # Twilio CallSid, Telnyx call_control_id
    account_id: str  # Twilio AccountSid; Telnyx user_id
    parameters: dict[str, str]  # <Parameter>s / custom_parameters
    encoding: MediaEncoding
    sample_rate: int
    from_number: str = ""
    to_number: str = ""


@dataclass(frozen=True)
class AudioReceived:
    payload: bytes  # raw codec bytes, no header
    chunk: int


@dataclass(frozen=True)
class ChunksLost:
    """Chunks that never came (a gap the reorder window gave up on); the shell fills them with silence."""

    count: int


@dataclass(frozen=True)
class DigitPressed:
    digit: str

    def __repr__(self) -> str:  # digits may be card numbers: never in a log line by accident
        return "DigitPressed(digit='*')"


@dataclass(frozen=True)
class MarkPlayed:
    name: str


@dataclass(frozen=True)
class StreamStopped:
    pass


@dataclass(frozen=True)
class CarrierErrorReported:
    code: str
    title: str
    detail: str


MediaStreamEvent = (StreamConnected | StreamStarted | AudioReceived | ChunksLost | DigitPressed | MarkPlayed
                    | StreamStopped | CarrierErrorReported)


def parse_frame(text: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One carrier WebSocket frame as a JSON object, or a CarrierMessageError saying why not."""
    if len(text) > max_bytes:
        raise CarrierMessageError("too_large", f"frame of {len(text)} bytes is larger than {max_bytes}")
    try:
        # orjson: a phone call's 50 frames a second parsed in C, bytes or str, with the UTF-8 checked and
        # nesting limited (its errors are ValueErrors)
        message = orjson.loads(text)
    except ValueError as exc:
        raise CarrierMessageError("invalid_json", f"frame is not JSON: {str(exc)[:80]}") from exc
    if not isinstance(message, dict):
        raise CarrierMessageError("invalid_json", "frame is not a JSON object")
    return message


def section(message: dict[str, Any], name: str) -> dict[str, Any]:
    """The named object inside a carrier message, or a CarrierMessageError saying it is missing."""
    value = message.get(name)
    if not isinstance(value, dict):
        raise CarrierMessageError("missing_field", f"{name!r} object is missing")
    return value


def mark_digit_or_stop(kind: str, message: dict[str, Any]) -> list[MediaStreamEvent]:
    """`mark`, `dtmf` and `stop`: the same in Twilio's and Telnyx's streams once the stream is known."""
    if kind == "mark":
        name = section(message, "mark").get("name")
        if not isinstance(name, str):
            raise CarrierMessageError("missing_field", "mark.name must be a string")
        return [MarkPlayed(name)]
    if kind == "dtmf":
        digit = section(message, "dtmf").get("digit")
        if not isinstance(digit, str) or digit not in DTMF_DIGITS:
            raise CarrierMessageError("invalid_digit", "dtmf.digit is not one of 0-9 * # A-D")
        return [DigitPressed(digit)]
    return [StreamStopped()]


def chunk_number(value: object) -> int:
    """A media chunk's counter: an integer, or a string of one as the carriers send it."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:  # also a string of more digits than int() takes
            pass
    raise CarrierMessageError("missing_field", "media.chunk must be a number")


def decode_payload(payload: object, encoding: MediaEncoding, sample_rate: int) -> bytes:
    """A media payload's bytes, checked: valid base64, whole samples, not empty, at most a second."""
    if not isinstance(payload, str):
        raise CarrierMessageError("missing_field", "media.payload must be a base64 string")
    try:
        # strict: the alphabet and the padding checked in C (b64decode's validate runs a regex first)
        data = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise CarrierMessageError("invalid_base64", f"media.payload is not valid base64: {exc}") from exc
    width = 2 if encoding == "l16" else 1
    if not data or len(data) % width or len(data) > sample_rate * width * MAX_PAYLOAD_MS // 1000:
        raise CarrierMessageError("bad_payload_size",
                               f"media payload of {len(data)} bytes is not 1..{MAX_PAYLOAD_MS} ms of {encoding}")
    return data


@dataclass
class ChunkOrder:
    """Puts media chunks back in order by their counter, holding at most `window` chunks past a gap.

    In order (the normal case) a chunk passes straight through, so the window costs no delay. A chunk
    that comes early waits for the missing one; when `window` chunks wait, the gap is given up on and
    counted lost. A chunk older than what was already released is late and dropped.
    """

    window: int = 3
    expected: int | None = None
    _held: dict[int, bytes] = field(default_factory=dict)

    def push(self, chunk: int, payload: bytes) -> tuple[list[AudioReceived], int]:
        """Chunks now ready, in order, and how many were given up as lost. Raises on a late chunk."""
        if self.expected is None:
            self.expected = chunk
        if chunk < self.expected or chunk in self._held:
            raise CarrierMessageError("out_of_order", f"media chunk {chunk} arrived after chunk {self.expected - 1}"
                                   if chunk < self.expected else f"media chunk {chunk} arrived twice")
        self._held[chunk] = payload
        ready: list[AudioReceived] = []
        lost = 0
        while self._held:
            if self.expected in self._held:
                ready.append(AudioReceived(self._held.pop(self.expected), self.expected))
                self.expected += 1
            elif len(self._held) > self.window:
                oldest = min(self._held)
                lost += oldest - self.expected
                self.expected = oldest
            else:
                break
        return ready, lost

"""DTMF on SIP calls: RFC 4733 telephone-event packets both ways, and SIP INFO bodies.

    receiver = DtmfReceiver()
    digit = receiver.receive(packet)                 # "5" once per key press (duplicates and the 3 end
                                                     # packets are folded), else None
    for offset, packet in dtmf_packets(sender, "5", payload_type=101):
        ... send `packet` `offset` seconds from now  # the shell paces them
    digit, duration_ms = parse_dtmf_info("application/dtmf-relay", info.body)

Sending follows RFC 4733 §2.5: every packet of one press carries the same timestamp (the event start),
the first has the marker, `duration` grows with each packet, and the final one (end bit) is sent three
times; the sequence number counts every packet, and afterwards the audio timestamp has moved on by the
event's duration.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from voxgate.sip.errors import SipError
from voxgate.sip.rtp import RtpPacket, RtpSender

__all__ = [
    "EVENTS",
    "DtmfError",
    "DtmfReceiver",
    "TelephoneEvent",
    "dtmf_packets",
    "parse_dtmf_info",
    "parse_telephone_event",
]

EVENTS = "0123456789*#ABCD"  # event codes 0-15; 16 is flash
FLASH = 16
_EVENT = struct.Struct("!BBH")
_RELAY_SIGNAL = re.compile(r"^\s*signal\s*=\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
_RELAY_DURATION = re.compile(r"^\s*duration\s*=\s*([0-9]{1,6})\s*$", re.IGNORECASE | re.MULTILINE)
MAX_INFO_BYTES = 1024


class DtmfError(SipError):
    default_code = "bad_dtmf"


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0-63, in -dBm0
    duration: int  # in timestamp units since the event began

    @property
    def digit(self) -> str | None:
        return EVENTS[self.event] if self.event < len(EVENTS) else None

    def to_bytes(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF)


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """The event in an RFC 4733 payload (a payload may stack several 4-byte blocks; the first is current)."""
    if len(payload) < 4 or len(payload) % 4:
        raise DtmfError("a telephone-event payload is a multiple of 4 bytes", "bad_event_size")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class DtmfReceiver:
    """Key presses out of telephone-event packets, one report per press. A press is known by its RTP
    timestamp; it is reported on the first packet that arrives (lost start packets do not hide it)."""

    def __init__(self) -> None:
        self._current: tuple[int, int] | None = None  # (ssrc, timestamp) of the last reported event

    def receive(self, packet: RtpPacket) -> str | None:
        """The digit this packet starts, or None (a continuation, a repeat, an end packet, or flash)."""
        event = parse_telephone_event(packet.payload)
        key = (packet.ssrc, packet.timestamp)
        if key == self._current:
            return None
        self._current = key
        return event.digit


def dtmf_packets(sender: RtpSender, digit: str, *, payload_type: int, duration_ms: int = 100,
                 interval_ms: int = 20, volume: int = 10) -> list[tuple[float, RtpPacket]]:
    """The packets of one key press, each with when to send it (seconds after the first). Advances
    `sender`'s timestamp past the event so audio resumes at the right time."""
    if digit not in EVENTS or len(digit) != 1:
        raise DtmfError(f"not a DTMF digit: {digit!r}", "bad_digit")
    if not 40 <= duration_ms <= 8000 or not 10 <= interval_ms <= 100:
        raise DtmfError("duration 40-8000 ms, interval 10-100 ms", "bad_duration")
    event = EVENTS.index(digit)
    per_ms = sender.clock_rate // 1000
    start = sender.timestamp
    out: list[tuple[float, RtpPacket]] = []
    elapsed = interval_ms
    while elapsed < duration_ms:
        body = TelephoneEvent(event, False, volume, elapsed * per_ms).to_bytes()
        out.append(((elapsed - interval_ms) / 1000, sender.event_packet(body, payload_type, start, marker=not out)))
        elapsed += interval_ms
    final = TelephoneEvent(event, True, volume, duration_ms * per_ms).to_bytes()
    at = (duration_ms - interval_ms) / 1000 if out else 0.0
    for repeat in range(3):
        out.append((at + repeat * interval_ms / 1000,
                    sender.event_packet(final, payload_type, start, marker=not out)))
    sender.skip(duration_ms * per_ms)
    return out


def parse_dtmf_info(content_type: str | None, body: bytes) -> tuple[str, int | None]:
    """The digit (and duration in ms, when given) of a SIP INFO: `application/dtmf-relay`
    (`Signal=5\\r\\nDuration=160`) or `application/dtmf` (the digit alone). DtmfError otherwise."""
    if len(body) > MAX_INFO_BYTES:
        raise DtmfError("INFO body too large", "too_large")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DtmfError("INFO body is not ASCII") from exc
    if content_type == "application/dtmf-relay":
        match = _RELAY_SIGNAL.search(text)
        if match is None:
            raise DtmfError("dtmf-relay without Signal=")
        signal = match.group(1).upper()
        duration_match = _RELAY_DURATION.search(text)
        duration = int(duration_match.group(1)) if duration_match else None
    elif content_type == "application/dtmf":
        signal, duration = text.strip().upper(), None
    else:
        raise DtmfError(f"not a DTMF body type: {content_type}", "unsupported_type")
    if signal.isdigit() and len(signal) <= 2 and int(signal) < len(EVENTS):
        signal = EVENTS[int(signal)]  # some gateways send the event code: 10 for *, 11 for #
    if len(signal) != 1 or signal not in EVENTS:
        raise DtmfError(f"not a DTMF signal: {signal[:8]!r}", "bad_digit")
    return signal, duration

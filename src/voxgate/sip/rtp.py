"""RTP packets (RFC 3550 §5) and the sending side's sequence, timestamp and SSRC.

    packet = parse_rtp(datagram)        # RtpPacket; raises RtpError (a counted drop)
    packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc, packet.marker, packet.payload

    sender = RtpSender(payload_type=0, clock_rate=8000)      # random SSRC, first sequence and timestamp
    sock.sendto(sender.packet(frame, samples=160).to_bytes(), remote)
    sender.talkspurt()                  # after silence or a barge-in: the next packet carries the marker
    sender.skip(samples)                # time passed without sending: the timestamp keeps counting

Parsing handles CSRC lists, a header extension and padding, and refuses what is not RTP version 2 or does
not fit the datagram. `is_rtcp` separates RTCP from RTP on a multiplexed port (RFC 5761 §4).
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from voxgate.sip.errors import SipError

__all__ = [
    "HEADER_BYTES",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "RtpSender",
    "is_rtcp",
    "parse_rtp",
]

HEADER_BYTES = 12
MAX_PACKET_BYTES = 1500  # one Ethernet MTU: a larger datagram is no voice packet
_HEADER = struct.Struct("!BBHII")


class RtpError(SipError):
    default_code = "bad_rtp"


@dataclass(frozen=True, slots=True)
class RtpExtension:
    profile: int  # the 16-bit "defined by profile" field
    data: bytes  # a multiple of 4 bytes


class RtpPacket(NamedTuple):
    """A tuple, not a frozen dataclass: a call parses 50 a second, and a frozen dataclass's __init__ sets
    each of its nine fields through object.__setattr__."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0  # padding octets to append (the last one holds the count)

    def to_bytes(self) -> bytes:
        first = 0x80 | (0x20 if self.padding else 0) | (0x10 if self.extension else 0) | len(self.csrcs)
        out = _HEADER.pack(first, (0x80 if self.marker else 0) | self.payload_type, self.sequence & 0xFFFF,
                           self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)
        if self.csrcs:
            out += struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        if self.extension is not None:
            data = self.extension.data
            if len(data) % 4:
                raise RtpError("an RTP header extension is a whole number of 32-bit words")
            out += struct.pack("!HH", self.extension.profile, len(data) // 4) + data
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return out


def parse_rtp(data: bytes) -> RtpPacket:
    size = len(data)
    if size < HEADER_BYTES:
        raise RtpError("shorter than an RTP header", "too_short")
    if size > MAX_PACKET_BYTES:
        raise RtpError("larger than an RTP packet", "too_large")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError("not RTP version 2", "bad_version")
    offset = HEADER_BYTES
    csrcs: tuple[int, ...] = ()
    count = first & 0x0F
    if count:
        end = offset + 4 * count
        if end > size:
            raise RtpError("CSRC list runs past the packet", "truncated")
        csrcs = struct.unpack_from(f"!{count}I", data, offset)
        offset = end
    extension = None
    if first & 0x10:
        if offset + 4 > size:
            raise RtpError("extension header runs past the packet", "truncated")
        profile, words = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + 4 * words
        if end > size:
            raise RtpError("extension runs past the packet", "truncated")
        extension = RtpExtension(profile, bytes(data[offset + 4 : end]))
        offset = end
    payload_end = size
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > size:
            raise RtpError("bad padding length", "bad_padding")
        payload_end -= padding
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:payload_end]), bool(second & 0x80),
                     csrcs, extension, padding)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a shared port, RTCP packet types 192-223 sit where RTP's marker+payload type is."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass
class RtpSender:
    """One outgoing stream's header state (RFC 3550 §5.1: random initial values). Counts what it sent, for
    RTCP sender reports."""

    payload_type: int
    clock_rate: int = 8000
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    sequence: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    packets_sent: int = 0
    octets_sent: int = 0
    _marker_next: bool = True  # the first packet starts a talkspurt

    def packet(self, payload: bytes, samples: int, *, payload_type: int | None = None) -> RtpPacket:
        """The next packet: `payload` covering `samples` at the clock rate; advances sequence and time."""
        packet = RtpPacket(self.payload_type if payload_type is None else payload_type, self.sequence,
                           self.timestamp, self.ssrc, payload, self._marker_next)
        self._advance(len(payload), samples)
        return packet

    def datagram(self, payload: bytes, samples: int) -> bytes:
        """`packet(payload, samples).to_bytes()` without the packet: a call sends 50 a second."""
        marker = 0x80 if self._marker_next else 0
        data = _HEADER.pack(0x80, marker | self.payload_type, self.sequence, self.timestamp, self.ssrc) + payload
        self._advance(len(payload), samples)
        return data

    def _advance(self, octets: int, samples: int) -> None:
        """A packet of `octets` covering `samples` went out: the next one follows it in sequence and time."""
        self._marker_next = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += octets

    def event_packet(self, payload: bytes, payload_type: int, timestamp: int, *, marker: bool) -> RtpPacket:
        """A packet at a fixed timestamp (RFC 4733: every packet of one event carries its start time)."""
        packet = RtpPacket(payload_type, self.sequence, timestamp, self.ssrc, payload, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return packet

    def skip(self, samples: int) -> None:
        """Time passed without audio being sent: keep the timestamp on the clock, mark the next packet."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._marker_next = True

    def talkspurt(self) -> None:
        """The next packet starts a talkspurt (after silence, or after a barge-in cleared the queue)."""
        self._marker_next = True

"""RTCP (RFC 3550 §6): sender and receiver reports, SDES CNAME and BYE, in compound packets; and the
reception statistics a report block is built from (RFC 3550 Appendix A.1, A.3, A.8).

    stats = ReceptionStatistics(remote_ssrc, clock_rate=8000)
    stats.receive(packet, arrival=now)                      # every RTP packet from the peer
    data = build_rtcp(SenderReport(ssrc, ntp_time(wallclock), sender.timestamp, sender.packets_sent,
                                   sender.octets_sent, (stats.report_block(now),)),
                      SourceDescription(((ssrc, "voxgate@host"),)))
    for report in parse_rtcp(datagram): ...                 # SenderReport | ReceiverReport | ...; RtcpError

`now` is monotonic seconds; `ntp_time` turns a wall-clock time (seconds since 1970, passed in) into the
64-bit NTP timestamp of a sender report.

`RtcpSession` is one call's reporting, on a clock passed in:

    rtcp = RtcpSession(sender, "voxgate@192.0.2.10", start=now)
    rtcp.receive_rtp(packet, arrival=now)                   # every accepted RTP packet from the peer
    if rtcp.due(now): sock.sendto(rtcp.report(now, wallclock), remote_rtcp)
    rtcp.receive(datagram, arrival=now)                     # the peer's SR/RR: rtcp.peer, rtcp.round_trip_ms
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxgate.sip.errors import SipError
from voxgate.sip.rtp import RtpPacket, RtpSender

__all__ = [
    "Goodbye",
    "PeerReport",
    "ReceiverReport",
    "ReceptionStatistics",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "RtcpSession",
    "SenderReport",
    "SourceDescription",
    "build_rtcp",
    "ntp_time",
    "parse_rtcp",
    "reception_record",
]

SR, RR, SDES, BYE = 200, 201, 202, 203
_NTP_EPOCH = 2_208_988_800  # seconds from 1900 to 1970
_BLOCK = struct.Struct("!IB3sIIII")
MAX_RTCP_BYTES = 1500


class RtcpError(SipError):
    default_code = "bad_rtcp"


def ntp_time(wallclock: float) -> int:
    """Unix time in seconds → 64-bit NTP timestamp (32.32 fixed point since 1900)."""
    return int((wallclock + _NTP_EPOCH) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 0-255: lost / expected since the last report, × 256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended (cycles << 16 | sequence)
    jitter: int  # timestamp units
    last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    delay_since_last_sr: int = 0  # 1/65536 s

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _BLOCK.pack(self.ssrc, self.fraction_lost & 0xFF, lost.to_bytes(3, "big"),
                           self.highest_sequence & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF,
                           self.last_sr & 0xFFFFFFFF, self.delay_since_last_sr & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = struct.pack("!IQIII", self.ssrc, self.ntp_timestamp, self.rtp_timestamp & 0xFFFFFFFF,
                           self.packet_count & 0xFFFFFFFF, self.octet_count & 0xFFFFFFFF)
        return _header(len(self.reports), SR, body + b"".join(r.to_bytes() for r in self.reports))


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.to_bytes() for r in self.reports)
        return _header(len(self.reports), RR, body)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES with the CNAME item of each source (the only item RFC 3550 requires)."""

    chunks: tuple[tuple[int, str], ...]

    def to_bytes(self) -> bytes:
        body = b""
        for ssrc, cname in self.chunks:
            text = cname.encode()[:255]
            chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
            body += chunk + bytes(-len(chunk) % 4)
        return _header(len(self.chunks), SDES, body)


@dataclass(frozen=True, slots=True)
class Goodbye:
    ssrcs: tuple[int, ...]
    reason: str = ""

    def to_bytes(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            text = self.reason.encode()[:255]
            body += bytes([len(text)]) + text
            body += bytes(-len(body) % 4)
        return _header(len(self.ssrcs), BYE, body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


def build_rtcp(*packets: RtcpPacket) -> bytes:
    """A compound packet (RFC 3550 §6.1: it should start with an SR or RR and carry an SDES CNAME)."""
    return b"".join(packet.to_bytes() for packet in packets)


def _blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if offset + count * _BLOCK.size > end:
        raise RtcpError("report blocks run past the packet", "truncated")
    out = []
    for index in range(count):
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset + index * _BLOCK.size)
        cumulative = int.from_bytes(lost, "big", signed=True)
        out.append(ReportBlock(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr))
    return tuple(out)


def _sdes(data: bytes, offset: int, count: int, end: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if offset + 4 > end:
            raise RtcpError("SDES chunk runs past the packet", "truncated")
        ssrc = struct.unpack_from("!I", data, offset)[0]
        offset += 4
        cname = ""
        while True:
            if offset >= end:
                raise RtcpError("SDES items run past the packet", "truncated")
            item = data[offset]
            if item == 0:
                offset += 1
                offset += -offset % 4  # pad to the next 32-bit boundary
                break
            if offset + 2 > end or offset + 2 + data[offset + 1] > end:
                raise RtcpError("SDES item runs past the packet", "truncated")
            length = data[offset + 1]
            if item == 1:
                cname = data[offset + 2 : offset + 2 + length].decode("utf-8", "replace")
            offset += 2 + length
        chunks.append((ssrc, cname))
    return SourceDescription(tuple(chunks))


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Every SR, RR, SDES and BYE in a compound packet; other types (APP, feedback, XR) are skipped."""
    if len(data) > MAX_RTCP_BYTES:
        raise RtcpError("larger than an RTCP packet", "too_large")
    out: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise RtcpError("truncated RTCP header", "truncated")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise RtcpError("not RTCP version 2", "bad_version")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtcpError("RTCP length runs past the datagram", "truncated")
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or padding > end - offset - 4:
                raise RtcpError("bad RTCP padding", "bad_padding")
            body_end = end - padding
        else:
            body_end = end
        count = first & 0x1F
        body = offset + 4
        if packet_type == SR:
            if body + 24 > body_end:
                raise RtcpError("short sender report", "truncated")
            ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", data, body)
            out.append(SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(data, body + 24, count, body_end)))
        elif packet_type == RR:
            if body + 4 > body_end:
                raise RtcpError("short receiver report", "truncated")
            ssrc = struct.unpack_from("!I", data, body)[0]
            out.append(ReceiverReport(ssrc, _blocks(data, body + 4, count, body_end)))
        elif packet_type == SDES:
            out.append(_sdes(data, body, count, body_end))
        elif packet_type == BYE:
            if body + 4 * count > body_end:
                raise RtcpError("BYE sources run past the packet", "truncated")
            ssrcs = struct.unpack_from(f"!{count}I", data, body)
            reason = ""
            at = body + 4 * count
            if at < body_end:
                length = data[at]
                if at + 1 + length > body_end:
                    raise RtcpError("BYE reason runs past the packet", "truncated")
                reason = data[at + 1 : at + 1 + length].decode("utf-8", "replace")
            out.append(Goodbye(tuple(ssrcs), reason))
        offset = end
    return out


class ReceptionStatistics:
    """What we received from one source, as a report block wants it (RFC 3550 A.1, A.3, A.8)."""

    def __init__(self, ssrc: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.received = 0
        self._base_seq: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._jitter = 0.0  # timestamp units
        self._last_transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self._last_sr = 0
        self._last_sr_at: float | None = None

    def receive(self, packet: RtpPacket, arrival: float) -> None:
        sequence = packet.sequence
        if self._base_seq is None:
            self._base_seq = self._max_seq = sequence
        else:
            delta = (sequence - self._max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if sequence < self._max_seq:
                    self._cycles += 1 << 16  # wrapped
                self._max_seq = sequence
        self.received += 1
        transit = arrival * self.clock_rate - packet.timestamp
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            self._jitter += (d - self._jitter) / 16
        self._last_transit = transit

    def sender_report(self, report: SenderReport, arrival: float) -> None:
        """Remember the peer's latest SR, for LSR/DLSR in our next report block."""
        self._last_sr = (report.ntp_timestamp >> 16) & 0xFFFFFFFF
        self._last_sr_at = arrival

    @property
    def extended_highest(self) -> int:
        return self._cycles + self._max_seq

    @property
    def jitter(self) -> int:
        return int(self._jitter)

    @property
    def expected(self) -> int:
        return 0 if self._base_seq is None else self.extended_highest - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Packets lost so far (negative when duplicates arrived)."""
        return self.expected - self.received

    def report_block(self, now: float) -> ReportBlock:
        if self._base_seq is None:
            return ReportBlock(self.ssrc, 0, 0, 0, 0)
        expected = self.expected
        lost = self.lost
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        lost = max(-0x800000, min(0x7FFFFF, lost))
        dlsr = 0 if self._last_sr_at is None else int((now - self._last_sr_at) * 65536)
        return ReportBlock(self.ssrc, min(fraction, 255), lost, self.extended_highest, self.jitter,
                           self._last_sr, dlsr)


REPORT_INTERVAL_S = 5.0  # RFC 3550's minimum interval; some SBCs expect reports about this often
_SENT_REPORTS_KEPT = 16  # our recent SRs, by the LSR a peer echoes, for the round trip


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What the peer's latest report block says about the stream we send."""

    fraction_lost: float  # 0.0-1.0, since its previous report
    packets_lost: int  # cumulative
    jitter_ms: float  # interarrival jitter it measured
    highest_sequence: int  # extended: how far into our stream it has received


class RtcpSession:
    """One call's RTCP (RFC 3550 §6): a compound report (SR while we send, else RR, with a report block on
    what we receive, and SDES CNAME) every `interval` s, randomised 0.5-1.5x so calls do not fall into
    step; the peer's SR remembered for our LSR/DLSR, its report blocks on our stream read, and the round
    trip from the LSR/DLSR it echoes (RFC 3550 §6.4.1), measured on our monotonic clock alone."""

    def __init__(self, sender: RtpSender, cname: str, *, start: float, interval: float = REPORT_INTERVAL_S,
                 uniform: Callable[[], float] = random.random) -> None:
        self.sender = sender
        self.cname = cname
        self.interval = interval
        self._uniform = uniform  # 0 <= x < 1; a test passes a fixed one
        self.statistics: ReceptionStatistics | None = None  # of the peer's current SSRC
        self.peer: PeerReport | None = None
        self.round_trip_ms: float | None = None
        self.reports_sent = 0
        self.reports_received = 0
        self._sent_at: dict[int, float] = {}  # LSR (middle 32 bits of our SR's NTP time) → when we sent it
        self._packets_reported = 0
        self.next_report_at = start + self._delay() / 2  # RFC 3550 §6.2: the first after half an interval

    def _delay(self) -> float:
        return self.interval * (0.5 + self._uniform())

    def receive_rtp(self, packet: RtpPacket, arrival: float) -> None:
        statistics = self.statistics
        if statistics is None or statistics.ssrc != packet.ssrc:  # a new source starts its own count
            statistics = self.statistics = ReceptionStatistics(packet.ssrc, self.sender.clock_rate)
        statistics.receive(packet, arrival)

    def due(self, now: float) -> bool:
        return now >= self.next_report_at

    def report(self, now: float, wallclock: float, *, goodbye: bool = False) -> bytes:
        """The compound report to send now (with a BYE when the call ends); schedules the next."""
        sender = self.sender
        statistics = self.statistics
        blocks = (statistics.report_block(now),) if statistics is not None else ()
        first: SenderReport | ReceiverReport
        if sender.packets_sent > self._packets_reported:
            ntp = ntp_time(wallclock)
            self._sent_at[(ntp >> 16) & 0xFFFFFFFF] = now
            if len(self._sent_at) > _SENT_REPORTS_KEPT:
                del self._sent_at[next(iter(self._sent_at))]
            first = SenderReport(sender.ssrc, ntp, sender.timestamp, sender.packets_sent, sender.octets_sent, blocks)
        else:
            first = ReceiverReport(sender.ssrc, blocks)
        self._packets_reported = sender.packets_sent
        packets: list[RtcpPacket] = [first, SourceDescription(((sender.ssrc, self.cname),))]
        if goodbye:
            packets.append(Goodbye((sender.ssrc,)))
        self.reports_sent += 1
        self.next_report_at = now + self._delay()
        return build_rtcp(*packets)

    def receive(self, data: bytes, arrival: float) -> list[RtcpPacket]:
        """A compound packet from the peer; raises RtcpError when it is malformed."""
        packets = parse_rtcp(data)
        statistics = self.statistics
        for packet in packets:
            if isinstance(packet, SenderReport) and statistics is not None and packet.ssrc == statistics.ssrc:
                statistics.sender_report(packet, arrival)
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self.sender.ssrc:
                        self._read(block, arrival)
        self.reports_received += 1
        return packets

    def _read(self, block: ReportBlock, arrival: float) -> None:
        self.peer = PeerReport(block.fraction_lost / 256, block.cumulative_lost,
                               block.jitter * 1000 / self.sender.clock_rate, block.highest_sequence)
        sent = self._sent_at.get(block.last_sr) if block.last_sr else None
        if sent is not None:
            self.round_trip_ms = max(0.0, arrival - sent - block.delay_since_last_sr / 65536) * 1000


def reception_record(rtcp: RtcpSession | None, received: int, clock_rate: int) -> dict[str, Any]:
    """A call record's view of its reception and reports: `received` packets accepted, the loss and jitter
    we measured, what the peer's latest report said of our stream, and the round trip."""
    statistics = rtcp.statistics if rtcp is not None else None
    peer = rtcp.peer if rtcp is not None else None
    round_trip = rtcp.round_trip_ms if rtcp is not None else None
    return {
        "received": {"packets": received, "lost": statistics.lost if statistics is not None else 0,
                     "jitter_ms": round(statistics.jitter * 1000 / clock_rate, 2) if statistics is not None else None},
        "peer_report": None if peer is None else {
            "packets_lost": peer.packets_lost, "fraction_lost": round(peer.fraction_lost, 4),
            "jitter_ms": round(peer.jitter_ms, 2), "highest_sequence": peer.highest_sequence},
        "round_trip_ms": round(round_trip, 2) if round_trip is not None else None,
    }

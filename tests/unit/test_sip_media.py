"""RTP packets, the sender's header state, RFC 4733 DTMF both ways, the jitter buffer, RTCP reports and
a call's RTCP session on an explicit clock."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from voxgate.sip.dtmf import (
    DtmfError,
    DtmfReceiver,
    TelephoneEvent,
    dtmf_packets,
    parse_dtmf_info,
    parse_telephone_event,
)
from voxgate.sip.jitter import JitterBuffer, Lost
from voxgate.sip.rtcp import (
    Goodbye,
    PeerReport,
    ReceiverReport,
    ReceptionStatistics,
    ReportBlock,
    RtcpError,
    RtcpSession,
    SenderReport,
    SourceDescription,
    build_rtcp,
    ntp_time,
    parse_rtcp,
)
from voxgate.sip.rtp import RtpError, RtpExtension, RtpPacket, RtpSender, is_rtcp, parse_rtp

SIPP_DTMF = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")  # Debian sip-tester, which the SIP tests need


# --- RTP -------------------------------------------------------------------------------------------------


def test_minimal_packet_layout() -> None:
    data = RtpPacket(0, 0x1234, 0xDEADBEEF, 0xCAFEBABE, b"\xff" * 160, marker=True).to_bytes()
    assert data[:12] == bytes.fromhex("80801234deadbeefcafebabe") and len(data) == 172
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc, packet.marker) == (
        0, 0x1234, 0xDEADBEEF, 0xCAFEBABE, True)
    assert packet.payload == b"\xff" * 160


def test_csrcs_extension_and_padding_round_trip() -> None:
    packet = RtpPacket(8, 65535, 2**32 - 1, 1, b"abc", csrcs=(7, 8, 9), extension=RtpExtension(0xBEDE, b"\x10\xaa\0\0"),
                       padding=5)
    data = packet.to_bytes()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3 and data[-1] == 5 and len(data) == 12 + 12 + 8 + 3 + 5
    assert parse_rtp(data) == packet
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")).to_bytes()


@pytest.mark.parametrize(("data", "code"), [
    (b"\x80\x00", "too_short"),
    (bytes([0x40]) + bytes(11), "bad_version"),
    (bytes([0x8F]) + bytes(11), "truncated"),  # 15 CSRCs promised, none there
    (bytes([0x90]) + bytes(11) + b"\x00\x00\x00\x05", "truncated"),  # extension of 5 words, none there
    (bytes([0xA0]) + bytes(11) + b"\x00", "bad_padding"),
    (bytes([0xA0]) + bytes(11) + b"ab\x09", "bad_padding"),
    (bytes([0x80]) + bytes(1600), "too_large"),
])
def test_garbage_is_a_typed_error(data: bytes, code: str) -> None:
    with pytest.raises(RtpError) as caught:
        parse_rtp(data)
    assert caught.value.code == code


def test_sender_sequence_timestamp_marker_and_counts() -> None:
    sender = RtpSender(payload_type=0, ssrc=5, sequence=65534, timestamp=2**32 - 160)
    first, second, third = (sender.packet(b"\x00" * 160, 160) for _ in range(3))
    assert [p.sequence for p in (first, second, third)] == [65534, 65535, 0]
    assert [p.timestamp for p in (first, second, third)] == [2**32 - 160, 0, 160]
    assert [p.marker for p in (first, second, third)] == [True, False, False]
    sender.skip(800)  # 100 ms of silence not sent
    resumed = sender.packet(b"\x00" * 160, 160)
    assert resumed.timestamp == 1120 and resumed.marker and resumed.sequence == 1
    sender.talkspurt()
    assert sender.packet(b"", 160).marker
    assert (sender.packets_sent, sender.octets_sent) == (5, 640)
    assert RtpSender(payload_type=0).ssrc != RtpSender(payload_type=0).ssrc  # random per stream


def test_rtcp_demultiplexing() -> None:
    assert is_rtcp(ReceiverReport(1).to_bytes()) and not is_rtcp(RtpPacket(0, 1, 1, 1).to_bytes())
    assert not is_rtcp(RtpPacket(101, 1, 1, 1, marker=True).to_bytes())


# --- DTMF -------------------------------------------------------------------------------------------------


def test_telephone_event_payload() -> None:
    event = TelephoneEvent(11, True, 10, 1280)
    assert event.to_bytes() == bytes([11, 0x8A, 0x05, 0x00]) and parse_telephone_event(event.to_bytes()) == event
    assert event.digit == "#" and TelephoneEvent(16, False, 0, 0).digit is None
    for bad in (b"", b"\x01\x02\x03", b"\x01" * 5):
        with pytest.raises(DtmfError):
            parse_telephone_event(bad)


def test_sending_a_digit_follows_rfc4733() -> None:
    sender = RtpSender(payload_type=0, ssrc=9, sequence=100, timestamp=8000)
    schedule = dtmf_packets(sender, "5", payload_type=101, duration_ms=100, interval_ms=20)
    offsets = [offset for offset, _ in schedule]
    packets = [packet for _, packet in schedule]
    events = [parse_telephone_event(p.payload) for p in packets]
    assert offsets == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12])
    assert [p.sequence for p in packets] == list(range(100, 107)) and {p.timestamp for p in packets} == {8000}
    assert [p.marker for p in packets] == [True] + [False] * 6 and {p.payload_type for p in packets} == {101}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3 and {e.event for e in events} == {5}
    assert sender.timestamp == 8800 and sender.packet(b"", 160).marker  # audio resumes after the event
    with pytest.raises(DtmfError):
        dtmf_packets(sender, "X", payload_type=101)


def test_receiver_reports_each_press_once() -> None:
    receiver = DtmfReceiver()
    sender = RtpSender(payload_type=0)
    digits = []
    for digit in "1#":
        for _, packet in dtmf_packets(sender, digit, payload_type=101):
            digits.append(receiver.receive(packet))
    assert [d for d in digits if d] == ["1", "#"]
    end_only = RtpPacket(101, 1, 999, 1, TelephoneEvent(3, True, 10, 800).to_bytes())
    assert receiver.receive(end_only) == "3"  # the start packets were lost: the end still reports it


def _pcap_udp_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset, out = 24, []
    while offset + 16 <= len(data):
        caplen = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        ip = frame[14:] if linktype == 1 else frame[16:]
        ihl = (ip[0] & 0x0F) * 4
        out.append(ip[ihl + 8 :])
    return out


def test_sipp_reference_capture_is_one_digit() -> None:
    """SIPp's bundled RFC 4733 capture: 10 packets of event 1, the last E=1 with duration 2240."""
    packets = [parse_rtp(p) for p in _pcap_udp_payloads(SIPP_DTMF)]
    receiver = DtmfReceiver()
    assert [d for p in packets if (d := receiver.receive(p))] == ["1"]
    last = parse_telephone_event(packets[-1].payload)
    assert len(packets) == 10 and last.end and last.duration == 2240 and packets[0].payload_type == 101


@pytest.mark.parametrize(("content_type", "body", "expected"), [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
    ("application/dtmf-relay", b"signal= #\r\n", ("#", None)),
    ("application/dtmf-relay", b"Signal=10\r\nDuration=250", ("*", 250)),
    ("application/dtmf", b"9", ("9", None)),
])
def test_sip_info_dtmf(content_type: str, body: bytes, expected: tuple[str, int | None]) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/dtmf-relay", b"Duration=160"), ("application/dtmf-relay", b"Signal=Z"),
    ("application/dtmf-relay", b"Signal=\xff"), ("text/plain", b"5"), ("application/dtmf", b"55"),
    ("application/dtmf-relay", b"Signal=1\r\n" * 200),
])
def test_bad_sip_info_dtmf(content_type: str, body: bytes) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_info(content_type, body)


# --- jitter buffer ----------------------------------------------------------------------------------------


def stream(count: int, *, start_seq: int = 1000, start_ts: int = 0, ssrc: int = 1) -> list[RtpPacket]:
    return [RtpPacket(0, (start_seq + n) & 0xFFFF, (start_ts + 160 * n) & 0xFFFFFFFF, ssrc, bytes([n % 256]) * 160)
            for n in range(count)]


def play(buffer: JitterBuffer, until: float, start: float = 0.0) -> list[RtpPacket | Lost]:
    """Pop once every 20 ms from `start` to `until`."""
    out: list[RtpPacket | Lost] = []
    tick = start
    while tick <= until + 1e-9:
        item = buffer.pop(tick)
        if item is not None:
            out.append(item)
        tick += 0.02
    return out


def test_the_next_packet_plays_as_it_comes_and_one_out_of_order_waits_for_the_gap() -> None:
    packets = stream(5)
    buffer = JitterBuffer(min_delay=0.04)  # a gap is waited for 40 ms past its turn
    played: list[tuple[float, int]] = []
    for packet, arrival in zip([packets[0], packets[2], packets[1], packets[4], packets[3]],
                               [0.0, 0.04, 0.041, 0.08, 0.081], strict=True):
        buffer.push(packet, arrival)
        while isinstance(item := buffer.pop(arrival), RtpPacket):  # as the line takes it: on arrival
            played.append((arrival, item.sequence))
    # 1000 at once (nothing can come before it); 1002 waits for 1001, and both go when it comes
    assert played == [(0.0, 1000), (0.041, 1001), (0.041, 1002), (0.081, 1003), (0.081, 1004)]
    assert buffer.stats.lost == 0 and buffer.stats.played == 5


def test_a_missing_packet_becomes_lost_when_the_next_is_due_and_a_late_one_is_dropped() -> None:
    packets = stream(4)
    buffer = JitterBuffer()
    for packet in (packets[0], packets[2], packets[3]):
        buffer.push(packet, 0.02 * (packet.sequence - 1000))
    played = play(buffer, 0.2, start=0.04)
    assert [type(p).__name__ for p in played] == ["RtpPacket", "Lost", "RtpPacket", "RtpPacket"]
    assert isinstance(played[1], Lost) and played[1].sequence == 1001
    buffer.push(packets[1], 0.3)
    assert buffer.stats.late == 1 and len(buffer) == 0


def test_delay_adapts_to_jitter_between_talkspurts() -> None:
    buffer = JitterBuffer(min_delay=0.04, max_delay=0.2)
    jittery = [0.0, 0.05, 0.04, 0.11, 0.08, 0.16, 0.12, 0.21, 0.16, 0.26]
    for packet, arrival in zip(stream(10), jittery, strict=True):
        buffer.push(packet, arrival)
    assert buffer.jitter > 0.01
    play(buffer, 0.5)
    buffer.pop(0.6)  # ran dry: the delay may change now
    assert 0.04 < buffer.delay <= 0.2 and buffer.delay == pytest.approx(3 * buffer.jitter)
    steady = JitterBuffer()
    for n, packet in enumerate(stream(10)):
        steady.push(packet, 0.02 * n)
    assert steady.jitter == 0 and steady.delay == 0.02  # one frame on a steady link


def test_sequence_wrap_duplicates_ssrc_change_and_capacity() -> None:
    buffer = JitterBuffer(capacity=5)
    for n, packet in enumerate(stream(4, start_seq=65534, start_ts=2**32 - 320)):
        buffer.push(packet, 0.02 * n)
    buffer.push(stream(1, start_seq=65535, start_ts=2**32 - 160)[0], 0.03)
    assert buffer.stats.duplicate == 1
    played = play(buffer, 0.2, start=0.04)
    assert [p.sequence for p in played if isinstance(p, RtpPacket)] == [65534, 65535, 0, 1]
    buffer.push(stream(1, ssrc=2)[0], 0.3)
    assert buffer.stats.restarts == 1 and len(buffer) == 1
    for n, packet in enumerate(stream(8, start_seq=1001, ssrc=2)):
        buffer.push(packet, 0.3 + 0.001 * n)
    assert len(buffer) == 5 and buffer.stats.overflow == 4


# --- RTCP -------------------------------------------------------------------------------------------------


def test_compound_report_round_trip() -> None:
    block = ReportBlock(0xABC, 25, -3, 70000, 41, 0x12345678, 65536)
    sr = SenderReport(0x1111, ntp_time(1_700_000_000.5), 160000, 1000, 160000, (block,))
    data = build_rtcp(sr, SourceDescription(((0x1111, "voxgate@192.0.2.10"),)), Goodbye((0x1111,), "bye now"))
    assert len(data) % 4 == 0
    parsed = parse_rtcp(data)
    assert parsed == [sr, SourceDescription(((0x1111, "voxgate@192.0.2.10"),)), Goodbye((0x1111,), "bye now")]
    assert sr.ntp_timestamp >> 32 == 1_700_000_000 + 2_208_988_800
    rr = ReceiverReport(0x2222, (block, block))
    assert parse_rtcp(rr.to_bytes()) == [rr]
    assert parse_rtcp(struct.pack("!BBH", 0x80, 204, 1) + b"APPL") == []  # other types are skipped


@pytest.mark.parametrize("data", [
    b"\x80\xc8", bytes([0x40, 200, 0, 0]), struct.pack("!BBH", 0x80, 200, 10) + bytes(8),
    struct.pack("!BBH", 0x81, 201, 1) + bytes(4), struct.pack("!BBH", 0x81, 202, 1) + bytes(4),
    struct.pack("!BBH", 0x82, 203, 1) + bytes(4), struct.pack("!BBH", 0xA0, 201, 1) + bytes(3) + b"\x09",
    bytes(2000),
])
def test_bad_rtcp(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(data)


def test_reception_statistics() -> None:
    stats = ReceptionStatistics(0x99)
    for n, packet in enumerate(stream(10, start_seq=65530, ssrc=0x99)):
        if n in (3, 4):
            continue  # two lost
        stats.receive(packet, 0.02 * n)
    block = stats.report_block(1.0)
    assert block.highest_sequence == 65536 + 3 and block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 10 and block.jitter == 0
    stats.sender_report(SenderReport(1, ntp_time(100.0), 0, 0, 0), arrival=1.0)
    later = stats.report_block(1.5)
    assert later.fraction_lost == 0 and later.delay_since_last_sr == 32768
    assert later.last_sr == (ntp_time(100.0) >> 16) & 0xFFFFFFFF
    jittery = ReceptionStatistics(1)
    for n, packet in enumerate(stream(20)):
        jittery.receive(packet, 0.02 * n + (0.01 if n % 2 else 0))
    assert jittery.jitter > 30  # 10 ms swings at 8 kHz converge towards 80 units


def test_rtcp_session_reports_on_schedule_and_reads_the_peers_reports() -> None:
    """RR before we send, SR with the sender's counts after; our reception in a report block; the peer's
    SR remembered for LSR/DLSR; its block on our stream read, and the round trip from the LSR it echoes."""
    sender = RtpSender(0, ssrc=0xA1, sequence=100, timestamp=5000)
    rtcp = RtcpSession(sender, "voxgate@192.0.2.10", start=10.0, uniform=lambda: 0.5)
    assert rtcp.next_report_at == 12.5 and not rtcp.due(12.4) and rtcp.due(12.5)  # half an interval first
    [rr, sdes] = parse_rtcp(rtcp.report(12.5, 1_700_000_000.0))
    assert rr == ReceiverReport(0xA1) and sdes == SourceDescription(((0xA1, "voxgate@192.0.2.10"),))
    assert rtcp.next_report_at == 17.5  # then every interval (randomised 0.5-1.5x; here exactly 1x)
    for packet in stream(50, ssrc=0xB2):
        if packet.sequence != 1010:  # one lost
            rtcp.receive_rtp(packet, 13.0)
    for _ in range(3):
        sender.packet(b"\xff" * 160, 160)
    rtcp.receive(SenderReport(0xB2, ntp_time(1_700_000_003.0), 0, 49, 7840).to_bytes(), arrival=14.0)
    [sr, _] = parse_rtcp(rtcp.report(17.5, 1_700_000_005.0))
    assert isinstance(sr, SenderReport) and (sr.ssrc, sr.packet_count, sr.octet_count) == (0xA1, 3, 480)
    assert sr.rtp_timestamp == 5000 + 3 * 160 and sr.ntp_timestamp == ntp_time(1_700_000_005.0)
    [block] = sr.reports
    assert (block.ssrc, block.cumulative_lost, block.highest_sequence) == (0xB2, 1, 1049)
    assert block.last_sr == (ntp_time(1_700_000_003.0) >> 16) & 0xFFFFFFFF and block.delay_since_last_sr == 3.5 * 65536
    # The peer's RR: 10 % of our packets lost, jitter 80 units (10 ms), our SR echoed 0.5 s after it arrived.
    lsr = (sr.ntp_timestamp >> 16) & 0xFFFFFFFF
    theirs = ReceiverReport(0xB2, (ReportBlock(0xA1, 25, 2, 102, 80, lsr, 32768), ReportBlock(0x77, 255, 9, 1, 1)))
    rtcp.receive(build_rtcp(theirs, SourceDescription(((0xB2, "pbx"),))), arrival=18.25)
    assert rtcp.peer == PeerReport(25 / 256, 2, 10.0, 102)  # the block on another source is not ours
    assert rtcp.round_trip_ms == pytest.approx(250.0)  # 18.25 - 17.5 - 0.5 s held by the peer
    rtcp.receive(ReceiverReport(0xB2, (ReportBlock(0xA1, 0, 2, 150, 8, 0x1234, 1),)).to_bytes(), arrival=19.0)
    assert rtcp.round_trip_ms == pytest.approx(250.0) and rtcp.peer.highest_sequence == 150  # an unknown LSR: kept
    assert rtcp.reports_received == 3
    # Nothing sent since: RR again; the last report says goodbye.
    [rr, _, bye] = parse_rtcp(rtcp.report(22.5, 1_700_000_010.0, goodbye=True))
    assert isinstance(rr, ReceiverReport) and bye == Goodbye((0xA1,))
    with pytest.raises(RtcpError):
        rtcp.receive(b"\x80\xc8\x00", arrival=23.0)

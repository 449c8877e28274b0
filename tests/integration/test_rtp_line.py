"""A SIP call's RTP socket on loopback: what it accepts, what it drops and counts, and whom it latches to;
SRTP on it, its RTCP reports both ways, and the port range it binds from."""

from __future__ import annotations

import asyncio
import base64
import socket

import pytest

from tests.phone_carrier import eventually
from tests.sipp_caller import free_port_pair
from voxgate.sip.dtmf import TelephoneEvent
from voxgate.sip.rtcp import ReceiverReport, ReportBlock, SenderReport, SourceDescription, build_rtcp, parse_rtcp
from voxgate.sip.rtp import RtpPacket, parse_rtp
from voxgate.sip.sdes import SrtpKeys, new_key
from voxgate.sip.sdp import MediaSession, answer_offer, parse_sdp
from voxgate.sip.srtp import SrtpContext
from voxgate.transports.rtp_line import RtpLine
from voxgate.transports.rtp_ports import PortsExhausted, RtpPorts

OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def packet(payload_type: int, payload: bytes, sequence: int = 1, timestamp: int = 160) -> bytes:
    return RtpPacket(payload_type, sequence, timestamp, 0x1234, payload).to_bytes()


async def test_garbage_is_counted_the_first_good_packet_latches_and_strangers_are_dropped() -> None:
    caller, stranger = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    caller.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    _, media = answer_offer(parse_sdp(OFFER.format(port=40000)), address="127.0.0.1", port=1, session_id=1,
                            session_version=1)
    audio: list[bytes] = []
    digits: list[str] = []
    line = RtpLine(media, "127.0.0.1", digits.append)
    loop = asyncio.get_running_loop()

    def arrived() -> list[bytes]:
        audio.extend(line.take_audio(loop.time() + 1.0))  # past any playout delay
        return audio

    local = await line.open("127.0.0.1")
    try:
        for datagram in (b"", b"short", b"\x40" + bytes(20), bytes(1600),  # not RTP version 2; too large
                         packet(8, b"\xd5" * 160),  # a payload type the call did not negotiate
                         packet(0, b"\xff" * 4), packet(0, b"\xff" * 800),  # no G.711 frame is that size
                         packet(101, b"\x01\x0a")):  # a telephone-event payload is 4 bytes
            caller.sendto(datagram, local)
        caller.sendto(packet(0, b"\x7f" * 160), local)  # the first good one latches the line to its sender
        await eventually(arrived, 5, "caller audio")
        assert line.latched == caller.getsockname() and line.remote == caller.getsockname()
        assert {name: count for name, count in line.counters.items() if name.startswith("dropped")} == {
            "dropped_too_short": 2, "dropped_bad_version": 1, "dropped_too_large": 1,
            "dropped_unknown_payload_type": 1, "dropped_bad_payload_size": 2, "dropped_bad_event_size": 1}
        stranger.sendto(packet(0, b"\x00" * 160, sequence=2), local)  # same host, another port: not the call
        caller.sendto(packet(101, TelephoneEvent(5, False, 10, 160).to_bytes(), sequence=3, timestamp=320), local)
        await eventually(lambda: digits, 5, "the key press")
        assert digits == ["5"] and arrived() == [b"\x7f" * 160] and line.counters["dropped_wrong_source"] == 1
        line.send(line.sender.packet(b"\xff" * 160, 160))  # symmetric: back to where the caller sends from
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(caller, 2048), 5)
        assert parse_rtp(data).payload == b"\xff" * 160
    finally:
        line.close()
        caller.close()
        stranger.close()


async def test_a_packet_from_an_untrusted_host_cannot_latch_the_line() -> None:
    _, media = answer_offer(parse_sdp(OFFER.format(port=40000).replace("127.0.0.1", "192.0.2.9")),
                            address="127.0.0.1", port=1, session_id=1, session_version=1)
    line = RtpLine(media, "192.0.2.1", lambda digit: None)
    local = await line.open("127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as guesser:
            guesser.sendto(packet(0, b"\x7f" * 160), local)
            await eventually(lambda: line.counters["dropped_untrusted_source"] == 1, 5, "the guess refused")
        assert line.latched is None and line.remote == ("192.0.2.9", 40000)
    finally:
        line.close()


async def test_caller_audio_comes_out_in_order_with_a_lost_packet_as_silence() -> None:
    _, media = answer_offer(parse_sdp(OFFER.format(port=40000)), address="127.0.0.1", port=1, session_id=1,
                            session_version=1)
    line = RtpLine(media, "127.0.0.1", lambda digit: None)
    local = await line.open("127.0.0.1")
    loop = asyncio.get_running_loop()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            for sequence in (1, 3, 2, 5):  # 3 overtakes 2; 4 never comes
                caller.sendto(packet(0, bytes([sequence]) * 160, sequence, sequence * 160), local)
            await eventually(lambda: line.counters["received"] == 4, 5, "four packets")
        assert line.take_audio(loop.time() + 1.0) == [bytes([n]) * 160 for n in (1, 2, 3)] + [b"\xff" * 160,
                                                                                              b"\x05" * 160]
        assert line.counters["lost"] == 1
    finally:
        line.close()


async def test_the_call_is_told_of_each_audio_packet_as_it_arrives_and_takes_it_then() -> None:
    _, media = answer_offer(parse_sdp(OFFER.format(port=40000)), address="127.0.0.1", port=1, session_id=1,
                            session_version=1)
    digits: list[str] = []
    line = RtpLine(media, "127.0.0.1", digits.append)
    taken: list[tuple[float, list[bytes]]] = []
    line.on_audio = lambda arrival: taken.append((arrival, line.take_audio(arrival)))
    local = await line.open("127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.sendto(packet(0, b"\x01" * 160, 1, 160), local)
            caller.sendto(packet(0, b"\x02" * 4, 2, 320), local)  # no G.711 frame: dropped, never told
            caller.sendto(packet(101, TelephoneEvent(5, True, 10, 160).to_bytes(), 3, 320), local)  # a key
            caller.sendto(packet(0, b"\x02" * 160, 2, 320), local)
            await eventually(lambda: digits and len(taken) == 2, 5, "two audio packets and a key")
        # each packet, the next in sequence, went out in its own arrival's call: no playout delay, no tick
        assert [audio for _, audio in taken] == [[b"\x01" * 160], [b"\x02" * 160]]
        assert taken[-1][0] == line.last_heard and line.take_audio(line.last_heard + 1.0) == []
    finally:
        line.close()


def udp(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def negotiated(offer: str) -> MediaSession:
    return answer_offer(parse_sdp(offer), address="127.0.0.1", port=1, session_id=1, session_version=1)[1]


async def received(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), 5)


async def test_comfort_noise_replaces_the_agents_silence_and_the_callers_is_heard_as_quiet() -> None:
    caller = udp()
    media = negotiated(OFFER.replace("RTP/AVP 0 101", "RTP/AVP 0 101 13").format(port=caller.getsockname()[1]))
    assert media.comfort_noise == 13
    line = RtpLine(media, "127.0.0.1", lambda digit: None)
    local = await line.open("127.0.0.1")
    try:
        caller.sendto(packet(0, b"\x7f" * 160), local)  # latch
        await eventually(lambda: line.latched is not None, 5, "the latch")
        speech = b"\x10" * 160
        line.send_audio(speech, 160)
        first = parse_rtp(await received(caller))
        t0 = 1000.0
        for frame in range(100):  # two seconds of the agent's silence: one CN packet where it starts
            line.send_silence(160, t0 + frame * 0.02)
        line.send_audio(speech, 160)
        noise, after = parse_rtp(await received(caller)), parse_rtp(await received(caller))
        assert (noise.payload_type, noise.payload, noise.timestamp) == (13, bytes([127]), first.timestamp + 160)
        assert not noise.marker and noise.sequence == (first.sequence + 1) & 0xFFFF
        # the stream's clock ran on through the silence; the speech after it starts a talkspurt
        assert after.payload_type == 0 and after.marker and after.sequence == (noise.sequence + 1) & 0xFFFF
        assert after.timestamp == first.timestamp + 160 * 101
        for frame in range(251):  # a long silence: CN where it starts and again 5 s later, to keep timers alive
            line.send_silence(160, t0 + 10 + frame * 0.02)
        line.send_audio(speech, 160)
        assert [parse_rtp(await received(caller)).payload_type for _ in range(3)] == [13, 13, 0]
        assert line.counters["comfort_noise_sent"] == 3
        caller.sendto(packet(13, bytes([60]), sequence=2, timestamp=320), local)  # the caller's own CN
        await eventually(lambda: line.counters["comfort_noise_received"] == 1, 5, "the caller's CN")
        assert "dropped_unknown_payload_type" not in line.counters
        assert line.take_audio(asyncio.get_running_loop().time() + 1.0) == [b"\x7f" * 160]  # CN is no audio
    finally:
        line.close()
        caller.close()


async def test_without_comfort_noise_the_agents_silence_is_sent_as_audio() -> None:
    caller = udp()
    line = RtpLine(negotiated(OFFER.format(port=caller.getsockname()[1])), "127.0.0.1", lambda digit: None)
    await line.open("127.0.0.1")
    try:
        assert line.media.comfort_noise is None
        for frame in range(3):
            line.send_silence(160, 1000.0 + frame * 0.02)
        got = [parse_rtp(await received(caller)) for _ in range(3)]
        assert [(p.payload_type, p.payload) for p in got] == [(0, b"\xff" * 160)] * 3
        assert line.counters["comfort_noise_sent"] == 0
    finally:
        line.close()
        caller.close()


async def test_srtp_authenticates_before_latching_and_protects_what_it_sends() -> None:
    """Plain RTP, a wrong key, a tampered packet: dropped and counted, the line still unlatched; the caller's
    good packet latches and is heard; its replay is dropped; what we send the caller decrypts; so is SRTCP."""
    port = free_port_pair()
    caller_key = new_key()
    offer = OFFER.format(port=port).replace("RTP/AVP", "RTP/SAVP") + (
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(caller_key).decode()}\r\n")
    media = negotiated(offer)
    assert media.srtp is not None
    caller_tx = SrtpContext(SrtpKeys(media.srtp.suite, caller_key, media.srtp.local_key))
    caller_rx = SrtpContext(SrtpKeys(media.srtp.suite, caller_key, media.srtp.local_key))
    stranger_tx = SrtpContext(SrtpKeys(media.srtp.suite, new_key(), media.srtp.local_key))
    line = RtpLine(media, "127.0.0.1", lambda digit: None)
    local = await line.open("127.0.0.1")
    caller, caller_rtcp = udp(port), udp(port + 1)
    loop = asyncio.get_running_loop()
    try:
        tampered = bytearray(caller_tx.protect(packet(0, b"\x11" * 160, sequence=9)))
        tampered[30] ^= 0xFF
        for datagram in (packet(0, b"\x7f" * 160), stranger_tx.protect(packet(0, b"\x7f" * 160, sequence=2)),
                         bytes(tampered)):
            caller.sendto(datagram, local)
        await eventually(lambda: line.counters["dropped_srtp_auth_failed"] == 3, 5, "three refusals")
        assert line.latched is None and line.counters["received"] == 0
        good = caller_tx.protect(packet(0, b"\x7f" * 160, sequence=10, timestamp=1600))
        caller.sendto(good, local)
        caller.sendto(good, local)  # a replay
        await eventually(lambda: line.counters["dropped_srtp_replay"] == 1, 5, "the replay refused")
        assert line.latched == caller.getsockname() and line.counters["received"] == 1
        assert line.take_audio(loop.time() + 1.0) == [b"\x7f" * 160]
        line.send(line.sender.packet(b"\x22" * 160, 160))
        assert parse_rtp(caller_rx.unprotect(await received(caller))).payload == b"\x22" * 160
        line.report(line.rtcp.next_report_at)  # SRTCP to the RTP port + 1
        [sr, _] = parse_rtcp(caller_rx.unprotect_rtcp(await received(caller_rtcp)))
        assert isinstance(sr, SenderReport) and sr.packet_count == 1 and sr.reports[0].ssrc == 0x1234
        plain = build_rtcp(ReceiverReport(0x1234), SourceDescription(((0x1234, "caller"),)))
        caller_rtcp.sendto(plain, (local[0], local[1] + 1))  # plain RTCP on an SRTP call: refused
        await eventually(lambda: line.counters["dropped_srtcp_unencrypted"] == 1, 5, "plain RTCP refused")
    finally:
        line.close()
        caller.close()
        caller_rtcp.close()


@pytest.mark.parametrize("mux", [False, True])
async def test_rtcp_reports_go_both_ways_and_the_peers_report_is_kept(mux: bool) -> None:
    """Our SR (the sender's counts, a block on the caller's stream) reaches the caller's RTCP port, or its
    RTP port with rtcp-mux; the caller's RR about our stream (echoing our SR) shows in the line's quality."""
    port = free_port_pair()
    media = negotiated(OFFER.format(port=port) + ("a=rtcp-mux\r\n" if mux else ""))
    line = RtpLine(media, "127.0.0.1", lambda digit: None)
    local = await line.open("127.0.0.1")
    caller, caller_rtcp = udp(port), udp(port + 1)
    ours_rtcp = local if mux else (local[0], local[1] + 1)
    try:
        for sequence in range(1, 11):
            if sequence != 4:  # one lost
                caller.sendto(packet(0, b"\x7f" * 160, sequence, sequence * 160), local)
        await eventually(lambda: line.counters["received"] == 9, 5, "the caller's packets")
        for _ in range(5):
            line.send(line.sender.packet(b"\xff" * 160, 160))
        line.report(line.rtcp.next_report_at)
        inbox = caller if mux else caller_rtcp
        while True:  # with rtcp-mux our RTP arrives on the same socket first
            data = await received(inbox)
            if data[1] == 200:
                break
        [sr, sdes] = parse_rtcp(data)
        assert isinstance(sr, SenderReport) and (sr.packet_count, sr.octet_count) == (5, 800)
        assert sr.reports[0].cumulative_lost == 1 and sr.reports[0].highest_sequence == 10
        assert sdes == SourceDescription(((line.sender.ssrc, "voxgate"),))
        lsr = (sr.ntp_timestamp >> 16) & 0xFFFFFFFF
        report = build_rtcp(ReceiverReport(0x1234, (ReportBlock(line.sender.ssrc, 64, 3, 5, 16, lsr, 0),)),
                            SourceDescription(((0x1234, "caller"),)))
        (caller if mux else caller_rtcp).sendto(report, ours_rtcp)
        await eventually(lambda: line.rtcp.peer is not None, 5, "the caller's report read")
        quality = line.quality()
        assert quality["peer_report"] == {"packets_lost": 3, "fraction_lost": 0.25, "jitter_ms": 2.0,
                                          "highest_sequence": 5}
        assert quality["round_trip_ms"] is not None and quality["round_trip_ms"] >= 0
        assert quality["received"]["packets"] == 9 and quality["received"]["lost"] == 1
        assert quality["sent"] == {"packets": 5, "octets": 800} and quality["rtcp_mux"] is mux
        assert quality["rtcp"]["received"] == 1 and quality["srtp"] is None and quality["dropped"] == {}
        with udp() as stranger:  # another port of the caller's host cannot speak for the call
            stranger.sendto(report, ours_rtcp)
            await eventually(lambda: line.counters["dropped_wrong_source"] == 1, 5, "the stranger's report")
    finally:
        line.close()
        caller.close()
        caller_rtcp.close()


async def test_the_port_range_hands_out_even_pairs_skips_taken_ports_and_runs_out() -> None:
    base = free_port_pair(2)
    ports = RtpPorts(base, base + 3)
    taken = udp(base)  # another program holds the first pair's RTP port
    try:
        rtp, rtcp = ports.bind("127.0.0.1", rtcp=True)
        assert rtcp is not None
        assert (rtp.getsockname()[1], rtcp.getsockname()[1]) == (base + 2, base + 3)
        with pytest.raises(PortsExhausted):
            ports.bind("127.0.0.1", rtcp=True)
        taken.close()
        again, none = ports.bind("127.0.0.1", rtcp=False)  # rtcp-mux: one socket
        assert again.getsockname()[1] == base and none is None
        with pytest.raises(PortsExhausted):
            ports.bind("127.0.0.1", rtcp=True)
        rtp.close()
        rtcp.close()
        ports.release(base + 2)
        last, last_rtcp = ports.bind("127.0.0.1", rtcp=True)
        assert last.getsockname()[1] == base + 2 and last_rtcp is not None
        for sock in (again, last, last_rtcp):
            sock.close()
    finally:
        taken.close()
    ephemeral, ephemeral_rtcp = RtpPorts().bind("127.0.0.1", rtcp=True)
    assert ephemeral_rtcp is not None
    assert ephemeral.getsockname()[1] % 2 == 0 and ephemeral_rtcp.getsockname()[1] == ephemeral.getsockname()[1] + 1
    ephemeral.close()
    ephemeral_rtcp.close()

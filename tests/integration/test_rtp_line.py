"""A SIP call's RTP socket on loopback: what it accepts, what it drops and counts, and whom it latches to."""

from __future__ import annotations

import asyncio
import socket

from tests.phone_carrier import eventually
from voxgate.sip.dtmf import TelephoneEvent
from voxgate.sip.rtp import RtpPacket, parse_rtp
from voxgate.sip.sdp import answer_offer, parse_sdp
from voxgate.transports.rtp_line import RtpLine

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

"""A browser call's socket answers only the browser that holds the call's ICE password, and takes nothing
else from an address that has not proved it (RFC 8445 §7.3): media sockets are authenticated per call."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aioice import stun as aioice_stun

from tests.unit.test_webrtc_answer import CHROME
from voxgate.sip.rtp import RtpPacket
from voxgate.transports.rtp_ports import RtpPorts
from voxgate.transports.webrtc_offer import read_offer
from voxgate.webrtc.answer import plan_answer
from voxgate.webrtc.data_channels import Channel
from voxgate.webrtc.dtls import DtlsCertificate
from voxgate.webrtc.peer import BrowserPeer

BROWSER_UFRAG = "Tq8F"  # the offer's


class Listener:
    def __init__(self) -> None:
        self.states: list[str] = []
        self.audio: list[RtpPacket] = []

    def audio_received(self, packet: RtpPacket, now: float) -> None:
        self.audio.append(packet)

    def channel_opened(self, channel: Channel) -> None: ...
    def message_received(self, channel: Channel, data: str | bytes) -> None: ...
    def channel_closed(self, channel: Channel) -> None: ...

    def state_changed(self, state: str) -> None:
        self.states.append(state)

    def rtcp_received(self, data: bytes, now: float) -> None: ...


def check(username: str, password: str) -> bytes:
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["ICE-CONTROLLING"] = 1
    message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity(password.encode())
    message.add_fingerprint()
    return bytes(message)


class Browser(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


async def test_only_a_check_signed_with_the_calls_password_opens_the_socket() -> None:
    loop = asyncio.get_running_loop()
    listener = Listener()
    ports = RtpPorts()
    peer = BrowserPeer(plan_answer(read_offer(CHROME)), DtlsCertificate.generate(), listener)
    answer = await peer.open(["127.0.0.1"], lambda host: ports.bind(host, rtcp=False)[0])
    assert f"a=ice-ufrag:{peer.ice.ufrag}" in answer and "a=ice-lite" in answer
    address = ("127.0.0.1", peer.ports[0])
    transport, browser = await loop.create_datagram_endpoint(Browser, local_addr=("127.0.0.1", 0))
    mine = transport.get_extra_info("sockname")
    try:
        # Media before any check: dropped, unanswered.
        transport.sendto(b"\x16\xfe\xfd" + bytes(40), address)  # a DTLS record
        transport.sendto(RtpPacket(111, 1, 960, 7, b"\x01" * 40).to_bytes(), address)
        # A check signed with another password, or for another call's username: 401.
        for username, password in ((f"{peer.ice.ufrag}:{BROWSER_UFRAG}", "not-the-password-at-all-xxxxxxxx"),
                                   (f"other:{BROWSER_UFRAG}", peer.ice.password)):
            transport.sendto(check(username, password), address)
            reply = aioice_stun.parse_message(await asyncio.wait_for(browser.received.get(), 5))
            assert reply.message_class == aioice_stun.Class.ERROR and reply.attributes["ERROR-CODE"][0] == 401
        # Garbage that is not STUN is dropped, and the socket still answers.
        transport.sendto(b"\x00\x01\x00\x00garbage", address)
        transport.sendto(check(f"{peer.ice.ufrag}:{BROWSER_UFRAG}", peer.ice.password), address)
        reply = aioice_stun.parse_message(await asyncio.wait_for(browser.received.get(), 5))
        assert reply.message_class == aioice_stun.Class.RESPONSE
        assert reply.check_message_integrity(peer.ice.password.encode())
        assert reply.attributes["XOR-MAPPED-ADDRESS"] == mine
        assert peer.state == "checking" and browser.received.empty()
        assert peer.counters == {"dropped_unchecked_source": 2, "dropped_bad_check": 2, "dropped_bad_stun": 1}
        assert not listener.audio and not listener.states
    finally:
        transport.close()
        peer.close()
    assert listener.states == ["closed"]
    # The socket closes with the call: once the loop has run the close, its port is free again.
    await asyncio.sleep(0)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(address)
    probe.close()

"""SIP over TLS (RFC 3261 §26; `sip_tls_port`) against a caller made of voxgate's own SIP cores over Python's
`ssl`: Debian's SIPp is built without TLS (`sipp -v`: "SCTP-PCAP-RTPSTREAM"). The gateway serves a
self-signed certificate made in the test (its own `sip_tls_cert`/`sip_tls_key`: HTTP stays plain), takes
the call over TLS, answers with a `sips:` Contact (or `;transport=tls` for a `sip:` call), sends RTP, and
its BYE comes back over the same TLS connection with a TLS Via.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, finished_call, start_server
from tests.phone_carrier import eventually
from tests.sipp_caller import free_port
from voxgate.certificates import self_signed
from voxgate.sip.dialog import Dialog
from voxgate.sip.headers import NameAddress, Via, new_branch, new_tag
from voxgate.sip.message import MessageStream, Request, Response, make_response, new_request
from voxgate.sip.sdp import CodecPreferences, make_offer
from voxgate.sip.uri import SipUri


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    tmp = tmp_path_factory.mktemp("sip-tls")
    cert, key = self_signed(tmp / "certificate")
    live = start_server(tmp, engine="echo", default_agent="echo", sip_port=free_port(),
                        sip_tls_port=free_port(socket.SOCK_STREAM), sip_tls_cert=cert, sip_tls_key=key)
    yield live, cert
    live.embedded.stop()


class TlsCaller:
    """One TLS connection to the gateway, framed as SIP over TCP is (`MessageStream`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.stream = MessageStream()
        self.port = int(writer.get_extra_info("sockname")[1])

    def send(self, message: Request | Response) -> None:
        self.writer.write(message.to_bytes())

    async def receive(self) -> Request | Response:
        async with asyncio.timeout(20):
            while True:
                item = self.stream.next_message()
                if isinstance(item, Request | Response):
                    return item
                if item is None:
                    data = await self.reader.read(65536)
                    assert data, "the gateway closed the TLS connection"
                    self.stream.receive_data(data)

    async def final(self) -> Response:
        while True:
            message = await self.receive()
            assert isinstance(message, Response), message
            if message.status >= 200:
                return message


class RtpSink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.packets += 1


@pytest.mark.parametrize("scheme", ["sips", "sip"])
async def test_a_call_over_tls_is_answered_and_ended_over_tls(gateway: tuple[LiveServer, Path], scheme: str) -> None:
    live, cert = gateway
    phone = live.gateway.sip
    assert phone is not None and phone.tls_port is not None, "no TLS listener"
    loop = asyncio.get_running_loop()
    sink = RtpSink()
    media, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", 0))
    reader, writer = await asyncio.open_connection("127.0.0.1", phone.tls_port,
                                                   ssl=ssl.create_default_context(cafile=str(cert)))
    caller = TlsCaller(reader, writer)
    try:
        tls = () if scheme == "sips" else (("transport", "tls"),)
        target = SipUri(scheme, "127.0.0.1", "echo", port=phone.tls_port, params=tls)
        me = NameAddress(SipUri(scheme, "127.0.0.1", "caller", port=caller.port, params=tls))
        via = Via("TLS", "127.0.0.1", caller.port)
        # no comfort noise offered: the silent echo agent's line then sends RTP every 20 ms, which is what the
        # 10 packets below count
        offer = make_offer(address="127.0.0.1", port=media.get_extra_info("sockname")[1], session_id=1,
                           session_version=1, preferences=CodecPreferences(comfort_noise=False))
        invite = new_request("INVITE", target, via=via.with_params(branch=new_branch()), from_=me.with_tag(new_tag()),
                             to=NameAddress(target), call_id=f"tls-call-{scheme}", cseq=1, contact=me,
                             body=offer.to_bytes())
        caller.send(invite)
        ok = await caller.final()
        assert ok.status == 200, ok
        [contact] = ok.contacts
        assert isinstance(contact.uri, SipUri) and contact.uri.scheme == scheme
        assert contact.uri.port == phone.tls_port and contact.uri.param("transport") == ("tls" if tls else None)
        dialog = Dialog.for_uac(invite, ok, contact=me, via=via)
        caller.send(dialog.ack(invite))
        await eventually(lambda: sink.packets >= 10, 10, "RTP from the gateway")
        session = next(s for s in list(live.gateway.sessions.values())
                       if s.caller.transport == "sip" and s.caller.dialog.call_id == invite.call_id)
        hanging_up = asyncio.create_task(asyncio.to_thread(live.embedded.run, session.caller.hang_up("test done")))
        bye = await caller.receive()
        assert isinstance(bye, Request) and bye.method == "BYE", bye
        assert (bye.via[0].transport, bye.via[0].port) == ("TLS", phone.tls_port)
        caller.send(make_response(bye, 200))
        await hanging_up
        record = await finished_call(live, session.id)
        assert record["transport"] == "sip" and record["end_reason"] == "agent_hung_up", record
    finally:
        writer.close()
        media.close()

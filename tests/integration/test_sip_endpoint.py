"""The SIP endpoint shell on loopback against real SIP peers: SIPp (Debian sip-tester) sends OPTIONS and
INVITE over UDP and TCP; malformed datagrams and streams are answered or dropped while service goes on;
our digest client REGISTERs with SIPp acting as a challenging registrar.

SIPp exits 0 only when its scenario ran as written (the right responses, in order, within -timeout).
Absence of an answer is shown by ordering, never by waiting: a valid request sent after the malformed one
must be the first thing answered.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import ErrorRecords
from tests.sipp_caller import free_port
from voxgate.sip.digest import DigestClient, pick_challenge
from voxgate.sip.endpoint import SipEndpoint
from voxgate.sip.headers import NameAddress, Via, new_branch
from voxgate.sip.message import Request, Response, new_request, parse_message
from voxgate.sip.transaction import ResponseReceived, State, TransactionLayer, Transmit
from voxgate.sip.uri import parse_uri

SIPP = "/usr/bin/sipp"  # Debian sip-tester
SCENARIOS = Path(__file__).parent.parent / "data" / "sip" / "sipp"
TORTURE = Path(__file__).parent.parent / "data" / "sip" / "rfc4475"


async def sipp(*args: str) -> tuple[int, str]:
    """Run one SIPp call; its own -timeout (30 s) fails a hung scenario, the outer one a hung process."""
    process = await asyncio.create_subprocess_exec(
        SIPP, *args, "-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(40):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


@pytest.fixture
async def endpoint(error_logs: ErrorRecords) -> AsyncIterator[SipEndpoint]:
    sip = SipEndpoint(host="127.0.0.1", udp_port=0, tcp_port=0)
    await sip.start()
    yield sip
    await sip.stop()
    assert not error_logs.records, [r.getMessage() for r in error_logs.records]  # nothing blew up inside


def target(address: tuple[str, int] | None) -> str:
    assert address is not None
    return f"{address[0]}:{address[1]}"


class UdpPeer(asyncio.DatagramProtocol):
    """A SIP peer made of our own cores: a client transaction layer on the loop's clock, over UDP."""

    def __init__(self) -> None:
        self.layer = TransactionLayer()
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.raw: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # the selector's class is not a subclass

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.raw.put_nowait(data)
        message = parse_message(data)
        if isinstance(message, Response):
            self._run(self.layer.receive_response(message, asyncio.get_running_loop().time()))

    def error_received(self, exc: Exception) -> None:
        pass  # the far end is not listening yet: Timer E retransmits

    def send(self, request: Request, to: tuple[str, int]) -> None:
        _, events = self.layer.send_request(request, to, asyncio.get_running_loop().time())
        self._run(events)

    def _run(self, events: list) -> None:
        loop = asyncio.get_running_loop()
        for event in events:
            if isinstance(event, Transmit):
                assert self.transport is not None
                self.transport.sendto(event.data, event.peer)
            elif isinstance(event, ResponseReceived):
                self.responses.put_nowait(event.response)
        deadline = self.layer.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
        if deadline is not None:
            self._timer = loop.call_at(deadline, lambda: self._run(self.layer.handle_timer(loop.time())))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def peer() -> AsyncIterator[UdpPeer]:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.1", 0))
    yield protocol
    protocol.close()


def options(peer: UdpPeer, to: tuple[str, int], cseq: int = 1, call_id: str = "opt-1") -> Request:
    host, port = peer.address
    return new_request("OPTIONS", parse_uri(f"sip:bot@{to[0]}:{to[1]}"),
                       via=Via("UDP", host, port, (("branch", new_branch()),)),
                       from_=NameAddress(parse_uri(f"sip:probe@{host}:{port}"), params=(("tag", "p1"),)),
                       to=NameAddress(parse_uri(f"sip:bot@{to[0]}")), call_id=call_id, cseq=cseq)


async def next_response(peer: UdpPeer) -> Response:
    return await asyncio.wait_for(peer.responses.get(), 10)


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_options_probe(endpoint: SipEndpoint, transport: str) -> None:
    address = endpoint.udp_address if transport == "u1" else endpoint.tcp_address
    kind = socket.SOCK_DGRAM if transport == "u1" else socket.SOCK_STREAM
    code, output = await sipp(target(address), "-sf", str(SCENARIOS / "options.xml"), "-t", transport,
                              "-p", str(free_port(kind)))
    assert code == 0, output
    assert endpoint.counters["request_options"] == 1


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_invite_is_refused_503_and_the_ack_completes_it(endpoint: SipEndpoint, transport: str) -> None:
    address = endpoint.udp_address if transport == "u1" else endpoint.tcp_address
    kind = socket.SOCK_DGRAM if transport == "u1" else socket.SOCK_STREAM
    acked = asyncio.Event()
    endpoint.observer = lambda message, _: acked.set() if isinstance(message, Request) and message.method == "ACK" \
        else None
    code, output = await sipp(target(address), "-sf", str(SCENARIOS / "invite_503.xml"), "-t", transport,
                              "-p", str(free_port(kind)), "-mp", str(free_port()))
    assert code == 0, output
    async with asyncio.timeout(10):
        await acked.wait()  # SIPp sent it before exiting; the endpoint may read it a moment later
    # the ACK ended the wait for it (Confirmed over UDP until Timer I, gone at once over TCP): no more 503s
    assert endpoint.layer.states()[("INVITE", State.COMPLETED)] == 0
    assert endpoint.counters["request_invite"] == 1
    assert endpoint.layer.states()[("INVITE", State.CONFIRMED)] == (1 if transport == "u1" else 0)


@pytest.mark.parametrize(("name", "status"), [("clerr", 400), ("ncl", 400), ("badvers", 505), ("unkscm", 416),
                                              ("bext01", 420), ("mismatch01", 400)])
async def test_torture_requests_are_answered(endpoint: SipEndpoint, peer: UdpPeer, name: str, status: int) -> None:
    assert peer.transport is not None and endpoint.udp_address is not None
    peer.transport.sendto((TORTURE / f"{name}.dat").read_bytes(), endpoint.udp_address)
    answer = parse_message(await asyncio.wait_for(peer.raw.get(), 10))
    assert isinstance(answer, Response) and answer.status == status


@pytest.mark.parametrize("name", ["badinv01", "bigcode", "scalarlg"])
async def test_unanswerable_messages_are_dropped_and_service_goes_on(endpoint: SipEndpoint, peer: UdpPeer,
                                                                     name: str) -> None:
    assert peer.transport is not None and endpoint.udp_address is not None
    peer.transport.sendto((TORTURE / f"{name}.dat").read_bytes(), endpoint.udp_address)
    peer.transport.sendto(b"\x00\xff garbage \r\n\r\n", endpoint.udp_address)
    peer.transport.sendto(b"\r\n\r\n", endpoint.udp_address)  # a keep-alive: never answered
    peer.send(options(peer, endpoint.udp_address), endpoint.udp_address)
    first = await next_response(peer)  # datagrams are handled in order: nothing came before this
    assert first.status == 200 and first.cseq.method == "OPTIONS"
    assert sum(count for key, count in endpoint.counters.items() if key.startswith("refused_")) == 2


async def test_tcp_stream_answers_pings_and_bad_messages_then_closes_on_lost_framing(endpoint: SipEndpoint) -> None:
    assert endpoint.tcp_address is not None
    reader, writer = await asyncio.open_connection(*endpoint.tcp_address)
    local = writer.get_extra_info("sockname")
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 10) == b"\r\n"  # RFC 5626 pong
    request = (TORTURE / "mismatch01.dat").read_bytes()
    good = new_request("OPTIONS", parse_uri("sip:bot@127.0.0.1"), via=Via("TCP", local[0], local[1],
                                                                          (("branch", new_branch()),)),
                       from_=NameAddress(parse_uri("sip:a@127.0.0.1"), params=(("tag", "t"),)),
                       to=NameAddress(parse_uri("sip:bot@127.0.0.1")), call_id="tcp-1", cseq=1)
    writer.write(request + good.to_bytes())
    statuses = []
    for _ in range(2):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        message = parse_message(head)
        statuses.append((message.cseq.method, message.status if isinstance(message, Response) else 0))
    assert statuses == [("INVITE", 400), ("OPTIONS", 200)]  # a bad message does not end the stream
    writer.write(b"OPTIONS sip:bot@127.0.0.1 SIP/2.0\r\nContent-Length: lots\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # framing lost: the endpoint closed
    assert endpoint.counters["tcp_framing_errors"] == 1
    writer.close()


async def test_cancel_for_nothing_is_481_and_unknown_dialogs_are_481(endpoint: SipEndpoint, peer: UdpPeer) -> None:
    assert endpoint.udp_address is not None
    host, port = peer.address
    for method, expected in (("CANCEL", 481), ("BYE", 481), ("REGISTER", 405)):
        request = new_request(method, parse_uri(f"sip:bot@{target(endpoint.udp_address)}"),
                              via=Via("UDP", host, port, (("branch", new_branch()),)),
                              from_=NameAddress(parse_uri("sip:a@127.0.0.1"), params=(("tag", "x"),)),
                              to=NameAddress(parse_uri("sip:bot@127.0.0.1")), call_id=f"c-{method}", cseq=1)
        peer.send(request, endpoint.udp_address)
        response = await next_response(peer)
        assert (response.cseq.method, response.status) == (method, expected)


@pytest.mark.parametrize(("password", "expected"), [("s3cret", 200), ("wrong", 403)])
async def test_digest_register_with_a_sipp_registrar(peer: UdpPeer, password: str, expected: int) -> None:
    """SIPp challenges with 401 (MD5, qop=auth) and checks our answer with its own digest code."""
    port = free_port()
    registrar = asyncio.create_task(sipp("-sf", str(SCENARIOS / "uas_register_auth.xml"), "-p", str(port)))
    host, local_port = peer.address
    client = DigestClient("alice", password)
    trunk = ("127.0.0.1", port)

    def register(cseq: int, authorization: str | None = None) -> Request:
        headers = [("Expires", "300")] + ([("Authorization", authorization)] if authorization else [])
        return new_request("REGISTER", parse_uri("sip:trunk.test"),
                           via=Via("UDP", host, local_port, (("branch", new_branch()), ("rport", None))),
                           from_=NameAddress(parse_uri("sip:alice@trunk.test"), params=(("tag", "r1"),)),
                           to=NameAddress(parse_uri("sip:alice@trunk.test")), call_id="reg-1", cseq=cseq,
                           contact=NameAddress(parse_uri(f"sip:alice@{host}:{local_port}")), headers=headers)

    peer.send(register(1), trunk)  # SIPp may not listen yet: Timer E retransmits until it does
    challenge = await next_response(peer)
    assert challenge.status == 401
    header, offered = pick_challenge(challenge)
    assert header == "Authorization"
    client.challenged(offered)
    peer.send(register(2, client.authorization("REGISTER", "sip:trunk.test")), trunk)
    final = await next_response(peer)
    assert final.status == expected
    code, output = await registrar
    assert code == 0, output

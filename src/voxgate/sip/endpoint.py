"""The SIP endpoint's thin asyncio shell: UDP, TCP and TLS sockets around the sans-IO cores.

    endpoint = SipEndpoint(host="127.0.0.1", udp_port=5060, tcp_port=5060)
    await endpoint.start()          # endpoint.udp_address, endpoint.tcp_address
    SipEndpoint(..., tls_port=5061, tls=ssl_context)     # also TLS: endpoint.tls_address, .secure(peer)
    ...
    await endpoint.stop()

Calls belong to its `user` (a `TransactionUser`: the gateway's `transports/sip_phone.py`), which sees
every request first. What the user leaves, the endpoint answers itself: OPTIONS 200 (trunks probe with
it), INVITE 503 Service Unavailable with Retry-After when there is no user, CANCEL per RFC 3261 §9.2 (the
user is told), requests for dialogs it does not have 481, other methods 405; a Require it does not
support 420, a Request-URI scheme it does not speak 416. Malformed requests get the parser's answer (400,
505) or are dropped and counted; a TCP stream that loses its framing is closed; nothing one peer sends
reaches another peer's state. TLS is framed as TCP is (`MessageStream`); what a peer sent over TLS is
answered over its TLS connection.

`answer_out_of_dialog` is the decision as a pure function, so it is tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from voxgate.sip.headers import new_tag
from voxgate.sip.message import (
    BadRequest,
    FramingError,
    KeepAlive,
    MalformedMessage,
    MessageError,
    MessageLimits,
    MessageStream,
    Request,
    Response,
    is_keepalive,
    make_response,
    parse_message,
)
from voxgate.sip.transaction import (
    Address,
    ClientInviteTransaction,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerInviteTransaction,
    ServerTransaction,
    TransactionEvent,
    TransactionLayer,
    TransactionTimedOut,
    Transmit,
)
from voxgate.sip.uri import OtherUri

__all__ = ["ALLOW", "SUPPORTED", "SipEndpoint", "TransactionUser", "answer_out_of_dialog"]

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO, UPDATE"
SUPPORTED = frozenset({"replaces", "timer"})
SERVER = "voxgate"
DIALOG_METHODS = frozenset({"BYE", "INFO", "UPDATE", "REFER", "NOTIFY", "PRACK"})


def answer_out_of_dialog(request: Request, *, accepting_calls: bool = False) -> Response | None:
    """The response to a request outside any dialog, or None (ACK, and CANCEL, which the shell matches
    to its INVITE). `accepting_calls` False: INVITE gets 503 until calls are wired to sessions."""
    method = request.method
    if method in ("ACK", "CANCEL"):
        return None
    tag = new_tag()
    common = [("Server", SERVER)]
    if isinstance(request.uri, OtherUri):
        return make_response(request, 416, to_tag=tag, headers=common)
    required = [item for item in request.headers.values("Require") if item.lower() not in SUPPORTED]
    if required:
        return make_response(request, 420, to_tag=tag, headers=[*common, ("Unsupported", ", ".join(required))])
    if method == "OPTIONS":
        return make_response(request, 200, to_tag=tag, headers=[
            *common, ("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", ", ".join(sorted(SUPPORTED)))])
    if method == "INVITE":
        if request.to.tag is not None:
            return make_response(request, 481, headers=common)  # a re-INVITE for a dialog we do not have
        if not accepting_calls:
            return make_response(request, 503, to_tag=tag, headers=[*common, ("Retry-After", "60")])
        return None
    if method in DIALOG_METHODS:
        return make_response(request, 481, to_tag=tag, headers=common)
    return make_response(request, 405, to_tag=tag, headers=[*common, ("Allow", ALLOW)])


class TransactionUser(Protocol):
    """The UA core above the endpoint (calls): it sees requests before the endpoint's default answers."""

    def request(self, request: Request, peer: Address, transaction: ServerTransaction | None, *,
                reliable: bool) -> bool:
        """Handle a new request (`transaction` None: an ACK to a 2xx); False leaves it to the endpoint."""
        ...

    def response(self, response: Response, transaction: ClientTransaction | None) -> None: ...

    def timed_out(self, transaction: ClientTransaction | ServerTransaction) -> None: ...

    def cancelled(self, invite: Request) -> None:
        """A CANCEL ended this INVITE before it was answered (the endpoint has sent 200 and 487)."""
        ...


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.endpoint._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.endpoint.counters["udp_errors"] += 1  # an ICMP error for a past send: nothing to do


class _Connection(asyncio.Protocol):
    """One TCP or TLS peer: a MessageStream frames its bytes; a framing error closes it."""

    def __init__(self, endpoint: SipEndpoint, *, secure: bool = False) -> None:
        self.endpoint = endpoint
        self.secure = secure
        self.stream = MessageStream(endpoint.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's class is not asyncio's subclass
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (host, port)
        if len(self.endpoint._connections) >= self.endpoint.max_connections:
            self.endpoint.counters["tcp_refused"] += 1
            transport.close()
            return
        self.endpoint._connections[self.peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.endpoint._connections.get(self.peer) is self:
            del self.endpoint._connections[self.peer]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.stream.receive_data(data)
            while True:
                try:
                    item = self.stream.next_message()
                except FramingError:
                    raise
                except MessageError as error:
                    self.endpoint._refused(error, self.peer)
                    continue
                if item is None:
                    return
                if isinstance(item, KeepAlive):
                    if item.ping:
                        self.transport.write(b"\r\n")  # RFC 5626 pong
                    continue
                self.endpoint._message(item, self.peer, reliable=True)
        except FramingError:
            self.endpoint.counters["tcp_framing_errors"] += 1
            self.transport.close()


@dataclass
class SipEndpoint:
    host: str = "127.0.0.1"
    udp_port: int = 5060
    tcp_port: int | None = 5060  # None: UDP only
    limits: MessageLimits = field(default_factory=MessageLimits)
    max_connections: int = 1024
    layer: TransactionLayer = field(default_factory=TransactionLayer)
    counters: Counter[str] = field(default_factory=Counter)
    # called with every message after the transaction layer handled it (for logs, metrics and tests)
    observer: Callable[[Request | Response, Address], None] | None = None
    user: TransactionUser | None = None  # the calls; None: INVITE is answered 503
    tls_port: int | None = None  # with `tls`: SIP over TLS on this port too (0: any free port)
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[Address, _Connection] = {}
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.udp_address: Address | None = None
        self.tcp_address: Address | None = None
        self.tls_address: Address | None = None
        self._tls: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), local_addr=(self.host,
                                                                                                 self.udp_port))
        self._udp = transport
        self.udp_address = transport.get_extra_info("sockname")[:2]
        if self.tcp_port is not None:
            self._tcp = await loop.create_server(lambda: _Connection(self), self.host, self.tcp_port)
            self.tcp_address = self._tcp.sockets[0].getsockname()[:2]
        if self.tls is not None and self.tls_port is not None:
            self._tls = await loop.create_server(lambda: _Connection(self, secure=True), self.host, self.tls_port,
                                                 ssl=self.tls)
            self.tls_address = self._tls.sockets[0].getsockname()[:2]
        self._timer = asyncio.create_task(self._run_timers(), name="sip-timers")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for server in (self._tcp, self._tls):
            if server is not None:
                server.close()
                await server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    # -- input

    def _datagram(self, data: bytes, peer: Address) -> None:
        if is_keepalive(data):
            return
        try:
            message = parse_message(data, self.limits)
        except MessageError as error:
            self._refused(error, peer)
            return
        self._message(message, peer, reliable=False)

    def _refused(self, error: MessageError, peer: Address) -> None:
        self.counters[f"refused_{error.code}"] += 1
        if isinstance(error, BadRequest):
            response = error.response(new_tag())  # stateless: a request this broken gets no transaction
            self._send(Transmit(response, peer, response.to_bytes()))
        elif not isinstance(error, MalformedMessage | FramingError):  # pragma: no cover - every error is one
            log.warning("unexpected SIP message error %r", error)

    def _message(self, message: Request | Response, peer: Address, *, reliable: bool) -> None:
        now = asyncio.get_running_loop().time()
        if isinstance(message, Response):
            self._handle(self.layer.receive_response(message, now))
        else:
            self._handle(self.layer.receive_request(message, peer, now, reliable=reliable), reliable)
        if self.observer is not None:
            self.observer(message, peer)

    def _handle(self, events: list[TransactionEvent], reliable: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        user = self.user
        for event in events:
            if isinstance(event, Transmit):
                self._send(event)
            elif isinstance(event, RequestReceived):
                request = event.request
                if event.transaction is None:  # an ACK to a 2xx
                    if user is not None:
                        user.request(request, event.peer, None, reliable=reliable)
                    continue
                self.counters[f"request_{request.method.lower()}" if request.method in ALLOW else
                              "request_other"] += 1
                if request.method == "CANCEL":
                    self._handle(self._cancel(request, now))
                    continue
                if user is not None and user.request(request, event.peer, event.transaction, reliable=reliable):
                    continue
                response = answer_out_of_dialog(request, accepting_calls=user is not None)
                if response is not None:
                    self._handle(self.layer.send_response(response, now))
            elif user is not None and isinstance(event, ResponseReceived):
                user.response(event.response, event.transaction)
            elif user is not None and isinstance(event, TransactionTimedOut):
                user.timed_out(event.transaction)
        self._wake.set()

    def _cancel(self, cancel: Request, now: float) -> list[TransactionEvent]:
        invite = self.layer.invite_for_cancel(cancel)
        events = self.layer.send_response(make_response(cancel, 200 if invite else 481, to_tag=new_tag()), now)
        if invite is not None and invite.final is None:
            events += self.layer.send_response(make_response(invite.request, 487, to_tag=_to_tag(invite)), now)
            if self.user is not None:
                self.user.cancelled(invite.request)
        return events

    # -- for the transaction user

    def respond(self, response: Response) -> None:
        """Send a response through the server transaction of the request it answers."""
        self._handle(self.layer.send_response(response, asyncio.get_running_loop().time()))

    def send_request(self, request: Request, peer: Address, *, reliable: bool = False) -> ClientTransaction | None:
        """Start a client transaction (an ACK has none: it is just sent); its responses reach the user."""
        transaction, events = self.layer.send_request(request, peer, asyncio.get_running_loop().time(),
                                                      reliable=reliable)
        self._handle(events)
        return transaction

    def cancel(self, transaction: ClientInviteTransaction) -> None:
        """CANCEL our pending INVITE (at once, or after its first provisional response: RFC 3261 §9.1)."""
        self._handle(self.layer.cancel(transaction, asyncio.get_running_loop().time()))

    def transmit(self, transmit: Transmit) -> None:
        """Send bytes the transaction layer does not own (a 2xx retransmitted until its ACK)."""
        self._send(transmit)

    def secure(self, peer: Address) -> bool:
        """Whether `peer` reaches us over TLS (its connection is open now)."""
        connection = self._connections.get(peer)
        return connection is not None and connection.secure

    # -- output and time

    def _send(self, transmit: Transmit) -> None:
        connection = self._connections.get(transmit.peer)
        if connection is not None and connection.transport is not None:
            connection.transport.write(transmit.data)
        elif self._udp is not None:
            self._udp.sendto(transmit.data, transmit.peer)

    async def _run_timers(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.layer.next_deadline()
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as `_wake` is set
            # (a request sent just before stop()), and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
            self._handle(self.layer.handle_timer(loop.time()))


def _to_tag(invite: ServerInviteTransaction) -> str:
    """The To tag of the INVITE's last response (a 1xx we sent with one), so the 487 stays in that dialog."""
    last = invite.last_response
    tag = last.message.to.tag if last is not None else None
    return tag or new_tag()

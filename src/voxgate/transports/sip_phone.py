"""voxgate's SIP door: the endpoint on `sip_port`, who may call, which agent answers, and the live calls.

    INVITE -> allowed source or digest auth (else 403 / 401) -> session timer (else 422 Min-SE)
           -> admission (else 503 Retry-After)
           -> agent routing (header, request-URI user, called number; no match: the default agent)
           -> SipCall: RTP socket, SDP answer (or our offer, when the INVITE has none), 180, session,
              200 OK (the answer in the ACK, for a delayed offer) ... BYE

UDP and TCP on `sip_port`, TLS on `sip_tls_port` when a certificate is set (`certificates.sip_tls_files`);
a call that came over TLS gets a `sips:` (or `;transport=tls`) Contact and a TLS Via.

Secure by default: with no `sip_allowed_sources` only loopback may place calls, and with
`sip_digest_password` set everyone else must pass digest authentication (RFC 8760: SHA-256 offered
first, MD5 beside it for the PBXs that know no better; `sip_digest_algorithms`). Everything a peer
sends that the cores refuse is answered (400, 488, 481, ...) or dropped and counted; no call's fault
reaches another call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from voxgate.admission import Refusal, Ticket
from voxgate.certificates import server_context, sip_tls_files
from voxgate.control.call_control import Accepted, Decision, FellBack, Rejected
from voxgate.observability import metrics
from voxgate.sip.dialog import Dialog, DialogError
from voxgate.sip.digest import DigestError, DigestVerifier, parse_credentials
from voxgate.sip.endpoint import SipEndpoint, answer_out_of_dialog
from voxgate.sip.errors import SipError
from voxgate.sip.headers import HeaderError, NameAddress, Via, new_tag
from voxgate.sip.message import Request, Response, make_response
from voxgate.sip.session_timer import IntervalTooSmall, SessionTimerPolicy, answer_session_timer
from voxgate.sip.transaction import (
    Address,
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    Transmit,
)
from voxgate.sip.uri import SipUri, TelUri
from voxgate.transports.controlled_sip_calls import ControlledSipCall, ControlledSipCalls, call_control_route
from voxgate.transports.rtp_ports import PortsExhausted, RtpPorts
from voxgate.transports.sip_call import SipCall, offer_status
from voxgate.transports.sip_dialer import Dialer, OutboundCall
from voxgate.transports.sip_trunk import Trunk

if TYPE_CHECKING:
    import httpx

    from voxgate.admission import Admission
    from voxgate.agents import AgentConfig
    from voxgate.clock import Clock
    from voxgate.cluster.node import ClusterNode
    from voxgate.config import Settings
    from voxgate.protocol.items import Dialect
    from voxgate.session.session import Session
    from voxgate.store.calls import CallStore

__all__ = ["SipPhone", "allowed_networks", "route_agent", "source_allowed"]

log = logging.getLogger("voxgate.sip")

LOOPBACK = ("127.0.0.0/8", "::1/128")
RETRANSMISSIONS_S = 32.0  # 64*T1: how long a 2xx to our INVITE may be retransmitted
# ends recorded as dropped, not completed: the line or the far end failed
DROPPED = frozenset({"media_timeout", "no_ack", "internal_error", "bad_answer", "session_timer_expired",
                     "session_refresh_failed"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PhoneGateway(Protocol):
    """What the SIP door needs from the process-wide Gateway (gateway.py)."""

    settings: Settings
    ready: bool
    admission: Admission
    agents: dict[str, AgentConfig]
    calls: CallStore
    node: str
    http: httpx.AsyncClient
    real_clock: Clock
    cluster: ClusterNode | None  # several nodes (redis_url): where an app-controlled call is registered

    def agent(self, name: str | None) -> AgentConfig: ...

    async def open_session(self, *, agent: AgentConfig, caller: Any, dialect: Dialect, model: str | None,
                           initial_config: dict[str, Any] | None = None, owner: str | None = None,
                           session_id: str | None = None,
                           record_metadata: dict[str, Any] | None = None) -> Session: ...

    def session_closed(self, session: Session) -> None: ...


def allowed_networks(sources: list[str]) -> list[Network]:
    """The networks that may call without authenticating (loopback when none are configured)."""
    return [ipaddress.ip_network(source, strict=False) for source in (sources or LOOPBACK)]


def source_allowed(host: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def route_agent(request: Request, routes: dict[str, str], agents: dict[str, Any], header: str = "") -> str | None:
    """The agent a call asks for: `header`'s value when it names an agent, else the route (or the agent)
    that the request-URI user or the called number (To) names; None: the default agent."""
    if header:
        named = (request.headers.get(header) or "").strip()
        if named in agents:
            return named
    for uri in (request.uri, request.to.uri):
        key = uri.user if isinstance(uri, SipUri) else uri.digits if isinstance(uri, TelUri) else None
        if not key:
            continue
        if key in routes:
            return routes[key]
        if key in agents:
            return key
    return None


def _user_of(address: NameAddress) -> str | None:
    uri = address.uri
    if isinstance(uri, SipUri):
        return uri.user
    if isinstance(uri, TelUri):
        return uri.digits
    return None


class SipPhone:
    """The SIP user agent that answers calls for the gateway (the endpoint's transaction user)."""

    def __init__(self, gateway: PhoneGateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.settings = settings
        self.host = settings.sip_host or settings.host
        tls = server_context(sip_tls_files(settings))  # raises TlsSettingsError on a pair it cannot serve
        self.endpoint = SipEndpoint(host=self.host, udp_port=settings.sip_port, tcp_port=settings.sip_port, user=self,
                                    tls_port=settings.sip_tls_port if tls else None, tls=tls)
        self.timer_policy = SessionTimerPolicy(settings.sip_session_expires_s, settings.sip_min_se_s)
        self.public_address = settings.sip_public_address or self.host
        self.networks = allowed_networks(settings.sip_allowed_sources)
        password = settings.sip_digest_password.get_secret_value()
        self.verifier = DigestVerifier(settings.sip_digest_realm, secrets.token_bytes(32)) if password else None
        self.calls: dict[str, SipCall] = {}
        self.rtp_ports = RtpPorts(settings.sip_rtp_port_min, settings.sip_rtp_port_max)
        self._tasks: set[asyncio.Task[None]] = set()
        # Who awaits the responses to each request we sent (every response, then None if it timed out).
        self._handlers: dict[ClientTransaction, Callable[[Response | None], None]] = {}
        self.dialer = Dialer(self)
        self.trunk: Trunk | None = None  # the registration with the upstream trunk, when one is set
        # calls an app answers through OpenAI's SIP call control (sip_call_control), by call id
        self.controlled = ControlledSipCalls(settings, gateway.http, gateway.real_clock)

    @property
    def port(self) -> int:
        address = self.endpoint.udp_address
        return address[1] if address else self.settings.sip_port

    @property
    def tls_port(self) -> int | None:
        address = self.endpoint.tls_address
        return address[1] if address else None

    def trusts(self, host: str) -> bool:
        """Whether `host` is in `sip_allowed_sources` (loopback by default): it may call without digest
        auth, and with no trunk set it is where outbound calls may go."""
        return source_allowed(host, self.networks)

    def contact(self, *, reliable: bool = False) -> NameAddress:
        """Our Contact (where the far end sends requests in our dialogs and registrations)."""
        params: tuple[tuple[str, str | None], ...] = (("transport", "tcp"),) if reliable else ()
        user = self.settings.sip_trunk_user or "voxgate"
        return NameAddress(SipUri("sip", self.public_address, user, port=self.port, params=params))

    def via(self, *, reliable: bool = False) -> Via:
        return Via("TCP" if reliable else "UDP", self.public_address, self.port, (("rport", None),))

    async def start(self) -> None:
        await self.endpoint.start()
        log.info("SIP on %s:%d (UDP and TCP)%s; calls from %s%s", self.host, self.port,
                 f", TLS on {self.tls_port}" if self.tls_port else "",
                 ", ".join(str(n) for n in self.networks), " or with digest auth" if self.verifier else " only")
        if self.settings.sip_trunk_registrar:
            self.trunk = Trunk(self, self.settings, contact=self.contact(), via=self.via())
            await self.trunk.start()

    async def stop(self) -> None:
        self.dialer.hang_up_ringing()
        for call in list(self.calls.values()):
            call.end("server_shutdown")
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        self.controlled.close()
        if self.trunk is not None:
            await self.trunk.stop()
        await self.endpoint.stop()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run a call's task; stop() waits for it (then cancels it)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the endpoint's transaction user -------------------------------------------------------------

    def request(self, request: Request, peer: Address, transaction: ServerTransaction | None, *,
                reliable: bool) -> bool:
        if transaction is None:  # an ACK to a 2xx
            call = self.calls.get(request.call_id)
            if call is not None:
                call.acknowledged(request)
            return True
        if isinstance(transaction, ServerInviteTransaction) and request.to.tag is None:
            self._invite(request, peer, transaction, reliable)
            return True
        call = self.calls.get(request.call_id)
        if call is not None and request.to.tag is not None and call.dialog.matches(request):
            call.in_dialog(request)
            return True
        if request.method == "OPTIONS" and self.gateway.admission.draining:
            # A dispatcher's health probe (Kamailio's): 503 marks this node down while its calls finish.
            self.respond(make_response(request, 503, to_tag=new_tag(), headers=[
                ("Retry-After", str(self.gateway.admission.drain_retry_after_s))]))
            return True
        return False  # the endpoint answers (OPTIONS 200, 481 for a dialog we do not have, 405, ...)

    def response(self, response: Response, transaction: ClientTransaction | None) -> None:
        if transaction is None:  # a 2xx retransmitted after our INVITE's transaction ended
            self.dialer.stray(response)
            return
        handler = self._handlers.get(transaction)
        if handler is None:
            return
        if response.status >= 200 and not (transaction.invite and response.status < 300):
            del self._handlers[transaction]  # final; an INVITE's 2xx may come again (the dialer forgets it)
        handler(response)

    def timed_out(self, transaction: ClientTransaction | ServerTransaction) -> None:
        handler = self._handlers.pop(transaction, None)  # type: ignore[arg-type]
        if handler is not None:
            handler(None)

    def cancelled(self, invite: Request) -> None:
        call = self.calls.get(invite.call_id)
        if call is not None and not call.answered:
            metrics.SIP_INVITES.labels("cancelled").inc()
            call.end("cancelled")

    # -- what calls need (CallSignalling) --------------------------------------------------------------

    def respond(self, response: Response) -> None:
        try:
            self.endpoint.respond(response)
        except LookupError:  # its transaction ended (the peer gave up): nothing to answer any more
            log.debug("no transaction left for %r", response)

    def transmit(self, transmit: Transmit) -> None:
        self.endpoint.transmit(transmit)

    def send(self, call: SipCall, request: Request) -> asyncio.Future[Response | None]:
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()

        sent: list[ClientTransaction] = []

        def settle(response: Response | None) -> None:
            if response is not None and response.status < 200:
                return
            if future.done():
                if response is not None and request.method == "INVITE" and response.status < 300:
                    call.acknowledge_again(response)  # our re-INVITE's 2xx, again: it wants the ACK again
                return
            if response is not None:
                call.dialog.receive_response(request, response)
                if request.method == "INVITE" and response.status < 300 and sent:
                    # 2xx retransmissions stop within 64*T1; the handler is kept that long for them
                    asyncio.get_running_loop().call_later(RETRANSMISSIONS_S, self.forget, sent[0])
            future.set_result(response)

        transaction = self.exchange(request, call.peer, settle, reliable=call.reliable)
        if transaction is None:
            future.set_result(None)
        else:
            sent.append(transaction)
        return future

    def exchange(self, request: Request, peer: Address, handler: Callable[[Response | None], None], *,
                 reliable: bool = False) -> ClientTransaction | None:
        """Send a request; `handler` gets each response, then None if the transaction timed out. An ACK has
        no transaction (None) and no answer."""
        transaction = self.endpoint.send_request(request, peer, reliable=reliable)
        if transaction is not None:
            self._handlers[transaction] = handler
        return transaction

    def forget(self, transaction: ClientTransaction) -> None:
        """No more interest in a transaction's answers (an INVITE whose call is over)."""
        self._handlers.pop(transaction, None)

    async def dial_leg(self, to: str, codec: str) -> SipCall | None:
        return await self.dialer.dial_leg(to, codec)

    def call_ended(self, call: SipCall) -> None:
        if self.calls.get(call.dialog.call_id) is call:
            del self.calls[call.dialog.call_id]

    # -- a new call --------------------------------------------------------------------------------

    def _invite(self, request: Request, peer: Address, transaction: ServerInviteTransaction, reliable: bool) -> None:
        refusal = answer_out_of_dialog(request, accepting_calls=True)  # 416, 420: what no call can take
        if refusal is not None:
            metrics.SIP_INVITES.labels("unsupported").inc()
            self.respond(refusal)
            return
        if not self.gateway.ready:
            self._refuse(request, "starting", 503, [("Retry-After", "5")])
            return
        if not self._authorised(request, peer):
            return
        if request.call_id in self.calls:
            self._refuse(request, "duplicate", 482)  # a second INVITE for a live call: a loop or a fork
            return
        try:
            timer = answer_session_timer(request, self.timer_policy)
        except HeaderError:
            self._refuse(request, "bad_session_timer", 400)
            return
        if isinstance(timer, IntervalTooSmall):
            self._refuse(request, "interval_too_small", 422, timer.headers())
            return
        ticket = self.gateway.admission.try_admit(None, "sip")
        if isinstance(ticket, Refusal):
            self._refuse(request, ticket.reason, 503, [("Retry-After", str(ticket.retry_after_s))])
            return
        contact, via = self._contact_and_via(request, peer, reliable)
        try:
            dialog = Dialog.for_uas(request, local_tag=new_tag(), contact=contact, via=via)
        except (DialogError, SipError):
            ticket.release()
            self._refuse(request, "bad_request", 400)
            return
        call = SipCall(signalling=self, invite=request, transaction=transaction, peer=peer, reliable=reliable,
                       dialog=dialog, settings=self.settings, media_host=self.host,
                       public_address=self.public_address, ports=self.rtp_ports, timer_policy=self.timer_policy,
                       session_timer=timer)
        self.calls[request.call_id] = call
        agent = route_agent(request, self.settings.sip_routes, self.gateway.agents, self.settings.sip_agent_header)
        self.spawn(self._run(call, ticket, agent), name="sip-call")

    def _contact_and_via(self, request: Request, peer: Address, reliable: bool) -> tuple[NameAddress, Via]:
        """Ours for this call, on the transport it came over: a call over TLS gets a TLS Via, and a `sips:`
        Contact when its Request-URI, top Record-Route or (without one) Contact is sips: (RFC 3261 §12.1.1),
        else `;transport=tls` (RFC 5630)."""
        params: tuple[tuple[str, str | None], ...] = ()
        scheme, transport, port = "sip", "UDP", self.port
        if reliable and self.endpoint.secure(peer) and self.tls_port:
            transport, port = "TLS", self.tls_port
            hop = request.record_route[:1] or request.contacts[:1]
            if any(isinstance(uri, SipUri) and uri.secure for uri in (request.uri, *(h.uri for h in hop))):
                scheme = "sips"
            else:
                params = (("transport", "tls"),)
        elif reliable:
            transport, params = "TCP", (("transport", "tcp"),)
        contact = NameAddress(SipUri(scheme, self.public_address, "voxgate", port=port, params=params))
        return contact, Via(transport, self.public_address, port, (("rport", None),))

    def _refuse(self, request: Request, outcome: str, status: int,
                headers: list[tuple[str, str]] | None = None) -> None:
        metrics.SIP_INVITES.labels(outcome).inc()
        self.respond(make_response(request, status, to_tag=new_tag(), headers=headers or []))

    def _authorised(self, request: Request, peer: Address) -> bool:
        """An allowed source, or valid digest credentials; otherwise answered 403 or 401 here."""
        if self.trusts(peer[0]):
            return True
        verifier = self.verifier
        if verifier is None:
            log.warning("SIP INVITE from %s refused: not in sip_allowed_sources", peer[0])
            self._refuse(request, "forbidden", 403)
            return False
        now = asyncio.get_running_loop().time()
        stale = False
        presented = request.headers.get("Authorization")
        if presented is not None:
            try:
                credentials = parse_credentials(presented)
            except DigestError:
                self._refuse(request, "bad_credentials", 400)
                return False
            user = self.settings.sip_digest_user
            password = (self.settings.sip_digest_password.get_secret_value()
                        if not user or credentials.username == user else None)
            verdict = verifier.verify(credentials, method=request.method, password=password, now=now,
                                      body=request.body)
            if verdict.ok:
                return True
            if not verdict.stale:
                log.warning("SIP INVITE from %s refused: %s", peer[0], verdict.reason)
                self._refuse(request, "forbidden", 403)
                return False
            stale = True
        challenge = verifier.challenge(now, stale=stale)  # one nonce, offered with each algorithm
        self._refuse(request, "challenged", 401, [
            ("WWW-Authenticate", str(dataclasses.replace(challenge, algorithm=algorithm)))
            for algorithm in self.settings.sip_digest_algorithms])
        return False

    async def _run(self, call: SipCall, ticket: Ticket, agent_name: str | None) -> None:
        """Ring, answer with a session, and serve the call to its end; the ticket is held throughout."""
        gateway = self.gateway
        session: Session | None = None
        controlled: ControlledSipCall | None = None
        decision: Decision | None = None
        try:
            try:
                sdp = await call.open_media()
            except PortsExhausted as error:
                log.warning("%s: refused: %s", call.name, error)
                metrics.SIP_INVITES.labels("no_rtp_port").inc()
                call.refuse(offer_status(error), [("Retry-After", "5")])
                return
            except SipError as error:
                metrics.SIP_INVITES.labels("bad_offer").inc()
                call.refuse(offer_status(error))
                return
            call.provisional(180)
            route = call_control_route(call.invite, self.settings.sip_call_control)
            if route is not None:  # an app answers it (OpenAI's SIP call control)
                controlled = self.controlled.open(call, route, agent_name)
                if gateway.cluster is not None:  # the app's accept or reject may reach any node
                    await gateway.cluster.hold(controlled.id)
                decision = await controlled.decision()
                self.controlled.decided(controlled, decision)
                if not self._app_answers(call, decision):
                    return
            elif self.settings.sip_ring_ms:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.sip_ring_ms / 1000):
                        await call.wait_ended()
            if call.ended:  # cancelled while ringing: the endpoint has answered 487
                return
            agent = gateway.agent(agent_name)
            if controlled is not None and isinstance(decision, Accepted):
                # the app's session config is the call's, and the call's id its session's (and record's)
                session = await gateway.open_session(agent=agent, caller=call, dialect="ga",
                                                     model=decision.session.get("model"),
                                                     initial_config=decision.session, session_id=controlled.id)
            else:
                session = await gateway.open_session(agent=agent, caller=call, dialect="ga", model=None)
            if call.ended:
                return
            call.answer(sdp, session)
            if controlled is not None:
                controlled.answered()
            metrics.SIP_INVITES.labels("answered").inc()
            log.info("%s: answered for agent %s", call.name, agent.name)
            settled = await call.settled()  # a delayed offer's answer comes in the ACK
            session.configure(call.codec_audio().session_config())
            await session.start(greet=settled, caller_id=_user_of(call.invite.from_))  # the record starts
            if not settled:  # no ACK, or no acceptable answer in it: BYE, and the record says why
                await call.leave()
                return
            await call.serve()
        except Exception:
            log.exception("%s: failed", call.name)
            call.refuse(500)
        finally:
            if controlled is not None:
                self.controlled.finish(controlled)
                if gateway.cluster is not None:
                    gateway.cluster.release(controlled.id)
            await self._finish(call, session, ticket)

    @staticmethod
    def _app_answers(call: SipCall, decision: Decision | None) -> bool:
        """Carry out an app's refusal (or a fallback refusal); False when the call is not to be answered."""
        status = decision.status if isinstance(decision, Rejected | FellBack) else None
        if status is not None:
            metrics.SIP_INVITES.labels("rejected_by_app" if isinstance(decision, Rejected) else "app_silent").inc()
            call.refuse(status)
            call.end("rejected")
            return False
        return decision is not None

    async def serve_outbound(self, call: SipCall, outbound: OutboundCall) -> None:
        """An outbound call the far end answered (and we ACKed): its session, with the AI disclosure
        first, served to its end. The ticket is released here."""
        gateway = self.gateway
        session: Session | None = None
        self.calls[call.dialog.call_id] = call
        try:
            agent = gateway.agent(outbound.agent)
            session = await gateway.open_session(agent=agent, caller=call, dialect="ga", model=None,
                                                 owner=outbound.owner, session_id=outbound.id,
                                                 record_metadata=outbound.facts())
            # Started even if the far end hung up already: an answered call always gets its record.
            session.configure(call.codec_audio().session_config())
            call.connected(session)
            log.info("%s: answered; agent %s", call.name, agent.name)
            await session.start(greet=True, caller_id=str(outbound.destination.uri))
            await call.serve()
        except Exception:
            log.exception("%s: failed", call.name)
            if not call.answered:  # the far end is on the line and serve() never ran: say goodbye here
                with contextlib.suppress(SipError, TimeoutError):
                    async with asyncio.timeout(5):
                        await self.send(call, call.dialog.bye())
            call.end("internal_error")
        finally:
            await self._finish(call, session, outbound.ticket)

    async def _finish(self, call: SipCall, session: Session | None, ticket: Ticket | None) -> None:
        """A call is over: its media closed, its session closed and recorded, its ticket released."""
        gateway = self.gateway
        call.close_media()
        self.call_ended(call)
        if session is not None:
            if not session.closed:
                if call.rtp is not None:
                    session.record_metadata["media"] = call.rtp.quality()
                cut_off = call.end_reason == "server_shutdown" and not session.draining
                status = "dropped" if call.end_reason in DROPPED or cut_off else "completed"
                await session.close(call.end_reason or "caller_hung_up", status=status)
            gateway.session_closed(session)
        if ticket is not None:
            ticket.release()
        call.release()
        log.info("%s: ended (%s)", call.name, call.end_reason or "closed")

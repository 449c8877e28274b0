"""Outbound SIP calls: the gateway dials a number or SIP address and connects the answered call to an agent.

    POST /v1/calls {"to": "sip:alice@pbx.example" | "tel:+15551234567" | "+1 555 123 4567", "agent": "acme",
                    "from": "+15550001111", "metadata": {...}}  ->  202 {"id": "sess_...", "status": "dialing"}

    destination  a sip: URI goes through the trunk (`sip_trunk_proxy`, else the registrar's host); with no
                 trunk, only to a host in `sip_allowed_sources` (loopback by default). A number or tel: URI
                 needs the trunk: sip:<number>@<trunk host>;user=phone.
    dialing      RTP socket opened, INVITE with our SDP offer (`make_offer`), 401/407 answered with the
                 trunk's credentials, 180/183, the ring timeout (`sip_ring_timeout_s`) CANCELs
                 (sip/invitation.py decides all of it)
    answered     ACK, the answer's media settled, a SipCall (the same as an inbound call's) with a session
                 whose first words are the agent's AI disclosure and greeting
    not answered busy (486/600/603), no_answer (the ring timeout), failed (any other final, with its code)

Every call is recorded with `metadata.direction` "outbound" and `metadata.dial` (its outcome): an answered
call by its session, one never answered here, as `failed` with the outcome (`busy`, `no_answer`,
`failed: 503 Service Unavailable`). While it rings, `GET /v1/calls/{id}` shows it from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from voxgate.admission import Ticket
from voxgate.observability import metrics
from voxgate.protocol.ids import new_id
from voxgate.sip.digest import DigestClient
from voxgate.sip.errors import SipError
from voxgate.sip.headers import NameAddress
from voxgate.sip.invitation import (
    Answered,
    CancelRinging,
    DialOutcome,
    Invitation,
    InvitationEvent,
    Ringing,
    Send,
    Settled,
)
from voxgate.sip.message import Response as SipResponse
from voxgate.sip.registration import trunk_uri
from voxgate.sip.sdp import (
    Codec,
    CodecPreferences,
    MediaSession,
    SessionDescription,
    accept_answer,
    make_offer,
    parse_sdp,
)
from voxgate.sip.transaction import Address, ClientInviteTransaction
from voxgate.sip.uri import SipUri, TelUri, Uri, parse_uri
from voxgate.transports.rtp_line import RtpLine
from voxgate.transports.sip_call import SipCall, sdp_session_id
from voxgate.transports.sip_trunk import resolve

if TYPE_CHECKING:
    from voxgate.transports.sip_phone import SipPhone

__all__ = ["MAX_TO_CHARS", "Destination", "DialError", "Dialer", "OutboundCall"]

log = logging.getLogger("voxgate.sip")

MAX_TO_CHARS = 256
_STATIC_TYPES = {"PCMU": 0, "PCMA": 8}  # RTP/AVP payload types of the G.711 laws
_NUMBER = re.compile(r"\+?[0-9][0-9 ().\-]*")


class DialError(ValueError):
    """A destination the gateway will not dial; `code` for the HTTP problem."""

    def __init__(self, message: str, code: str = "invalid_destination") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Destination:
    uri: Uri  # the Request-URI and To
    peer: Address  # where the INVITE goes
    via_trunk: bool  # through the trunk: its challenges are answered with the trunk's credentials


@dataclass
class OutboundCall:
    """One call we place, from the API request to its end."""

    id: str
    destination: Destination
    agent: str
    caller_id: str  # our From user: `from`, else the trunk user
    owner: str | None
    ticket: Ticket | None  # None: a bridge's second leg, admitted with its first
    client_metadata: dict[str, Any] = field(default_factory=dict)
    preferences: CodecPreferences | None = None  # None: sip_codecs
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: str = "dialing"  # dialing, ringing, then the outcome: answered, busy, no_answer, failed
    sip_status: int | None = None
    invitation: Invitation | None = None
    transaction: ClientInviteTransaction | None = None
    settled: asyncio.Future[Answered | Settled] | None = None
    answered_call: SipCall | None = None  # made the moment the 2xx is ACKed, so a BYE right after finds it
    refused_answer: Settled | None = None  # answered with SDP we cannot use (we hung up)
    offer: SessionDescription | None = None
    rtp: RtpLine | None = None

    def facts(self) -> dict[str, Any]:
        """What the call record's metadata says about the dial (direction, where to, its outcome)."""
        return {"direction": "outbound", "to": str(self.destination.uri), "from": self.caller_id,
                "dial": self.state, "sip_status": self.sip_status,
                **({"client_metadata": self.client_metadata} if self.client_metadata else {})}

    def view(self) -> dict[str, Any]:
        """The call as `GET /v1/calls/{id}` shows it before its record exists (while it rings)."""
        return {"id": self.id, "agent": self.agent, "transport": "sip", "caller": str(self.destination.uri),
                "started_at": self.started_at.isoformat(), "ended_at": None, "status": self.state,
                "outcome": None, "metadata": self.facts()}


def _number(text: str) -> str | None:
    """A dialable number (digits, a leading +) from what a person typed, or None when it is not one."""
    if not _NUMBER.fullmatch(text.strip()):
        return None
    return "".join(ch for ch in text if ch.isdigit() or ch == "+")


class Dialer:
    """The SIP phone's outbound calls."""

    def __init__(self, phone: SipPhone) -> None:
        self.phone = phone
        self.settings = phone.settings
        self.calls: dict[str, OutboundCall] = {}  # by call id, until the call is over
        self._by_sip_call_id: dict[str, OutboundCall] = {}
        settings = self.settings
        trunk = settings.sip_trunk_proxy or settings.sip_trunk_registrar
        self.trunk: SipUri | None = trunk_uri(trunk) if trunk else None
        password = settings.sip_trunk_password.get_secret_value()
        self.credentials = (settings.sip_trunk_user or "voxgate", password) if password else None
        # G.711 only: the RTP line is opened before the answer names the codec, at 8 kHz (docs/sip.md)
        self.preferences = CodecPreferences(order=_g711(settings.sip_codecs), srtp="never",
                                            comfort_noise=settings.sip_comfort_noise)

    # -- where a call goes ------------------------------------------------------------------------

    async def destination(self, to: str) -> Destination:
        """Where `to` is dialled; DialError when it is malformed or not a place this gateway may call."""
        text = to.strip()
        if not text or len(text) > MAX_TO_CHARS:
            raise DialError(f"`to` must be a sip: or tel: URI or a number of at most {MAX_TO_CHARS} characters")
        trunk = self.trunk
        uri: Uri
        if ":" in text:  # a URI (a number has no colon)
            try:
                uri = parse_uri(text)
            except SipError as error:
                raise DialError(f"`to` is not a valid URI: {error}") from None
        else:
            digits = _number(text)
            if digits is None:
                raise DialError("`to` must be a sip: or tel: URI or a phone number")
            uri = TelUri(digits)
        if isinstance(uri, TelUri):
            if trunk is None:
                raise DialError("numbers are dialled through a trunk: set sip_trunk_proxy or sip_trunk_registrar",
                                "no_trunk")
            number = "".join(ch for ch in uri.digits if ch.isdigit() or ch == "+")
            if not number:
                raise DialError("`to` has no digits to dial")
            uri = SipUri("sip", trunk.host, number, params=(("user", "phone"),))
        if not isinstance(uri, SipUri) or uri.secure:
            raise DialError("`to` must be a sip: URI, a tel: URI or a number (sips: is not supported yet)")
        uri = uri.without_headers()
        try:
            if trunk is not None:
                return Destination(uri, await resolve(trunk), via_trunk=True)
            peer = await resolve(uri)
        except (OSError, UnicodeError) as error:
            raise DialError(f"cannot resolve the destination's host: {error}", "unresolvable") from None
        if not self.phone.trusts(peer[0]):
            raise DialError("with no trunk set, calls go only to hosts in sip_allowed_sources (loopback by "
                            "default)", "destination_not_allowed")
        return Destination(uri, peer, via_trunk=False)

    # -- placing it --------------------------------------------------------------------------------

    def place(self, destination: Destination, *, agent: str, caller_id: str | None, owner: str | None,
              ticket: Ticket, client_metadata: dict[str, Any] | None = None) -> OutboundCall:
        """Start dialling; the call (its id, its state) at once. The ticket is released when it ends."""
        call = OutboundCall(new_id("sess"), destination, agent,
                            caller_id or self.settings.sip_trunk_user or "voxgate", owner, ticket,
                            client_metadata or {})
        self.calls[call.id] = call
        self.phone.spawn(self._run(call), name="sip-dial")
        return call

    def view(self, call_id: str) -> OutboundCall | None:
        return self.calls.get(call_id)

    async def _run(self, call: OutboundCall) -> None:
        """Dial, then serve the answered call with its agent or record why it was not answered."""
        handed_over = False
        try:
            outcome = await self._dial(call)
            if isinstance(outcome, Settled):
                await self._not_answered(call, outcome)
                return
            handed_over = True
            await self.phone.serve_outbound(outcome, call)
        except Exception:  # a bug costs this call, recorded, never the process
            log.exception("%s: dialling failed", call.id)
            if not handed_over:
                with contextlib.suppress(Exception):
                    await self._not_answered(call, Settled(DialOutcome.FAILED, 500, "internal error"))
        finally:
            self._forget(call, keep_media=handed_over)
            if call.ticket is not None:
                call.ticket.release()  # (serve_outbound has released it already when it ran)

    async def dial_leg(self, to: str, codec: str) -> SipCall | None:
        """A second leg for a bridge: `to` rung (offering `codec` first), the answered SipCall or None. It is
        recorded with the first leg's call, not on its own."""
        try:
            destination = await self.destination(to)
        except DialError as error:
            log.warning("cannot bridge to %s: %s", to, error)
            return None
        codecs = _g711([codec, *self.settings.sip_codecs])
        # No comfort noise on a bridge's leg: the relay forwards audio packets, so a CN pause would reach the
        # caller as a gap in the RTP, not as silence.
        call = OutboundCall(new_id("leg"), destination, "", self.settings.sip_trunk_user or "voxgate", None, None,
                            preferences=CodecPreferences(order=codecs, srtp="never", comfort_noise=False))
        answered = False
        try:
            outcome = await self._dial(call)
            answered = isinstance(outcome, SipCall)
            if not answered:
                log.info("%s: the bridge's second leg was not answered (%s)", call.id, outcome)
            return outcome if isinstance(outcome, SipCall) else None
        except Exception:  # a bug costs the bridge (the caller is told), not the call
            log.exception("%s: dialling the bridge's second leg failed", call.id)
            return None
        finally:
            self._forget(call, keep_media=answered)

    async def _dial(self, call: OutboundCall) -> SipCall | Settled:
        """Ring `call`'s destination until it answers (the SipCall, registered with the phone) or settles."""
        phone = self.phone
        loop = asyncio.get_running_loop()
        destination = call.destination
        from_ = NameAddress(SipUri("sip", self.trunk.host if self.trunk else phone.public_address,
                                   _user_part(call.caller_id)))
        invitation = call.invitation = Invitation(
            target=destination.uri, from_=from_, contact=phone.contact(), via=phone.via(), offer=b"",
            ring_timeout=self.settings.sip_ring_timeout_s,
            credentials=DigestClient(*self.credentials) if destination.via_trunk and self.credentials else None)
        preferences = call.preferences or self.preferences
        rtp = call.rtp = RtpLine(_provisional_media(list(preferences.order)), destination.peer[0], lambda _: None,
                                 ports=phone.rtp_ports, cname=f"voxgate@{phone.public_address}")
        _, port = await rtp.open(phone.host)
        call.offer = make_offer(address=phone.public_address, port=port, preferences=preferences,
                                session_id=sdp_session_id(invitation.from_.tag or ""), session_version=1)
        invitation.offer = call.offer.to_bytes()
        self._by_sip_call_id[invitation.call_id] = call
        call.settled = loop.create_future()
        self._apply(call, [Send(invitation.start(loop.time()))])
        outcome = await self._ring(call, invitation)
        if call.answered_call is not None:
            return call.answered_call
        settled = call.refused_answer or outcome
        assert isinstance(settled, Settled)
        return settled

    def _forget(self, call: OutboundCall, *, keep_media: bool) -> None:
        """A dial is over: its bookkeeping gone, its RTP socket closed unless an answered call took it."""
        if not keep_media and call.rtp is not None:
            call.rtp.close()
        self.calls.pop(call.id, None)
        if call.invitation is not None:
            self._by_sip_call_id.pop(call.invitation.call_id, None)
        if call.transaction is not None:
            self.phone.forget(call.transaction)

    def _answered(self, call: OutboundCall, answered: Answered) -> None:
        """Settle the media and make the SipCall at once (no await between our ACK and the far end's BYE)."""
        assert call.offer is not None and call.rtp is not None and call.invitation is not None
        try:
            media = accept_answer(call.offer, parse_sdp(answered.response.body), call.preferences or self.preferences)
        except SipError as error:
            log.warning("%s: the far end's SDP answer is unusable (%s); hanging up", call.id, error)
            self._apply(call, [Send(answered.dialog.bye())])
            call.refused_answer = Settled(DialOutcome.FAILED, answered.response.status, "unusable SDP answer")
            return
        call.rtp.update(media)
        invite = call.invitation.request
        assert invite is not None
        phone = self.phone
        sip_call = SipCall(signalling=phone, invite=invite, transaction=None, peer=call.destination.peer,
                           reliable=False, dialog=answered.dialog, settings=self.settings, media_host=phone.host,
                           public_address=phone.public_address, rtp=call.rtp, media=media)
        phone.calls[answered.dialog.call_id] = sip_call
        call.answered_call = sip_call
        call.state, call.sip_status = DialOutcome.ANSWERED.value, answered.response.status
        if call.ticket is not None:  # a bridge's leg is counted with its transfer
            metrics.SIP_OUTBOUND_CALLS.labels(call.state).inc()
        log.info("%s: answered (%d)", call.id, answered.response.status)

    async def _ring(self, call: OutboundCall, invitation: Invitation) -> Answered | Settled:
        """Wait for the answer, CANCELling at the ring timeout."""
        loop = asyncio.get_running_loop()
        settled = call.settled
        assert settled is not None
        while not settled.done():
            deadline = invitation.next_deadline()
            await asyncio.wait({settled}, timeout=None if deadline is None else max(0.0, deadline - loop.time()))
            if not settled.done():
                self._apply(call, invitation.handle_timer(loop.time()))
        return settled.result()

    def _apply(self, call: OutboundCall, events: list[InvitationEvent]) -> None:
        phone = self.phone
        for event in events:
            if isinstance(event, Send):
                request = event.request
                if request.method == "INVITE":
                    if call.transaction is not None:
                        phone.forget(call.transaction)
                    on_response = functools.partial(self._response, call)
                    transaction = phone.exchange(request, call.destination.peer, on_response)
                    call.transaction = transaction if isinstance(transaction, ClientInviteTransaction) else None
                else:  # the ACK (no transaction), or the BYE to an answer that came too late
                    phone.exchange(request, call.destination.peer, lambda r: None)
            elif isinstance(event, Ringing):
                call.state = "ringing"
                log.info("%s: ringing (%d %s)", call.id, event.status, event.reason)
            elif isinstance(event, CancelRinging):
                log.info("%s: no answer within %.0f s; cancelling", call.id, self.settings.sip_ring_timeout_s)
                if call.transaction is not None:
                    phone.endpoint.cancel(call.transaction)
            elif isinstance(event, Answered | Settled):
                if isinstance(event, Answered):
                    self._answered(call, event)
                if call.settled is not None and not call.settled.done():
                    call.settled.set_result(event)

    def _response(self, call: OutboundCall, response: SipResponse | None) -> None:
        invitation = call.invitation
        if invitation is None:
            return
        now = asyncio.get_running_loop().time()
        self._apply(call, invitation.timed_out(now) if response is None else invitation.receive(response, now))

    def stray(self, response: SipResponse) -> None:
        """A 2xx retransmitted after its INVITE transaction ended: ACK it again."""
        call = self._by_sip_call_id.get(response.call_id)
        if call is not None:
            self._response(call, response)

    def hang_up_ringing(self) -> None:
        """At shutdown: CANCEL every call still ringing."""
        for call in list(self.calls.values()):
            if call.invitation is not None:
                self._apply(call, call.invitation.cancel())

    async def _not_answered(self, call: OutboundCall, settled: Settled) -> None:
        """Record a call that never reached the agent: status `failed`, the outcome, the SIP status."""
        call.state, call.sip_status = settled.outcome.value, settled.status
        metrics.SIP_OUTBOUND_CALLS.labels(settled.outcome.value).inc()
        log.info("%s: %s (%d %s)", call.id, settled.outcome.value, settled.status, settled.reason)
        gateway = self.phone.gateway
        agent = gateway.agent(call.agent)
        store = gateway.calls
        await store.start_call(call.id, agent=agent.name, engine=agent.engine or self.settings.engine, transport="sip",
                               caller=str(call.destination.uri), owner=call.owner,
                               metadata={**call.facts(), "node": gateway.node})
        await store.end_call(call.id, status="failed", outcome=settled.label,
                             end_reason=f"{settled.status} {settled.reason}".strip())


def _user_part(caller_id: str) -> str:
    """The From user for `from`: a number as digits, a sip: URI's user, anything else as it is."""
    number = _number(caller_id)
    if number:
        return number
    with contextlib.suppress(SipError):
        uri = parse_uri(caller_id)
        if isinstance(uri, SipUri) and uri.user:
            return uri.user
    return caller_id


def _g711(codecs: list[str]) -> tuple[str, ...]:
    """The G.711 laws among `codecs`, in order, each once (PCMU when there is none)."""
    laws = [c.upper() for c in codecs if c.upper() in _STATIC_TYPES]
    return tuple(dict.fromkeys(laws)) or ("PCMU",)


def _provisional_media(codecs: list[str]) -> MediaSession:
    """What the RTP line assumes until the answer says: our first codec, nowhere to send yet."""
    name = next((c.upper() for c in codecs if c.upper() in _STATIC_TYPES), "PCMU")
    return MediaSession(Codec(name, _STATIC_TYPES[name], 8000), "0.0.0.0", 0, 0, "sendrecv", "sendrecv", 20)

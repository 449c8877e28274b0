"""SIP dialogs (RFC 3261 §12-§15), sans-IO: the state two user agents share for one call, and the requests
sent inside it.

    dialog = Dialog.for_uas(invite, local_tag=new_tag(), contact=me, via=my_via)   # we answer a call
    dialog = Dialog.for_uac(invite, response_2xx, contact=me, via=my_via)          # our call was answered
    bye = dialog.new_request("BYE")                 # Request-URI, Route, From/To tags, CSeq all right
    ack = dialog.ack(invite)                        # the ACK to a 2xx: its own branch, the INVITE's CSeq
    problem = dialog.receive_request(request)       # None, or the status to answer (500: CSeq went back)

A dialog is identified by Call-ID and both tags (`DialogId`); `DialogId.of_request` and
`DialogId.of_response` read that identity from an incoming message as seen from our side. Target-refresh
requests (re-INVITE, UPDATE) and their 2xx responses move the remote target to the new Contact.

`InviteAnswer` is the UAS core's duty of §13.3.1.4: a 2xx to an INVITE is retransmitted (T1 doubling up to
T2, over UDP) until the ACK arrives; with no ACK within 64*T1 the call must be ended with a BYE.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from voxgate.sip.errors import SipError
from voxgate.sip.headers import NameAddress, Via, new_branch
from voxgate.sip.message import Request, Response, new_request
from voxgate.sip.transaction import Address, Timers, Transmit
from voxgate.sip.uri import SipUri, Uri

__all__ = [
    "TARGET_REFRESH",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "InviteAnswer",
]

TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})  # requests whose Contact replaces the remote target


class DialogError(SipError):
    """A message that cannot make or belong to a dialog (no tag, no usable Contact)."""


class DialogState(enum.Enum):
    EARLY = "early"  # created by a 1xx with a To tag
    CONFIRMED = "confirmed"  # a 2xx was sent or received
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId:
        """The dialog an incoming request belongs to, from our side: the To tag is ours."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def of_response(cls, response: Response) -> DialogId:
        """The dialog an incoming response belongs to: the From tag is ours."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


def _contact_target(message: Request | Response) -> Uri:
    contacts = message.contacts
    if len(contacts) != 1:
        raise DialogError(f"a dialog needs exactly one Contact, got {len(contacts)}")
    return contacts[0].uri


@dataclass
class Dialog:
    """One dialog's state. `route_set` is in the order our requests use it; `local_cseq` is the last number
    we used (the next request takes one more); `remote_cseq` the last one the peer used (None: none yet)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddress  # our From (without the tag)
    remote_uri: NameAddress  # their To / From (without the tag)
    remote_target: Uri
    contact: NameAddress  # ours, sent on target-refresh requests and their 2xx
    via: Via  # our sent-by and transport; each request gets a fresh branch
    route_set: list[NameAddress] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    state: DialogState = DialogState.CONFIRMED
    secure: bool = False

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- creation

    @classmethod
    def for_uas(cls, request: Request, *, local_tag: str, contact: NameAddress, via: Via,
                state: DialogState = DialogState.CONFIRMED, local_cseq: int = 0) -> Dialog:
        """The dialog our 2xx (or 1xx with a tag, `state=EARLY`) to `request` creates (§12.1.1): the route
        set is the request's Record-Route in order, the remote target its Contact."""
        from_ = request.from_
        if from_.tag is None:
            raise DialogError("the request has no From tag (an RFC 2543 peer); cannot make a dialog")
        uri = request.uri
        return cls(
            call_id=request.call_id, local_tag=local_tag, remote_tag=from_.tag,
            local_uri=request.to.without_params(), remote_uri=from_.without_params(),
            remote_target=_contact_target(request), contact=contact, via=via,
            route_set=list(request.record_route), local_cseq=local_cseq, remote_cseq=request.cseq.number,
            state=state, secure=isinstance(uri, SipUri) and uri.secure and request.via[0].transport == "TLS",
        )

    @classmethod
    def for_uac(cls, request: Request, response: Response, *, contact: NameAddress, via: Via) -> Dialog:
        """The dialog a 1xx (with a To tag) or 2xx to our `request` creates (§12.1.2): the route set is the
        response's Record-Route reversed, the remote target its Contact."""
        tag = response.to.tag
        local_tag = request.from_.tag
        if tag is None or local_tag is None:
            raise DialogError("a dialog needs both tags")
        uri = request.uri
        return cls(
            call_id=request.call_id, local_tag=local_tag, remote_tag=tag,
            local_uri=request.from_.without_params(), remote_uri=response.to.without_params(),
            remote_target=_contact_target(response), contact=contact, via=via,
            route_set=list(reversed(response.record_route)), local_cseq=request.cseq.number,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            secure=isinstance(uri, SipUri) and uri.secure,
        )

    # -- requests we send

    def _request(self, method: str, cseq: int, *, branch: str | None, headers: Iterable[tuple[str, str]],
                 body: bytes, content_type: str | None) -> Request:
        """§12.2.1.1: Request-URI and Route from the route set (loose routing, or strict when the first hop
        has no `lr`), From/To with the tags, our Contact on target refreshes."""
        target: Uri = self.remote_target
        route = list(self.route_set)
        if route and isinstance(route[0].uri, SipUri) and route[0].uri.param("lr") is None:
            target = route[0].uri.without_headers() if isinstance(route[0].uri, SipUri) else route[0].uri
            route = [*route[1:], NameAddress(self.remote_target)]
        return new_request(
            method, target, via=self.via.with_params(branch=branch or new_branch()),
            from_=self.local_uri.with_tag(self.local_tag), to=self.remote_uri.with_tag(self.remote_tag),
            call_id=self.call_id, cseq=cseq, route=route,
            contact=self.contact if method in TARGET_REFRESH or method in ("REFER", "NOTIFY", "SUBSCRIBE") else None,
            headers=headers, body=body, content_type=content_type)

    def new_request(self, method: str, *, branch: str | None = None, headers: Iterable[tuple[str, str]] = (),
                    body: bytes = b"", content_type: str | None = None) -> Request:
        """A request inside the dialog (BYE, re-INVITE, UPDATE, INFO, REFER, NOTIFY, ...), with the next
        CSeq. Not for ACK or CANCEL, which reuse their INVITE's number: see `ack` and transaction.cancel_for."""
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} reuses its INVITE's CSeq: use Dialog.ack or cancel_for")
        if self.state == DialogState.TERMINATED and method != "BYE":
            raise DialogError("the dialog has ended")
        self.local_cseq += 1
        return self._request(method, self.local_cseq, branch=branch, headers=headers, body=body,
                             content_type=content_type)

    def ack(self, invite: Request, *, branch: str | None = None, body: bytes = b"",
            content_type: str | None = None) -> Request:
        """The ACK to a 2xx of `invite` (§13.2.2.4): a new transaction with the INVITE's CSeq number. A body
        here is the answer to an offer our INVITE did not carry (delayed offer)."""
        return self._request("ACK", invite.cseq.number, branch=branch, headers=(), body=body,
                             content_type=content_type)

    def bye(self) -> Request:
        request = self.new_request("BYE")
        self.state = DialogState.TERMINATED
        return request

    # -- what the peer sends

    def receive_request(self, request: Request) -> int | None:
        """Check and record an in-dialog request (§12.2.2). Returns None when it is acceptable, or the status
        to answer: 500 for a CSeq lower than the last one (out of order), 481 once the dialog has ended.
        An ACK is not counted (it reuses the INVITE's number); a BYE ends the dialog."""
        if request.method == "ACK":
            return None
        if self.state == DialogState.TERMINATED:
            return 481
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return 500  # out of order (an equal number is a retransmission the transactions absorb)
        self.remote_cseq = number
        if request.method in TARGET_REFRESH and request.contacts:
            self.remote_target = request.contacts[0].uri
        if request.method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def receive_response(self, request: Request, response: Response) -> None:
        """A response to a request we sent in this dialog: a 2xx to INVITE confirms an early dialog (and
        recomputes its route set, §13.2.2.4); a 2xx to a target refresh moves the remote target; a 481 or
        408 to anything ends the dialog (§12.2.1.2)."""
        if response.status in (408, 481):
            self.state = DialogState.TERMINATED
            return
        if not 200 <= response.status < 300:
            return
        if request.method == "INVITE" and self.state == DialogState.EARLY:
            self.state = DialogState.CONFIRMED
            self.route_set = list(reversed(response.record_route))
        if request.method in TARGET_REFRESH and response.contacts:
            self.remote_target = response.contacts[0].uri

    def matches(self, message: Request | Response) -> bool:
        if isinstance(message, Request):
            return DialogId.of_request(message) == self.id
        return DialogId.of_response(message) == self.id

    def with_via(self, via: Via) -> Dialog:
        return replace(self, via=via)


class InviteAnswer:
    """The UAS core's 2xx retransmission until the ACK (§13.3.1.4).

    `handle_timer(now)` returns the retransmissions due; `acknowledge(ack)` stops them; `timed_out` turns
    true when 64*T1 passed without an ACK (then send BYE). Over a reliable transport nothing is
    retransmitted, but the ACK is still awaited."""

    def __init__(self, response: Response, peer: Address, now: float, *, timers: Timers | None = None,
                 reliable: bool = False) -> None:
        self.response = response
        self.timers = timers or Timers()
        self.acknowledged = False
        self.timed_out = False
        self._transmit = Transmit(response, peer, response.to_bytes())
        self._interval = self.timers.t1
        self._next: float | None = None if reliable else now + self._interval
        self._give_up = now + self.timers.timeout

    @property
    def cseq(self) -> int:
        return self.response.cseq.number

    @property
    def deadline(self) -> float | None:
        if self.acknowledged or self.timed_out:
            return None
        return self._give_up if self._next is None else min(self._next, self._give_up)

    def acknowledge(self, ack: Request) -> bool:
        """True when `ack` acknowledges this 2xx (same Call-ID and CSeq number)."""
        if ack.method != "ACK" or ack.cseq.number != self.cseq or ack.call_id != self.response.call_id:
            return False
        self.acknowledged = True
        return True

    def handle_timer(self, now: float) -> list[Transmit]:
        if self.acknowledged or self.timed_out:
            return []
        if now >= self._give_up:
            self.timed_out = True
            return []
        out: list[Transmit] = []
        if self._next is not None and now >= self._next:
            out.append(self._transmit)
            self._interval = min(2 * self._interval, self.timers.t2)
            self._next = now + self._interval
        return out

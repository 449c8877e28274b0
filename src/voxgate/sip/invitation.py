"""Our INVITE to a far end until it settles (RFC 3261 §13.2, the UAC side), sans-IO.

    invitation = Invitation(target=uri, from_=me, contact=my_contact, via=my_via, offer=sdp, ring_timeout=30,
                            credentials=DigestClient(user, password))
    send(invitation.start(now))                     # the INVITE (a client transaction of its own)
    for event in invitation.receive(response, now): # Send, Ringing, CancelRinging, Answered, Settled
        ...
    invitation.handle_timer(now)                    # at next_deadline(): the ring timeout -> CancelRinging
    invitation.cancel()                             # give up at once (CancelRinging)
    invitation.timed_out(now)                       # the INVITE's transaction timed out (Timer B or C)

A 401/407 is answered once with our credentials (again only for a `stale` nonce): a new INVITE with the
next CSeq, the same Call-ID and From tag. 180/183 report ringing. A 2xx makes the dialog: we ACK it (and
every retransmission of it) and the call is `answered`; a 2xx that comes after we gave up ringing is
ACKed and hung up at once. 486, 600 and 603 are `busy`; the ring timeout CANCELs, and the 487 (or no final
answer at all) makes it `no_answer`; every other final response is `failed` with its code. The transaction
layer ACKs the non-2xx finals itself.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from voxgate.sip.dialog import Dialog, DialogError
from voxgate.sip.digest import DigestClient, DigestError, pick_challenge
from voxgate.sip.headers import NameAddress, Via, new_branch, new_tag
from voxgate.sip.message import Request, Response, new_request
from voxgate.sip.uri import Uri

__all__ = [
    "BUSY",
    "Answered",
    "CancelRinging",
    "DialOutcome",
    "Invitation",
    "InvitationEvent",
    "Ringing",
    "Send",
    "Settled",
]

BUSY = frozenset({486, 600, 603})  # Busy Here, Busy Everywhere, Decline


class DialOutcome(enum.Enum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Send:
    """Send this request: an INVITE with credentials (a new client transaction), an ACK, or a BYE."""

    request: Request


@dataclass(frozen=True, slots=True)
class Ringing:
    status: int  # 180 or 183 (or another 1xx above 100)
    reason: str


@dataclass(frozen=True, slots=True)
class CancelRinging:
    """The ring timeout passed: CANCEL the pending INVITE (the transaction layer does it)."""


@dataclass(frozen=True, slots=True)
class Answered:
    """The far end took the call: `response` carries its SDP answer; `dialog` is ours to use."""

    response: Response
    dialog: Dialog


@dataclass(frozen=True, slots=True)
class Settled:
    """The call will not be answered (or was answered too late and hung up)."""

    outcome: DialOutcome
    status: int  # the SIP status that settled it (408 when nothing came back)
    reason: str

    @property
    def label(self) -> str:
        """What the call record says: `busy`, `no_answer`, or `failed: 503 Service Unavailable`."""
        if self.outcome == DialOutcome.FAILED:
            return f"failed: {self.status} {self.reason}".strip()
        return self.outcome.value


InvitationEvent = Send | Ringing | CancelRinging | Answered | Settled


class Invitation:
    """One outbound INVITE, its challenges and provisional answers, until answered or settled."""

    def __init__(self, *, target: Uri, from_: NameAddress, contact: NameAddress, via: Via, offer: bytes,
                 ring_timeout: float, credentials: DigestClient | None = None, to: NameAddress | None = None,
                 headers: Iterable[tuple[str, str]] = (), call_id: str | None = None) -> None:
        self.target = target
        self.from_ = from_ if from_.tag else from_.with_tag(new_tag())
        self.to = to or NameAddress(target)
        self.contact = contact
        self.via = via
        self.offer = offer
        self.ring_timeout = ring_timeout
        self.credentials = credentials
        self.headers = tuple(headers)
        self.call_id = call_id or f"{new_tag()}{new_tag()}@voxgate"
        self.request: Request | None = None  # the INVITE now pending (or answered)
        self.dialog: Dialog | None = None
        self.outcome: DialOutcome | None = None
        self.ringing = False
        self.cancelling = False
        self._cseq = 0
        self._ring_deadline: float | None = None
        self._auth_answered = 0
        self._ack: Request | None = None

    def _invite(self, authorization: tuple[str, str] | None = None) -> Request:
        self._cseq += 1
        headers = list(self.headers) + ([authorization] if authorization else [])
        self.request = new_request("INVITE", self.target, via=self.via.with_params(branch=new_branch()),
                                   from_=self.from_, to=self.to, call_id=self.call_id, cseq=self._cseq,
                                   contact=self.contact, headers=headers, body=self.offer,
                                   content_type="application/sdp")
        return self.request

    def start(self, now: float) -> Request:
        self._ring_deadline = now + self.ring_timeout
        return self._invite()

    @property
    def settled(self) -> bool:
        return self.outcome is not None

    # -- responses

    def receive(self, response: Response, now: float) -> list[InvitationEvent]:
        request = self.request
        if request is None or response.cseq.method != "INVITE" or response.call_id != self.call_id:
            return []
        status = response.status
        if 200 <= status < 300:
            return self._success(response)
        if response.cseq.number != request.cseq.number or self.outcome is not None:
            return []  # an answer to an INVITE we replaced (challenged), or after the end
        if response.provisional:
            if status > 100 and not self.ringing:
                self.ringing = True
                return [Ringing(status, response.reason)]
            return []
        if status in (401, 407) and not self.cancelling:
            return self._challenged(response)
        if self.cancelling and status == 487:
            return self._settle(DialOutcome.NO_ANSWER, status, response.reason)
        return self._settle(DialOutcome.BUSY if status in BUSY else DialOutcome.FAILED, status, response.reason)

    def _success(self, response: Response) -> list[InvitationEvent]:
        request = self.request
        assert request is not None
        dialog = self.dialog
        if dialog is not None and response.to.tag == dialog.remote_tag and self._ack is not None:
            return [Send(self._ack)]  # a retransmitted 2xx: our ACK was lost
        try:
            made = Dialog.for_uac(request, response, contact=self.contact, via=self.via)
        except DialogError:
            if self.outcome is None:
                return self._settle(DialOutcome.FAILED, response.status, "2xx without a usable Contact")
            return []
        ack = made.ack(request)
        if self.outcome is not None or self.cancelling:
            # Too late (we gave up ringing) or a second fork: take it, then hang it up at once (§13.2.2.4).
            events: list[InvitationEvent] = [Send(ack), Send(made.bye())]
            if self.outcome is None:
                events += self._settle(DialOutcome.NO_ANSWER, response.status, "answered after the ring timeout")
            return events
        self.dialog, self._ack = made, ack
        self.outcome = DialOutcome.ANSWERED
        self._ring_deadline = None
        return [Send(ack), Answered(response, made)]

    def _challenged(self, response: Response) -> list[InvitationEvent]:
        if self.credentials is None:
            return self._settle(DialOutcome.FAILED, response.status, f"{response.reason} (no credentials set)")
        try:
            header, challenge = pick_challenge(response)
        except DigestError as error:
            return self._settle(DialOutcome.FAILED, response.status, f"{response.reason} ({error})")
        if self._auth_answered >= 2 or (self._auth_answered == 1 and not challenge.stale):
            return self._settle(DialOutcome.FAILED, response.status, f"{response.reason} (credentials refused)")
        self._auth_answered += 1
        self.credentials.challenged(challenge)
        authorization = self.credentials.authorization("INVITE", str(self.target))
        self.ringing = False
        return [Send(self._invite((header, authorization)))]

    def _settle(self, outcome: DialOutcome, status: int, reason: str) -> list[InvitationEvent]:
        self.outcome = outcome
        self._ring_deadline = None
        return [Settled(outcome, status, reason)]

    def timed_out(self, now: float) -> list[InvitationEvent]:
        """The INVITE's transaction ended without a final response: nobody answered at all."""
        if self.outcome is not None:
            return []
        if self.cancelling:
            return self._settle(DialOutcome.NO_ANSWER, 408, "no answer to the CANCEL")
        return self._settle(DialOutcome.FAILED, 408, "Request Timeout")

    # -- time

    def next_deadline(self) -> float | None:
        return None if self.outcome is not None or self.cancelling else self._ring_deadline

    def handle_timer(self, now: float) -> list[InvitationEvent]:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        return self.cancel()

    def cancel(self) -> list[InvitationEvent]:
        """Stop ringing now (the ring timeout, or the gateway shutting down); settled by the 487."""
        if self.outcome is not None or self.cancelling:
            return []
        self.cancelling = True
        return [CancelRinging()]

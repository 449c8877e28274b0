"""The outbound INVITE core on an explicit clock: 407 answered with the trunk's credentials (checked by the
server side's own verifier), ringing, the 2xx ACKed (again on each retransmission) with the dialog made,
busy and failed finals, the ring timeout's CANCEL settling as no answer, and an answer that came too late."""

from __future__ import annotations

import pytest

from voxgate.sip.digest import DigestClient, DigestVerifier, parse_credentials
from voxgate.sip.headers import NameAddress, Via
from voxgate.sip.invitation import (
    Answered,
    CancelRinging,
    DialOutcome,
    Invitation,
    Ringing,
    Send,
    Settled,
)
from voxgate.sip.message import Request, Response, make_response
from voxgate.sip.uri import parse_uri

TARGET = parse_uri("sip:+15551234567@trunk.test;user=phone")
ME = NameAddress(parse_uri("sip:alice@trunk.test"))
CONTACT = NameAddress(parse_uri("sip:alice@192.0.2.5:5060"))
FAR_CONTACT = NameAddress(parse_uri("sip:far@198.51.100.7:5060"))
VIA = Via("UDP", "192.0.2.5", 5060, (("rport", None),))
OFFER = b"v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def invitation(password: str | None = "s3cret") -> Invitation:
    return Invitation(target=TARGET, from_=ME, contact=CONTACT, via=VIA, offer=OFFER, ring_timeout=30.0,
                      credentials=DigestClient("alice", password) if password is not None else None)


def answer(request: Request, status: int, *, tag: str = "far",
           headers: list[tuple[str, str]] | None = None) -> Response:
    extra = [("Contact", str(FAR_CONTACT))] if 100 < status < 300 else []
    return make_response(request, status, to_tag=tag, headers=[*extra, *(headers or [])],
                         body=b"v=0\r\n" if 200 <= status < 300 else b"")


def test_a_challenged_invite_rings_and_is_answered_and_acked() -> None:
    verifier = DigestVerifier("trunk.test", b"k" * 32, algorithm="MD5")
    call = invitation()
    first = call.start(0.0)
    assert first.method == "INVITE" and first.uri == TARGET and first.body == OFFER
    assert first.content_type == "application/sdp" and first.from_.tag and first.to.tag is None
    assert call.next_deadline() == 30.0
    proxy_challenge = make_response(first, 407, to_tag="p", headers=[
        ("Proxy-Authenticate", str(verifier.challenge(0.0)))])
    [resend] = call.receive(proxy_challenge, 0.1)
    assert isinstance(resend, Send)
    second = resend.request
    assert second.cseq.number == first.cseq.number + 1 and second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag and second.via[0].branch != first.via[0].branch
    credentials = parse_credentials(second.headers.get("Proxy-Authorization") or "")
    assert verifier.verify(credentials, method="INVITE", password="s3cret", now=0.1).ok
    assert call.receive(answer(second, 100), 0.2) == []
    assert call.receive(answer(second, 180), 0.3) == [Ringing(180, "Ringing")]
    assert call.receive(answer(second, 183), 0.4) == []  # ringing is reported once
    ok = answer(second, 200)
    events = call.receive(ok, 5.0)
    assert [type(e) for e in events] == [Send, Answered]
    ack = events[0].request  # type: ignore[union-attr]
    assert ack.method == "ACK" and ack.cseq.number == second.cseq.number and ack.cseq.method == "ACK"
    assert ack.uri == FAR_CONTACT.uri and ack.to.tag == "far"
    answered = events[1]
    assert isinstance(answered, Answered) and answered.dialog.remote_tag == "far"
    assert call.outcome == DialOutcome.ANSWERED and call.next_deadline() is None
    assert call.receive(ok, 5.5) == [Send(ack)]  # a retransmitted 2xx: the same ACK again
    assert call.handle_timer(100.0) == []


@pytest.mark.parametrize(("status", "outcome", "label"), [
    (486, DialOutcome.BUSY, "busy"), (600, DialOutcome.BUSY, "busy"), (603, DialOutcome.BUSY, "busy"),
    (503, DialOutcome.FAILED, "failed: 503 Service Unavailable"), (404, DialOutcome.FAILED, "failed: 404 Not Found"),
    (487, DialOutcome.FAILED, "failed: 487 Request Terminated"),  # terminated by someone else than us
])
def test_finals_settle_as_busy_or_failed_with_their_code(status: int, outcome: DialOutcome, label: str) -> None:
    call = invitation()
    request = call.start(0.0)
    call.receive(answer(request, 180), 1.0)
    [settled] = call.receive(answer(request, status), 2.0)
    assert isinstance(settled, Settled) and settled.outcome == outcome and settled.status == status
    assert settled.label == label and call.next_deadline() is None
    late = call.receive(answer(request, 200, tag="fork"), 3.0)  # another branch answered after all: hung up
    assert [e.request.method for e in late if isinstance(e, Send)] == ["ACK", "BYE"] and len(late) == 2
    assert call.outcome == outcome


def test_the_ring_timeout_cancels_and_the_487_means_no_answer() -> None:
    call = invitation()
    request = call.start(10.0)
    call.receive(answer(request, 180), 11.0)
    assert call.handle_timer(39.9) == []
    assert call.handle_timer(40.0) == [CancelRinging()]
    assert call.handle_timer(41.0) == [] and call.next_deadline() is None and call.cancel() == []
    [settled] = call.receive(answer(request, 487), 40.1)
    assert isinstance(settled, Settled) and settled.outcome == DialOutcome.NO_ANSWER and settled.label == "no_answer"


def test_an_answer_after_the_cancel_is_acked_and_hung_up() -> None:
    call = invitation()
    request = call.start(0.0)
    call.receive(answer(request, 180), 1.0)
    call.handle_timer(30.0)
    events = call.receive(answer(request, 200), 30.1)
    assert [type(e) for e in events] == [Send, Send, Settled]
    assert [e.request.method for e in events[:2]] == ["ACK", "BYE"]  # type: ignore[union-attr]
    assert call.outcome == DialOutcome.NO_ANSWER


def test_no_response_at_all_is_a_failure_or_after_the_cancel_no_answer() -> None:
    call = invitation()
    call.start(0.0)
    [settled] = call.timed_out(32.0)
    assert isinstance(settled, Settled) and settled.label == "failed: 408 Request Timeout"
    cancelled = invitation()
    cancelled.start(0.0)
    cancelled.cancel()
    [settled] = cancelled.timed_out(62.0)
    assert isinstance(settled, Settled) and settled.outcome == DialOutcome.NO_ANSWER


def test_a_challenge_without_credentials_or_refused_twice_fails() -> None:
    verifier = DigestVerifier("trunk.test", b"k" * 32)
    call = invitation(password=None)
    request = call.start(0.0)
    [settled] = call.receive(answer(request, 401, headers=[("WWW-Authenticate", str(verifier.challenge(0.0)))]), 0.1)
    assert isinstance(settled, Settled) and settled.status == 401 and settled.outcome == DialOutcome.FAILED
    refused = invitation(password="wrong")
    first = refused.start(0.0)
    [again] = refused.receive(answer(first, 407, headers=[("Proxy-Authenticate", str(verifier.challenge(0.0)))]), 0.1)
    assert isinstance(again, Send)
    [settled] = refused.receive(answer(again.request, 407, headers=[
        ("Proxy-Authenticate", str(verifier.challenge(0.2)))]), 0.2)
    assert isinstance(settled, Settled) and "credentials refused" in settled.reason


def test_responses_for_other_calls_or_replaced_invites_are_ignored() -> None:
    call = invitation()
    first = call.start(0.0)
    other = answer(first, 486)
    other.headers.set("Call-ID", "someone-else")
    assert call.receive(other, 0.1) == []
    verifier = DigestVerifier("trunk.test", b"k" * 32)
    call.receive(answer(first, 407, headers=[("Proxy-Authenticate", str(verifier.challenge(0.0)))]), 0.2)
    assert call.receive(answer(first, 486), 0.3) == []  # the challenged INVITE's late final
    assert call.outcome is None

"""SIP dialogs end to end on the in-memory network: set-up with 2xx retransmission until the ACK, BYE both
ways, re-INVITE and UPDATE as target refreshes, INFO, REFER with its NOTIFYs, session timers, route sets."""

from __future__ import annotations

import pytest

from tests.sip_network import ALICE, BOB, Network
from voxgate.sip.dialog import Dialog, DialogError, DialogId, DialogState, InviteAnswer
from voxgate.sip.headers import HeaderError, NameAddress, Via, new_branch, parse_name_address
from voxgate.sip.message import Request, Response, make_response, new_request, parse_message
from voxgate.sip.refer import (
    notify_headers,
    parse_refer,
    parse_refer_notify,
    parse_sipfrag,
    refer_headers,
    sipfrag,
)
from voxgate.sip.session_timer import (
    IntervalTooSmall,
    SessionTimer,
    SessionTimerPolicy,
    accept_session_timer,
    answer_session_timer,
    parse_session_expires,
)
from voxgate.sip.transaction import RequestReceived, ResponseReceived, Timers, Transmit
from voxgate.sip.uri import SipUri, parse_uri

ALICE_VIA = Via("UDP", ALICE[0], ALICE[1])
BOB_VIA = Via("UDP", BOB[0], BOB[1])
ALICE_CONTACT = NameAddress(parse_uri("sip:alice@192.0.2.1:5062"))
BOB_CONTACT = NameAddress(parse_uri("sip:bot@192.0.2.10:5060"))


def invite(headers: list[tuple[str, str]] | None = None) -> Request:
    return new_request("INVITE", parse_uri("sip:bot@192.0.2.10"), via=ALICE_VIA.with_params(branch=new_branch()),
                       from_=NameAddress(parse_uri("sip:alice@example.com"), "Alice", (("tag", "a1"),)),
                       to=NameAddress(parse_uri("sip:bot@example.com")), call_id="call-7", cseq=101,
                       contact=ALICE_CONTACT, headers=headers or [], body=b"v=0\r\n")


class Call:
    """Alice calls Bob; both cores are the test."""

    def __init__(self, net: Network, *, lose_acks: int = 0, headers: list[tuple[str, str]] | None = None) -> None:
        self.net = net
        self.invite = invite(headers)
        net.deliver(net.alice, net.alice.layer.send_request(self.invite, BOB, net.now)[1])
        [received] = net.bob.take(RequestReceived)
        self.bob_dialog = Dialog.for_uas(received.request, local_tag="b1", contact=BOB_CONTACT, via=BOB_VIA)
        self.ok = make_response(received.request, 200, to_tag="b1", headers=[("Contact", str(BOB_CONTACT))],
                                body=b"v=0\r\n")
        for _ in range(lose_acks):
            net.drop(lambda data: data.startswith(b"ACK"))
        net.deliver(net.bob, net.bob.layer.send_response(self.ok, net.now))
        self.answer = InviteAnswer(self.ok, ALICE, net.now)
        self.alice_dialog: Dialog | None = None
        self.acks_sent = 0
        self.pump()

    def pump(self) -> None:
        """Let Alice's core ACK every 2xx and Bob's core see the ACKs."""
        net = self.net
        for event in net.alice.take(ResponseReceived):
            response = event.response
            if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                if self.alice_dialog is None:
                    self.alice_dialog = Dialog.for_uac(self.invite, response, contact=ALICE_CONTACT, via=ALICE_VIA)
                ack = self.alice_dialog.ack(self.invite)
                self.acks_sent += 1
                net.deliver(net.alice, net.alice.layer.send_request(ack, BOB, net.now)[1])
        for event in net.bob.take(RequestReceived):
            if event.request.method == "ACK":
                self.answer.acknowledge(event.request)

    def run_until(self, until: float) -> None:
        net = self.net
        while True:
            deadline = self.answer.deadline
            if deadline is None or deadline > until:
                break
            net.now = deadline
            net.deliver(net.bob, list(self.answer.handle_timer(net.now)))
            self.pump()
        net.now = until


def test_call_set_up_dialog_state_on_both_sides() -> None:
    call = Call(Network())
    assert call.answer.acknowledged and call.acks_sent == 1
    alice, bob = call.alice_dialog, call.bob_dialog
    assert alice is not None
    assert alice.id == DialogId("call-7", "a1", "b1") and bob.id == DialogId("call-7", "b1", "a1")
    assert str(alice.remote_target) == "sip:bot@192.0.2.10:5060" and str(bob.remote_target) == str(ALICE_CONTACT.uri)
    assert alice.local_cseq == 101 and bob.remote_cseq == 101 and alice.remote_cseq is None
    assert alice.state == bob.state == DialogState.CONFIRMED


def test_2xx_is_retransmitted_until_the_ack_arrives() -> None:
    call = Call(Network(), lose_acks=2)
    assert not call.answer.acknowledged
    call.run_until(0.5)  # retransmission 1 → ACK 2 lost
    call.run_until(1.5)  # retransmission 2 → ACK 3 arrives
    assert call.answer.acknowledged and call.acks_sent == 3
    oks = [d for d in call.net.bob.sent if d.startswith(b"SIP/2.0 200")]
    assert len(oks) == 3 and len(set(oks)) == 1  # the same 2xx each time
    call.run_until(40)
    assert len([d for d in call.net.bob.sent if d.startswith(b"SIP/2.0 200")]) == 3


def test_2xx_without_ack_times_out_after_64_t1() -> None:
    call = Call(Network(), lose_acks=50)
    call.run_until(31.9)
    assert not call.answer.timed_out
    retransmitted = len([d for d in call.net.bob.sent if d.startswith(b"SIP/2.0 200")]) - 1
    assert retransmitted == 10  # 0.5, 1.5, 3.5, 7.5, then every 4 s (T2) to 31.5
    call.run_until(32.0)
    assert call.answer.timed_out and call.answer.deadline is None
    bye = call.bob_dialog.bye()  # the core ends the call
    assert bye.method == "BYE" and call.bob_dialog.state == DialogState.TERMINATED


def test_invite_answer_over_a_reliable_transport_waits_without_retransmitting() -> None:
    ok = make_response(invite(), 200, to_tag="b1")
    answer = InviteAnswer(ok, ALICE, 10.0, reliable=True, timers=Timers())
    assert answer.deadline == 42.0 and answer.handle_timer(20.0) == []
    other = new_request("ACK", parse_uri("sip:bot@192.0.2.10"), via=ALICE_VIA, from_=invite().from_,
                        to=invite().to, call_id="call-7", cseq=5)
    assert not answer.acknowledge(other)  # another CSeq: not this 2xx's ACK
    answer.handle_timer(42.0)
    assert answer.timed_out


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_bye_either_way(who: str) -> None:
    call = Call(Network())
    net = call.net
    sender, receiver = (call.alice_dialog, call.bob_dialog) if who == "alice" else (call.bob_dialog, call.alice_dialog)
    assert sender is not None and receiver is not None
    sender_peer = net.alice if who == "alice" else net.bob
    bye = sender.bye()
    assert bye.to.tag == sender.remote_tag and bye.from_.tag == sender.local_tag
    assert bye.cseq.number == (102 if who == "alice" else 1) and bye.headers.get("Contact") is None
    net.deliver(sender_peer, sender_peer.layer.send_request(bye, BOB if who == "alice" else ALICE, net.now)[1])
    other = net.other(sender_peer)
    [received] = other.take(RequestReceived)
    assert receiver.matches(received.request) and receiver.receive_request(received.request) is None
    assert receiver.state == DialogState.TERMINATED
    net.deliver(other, other.layer.send_response(make_response(received.request, 200), net.now))
    [done] = sender_peer.take(ResponseReceived)
    assert done.response.status == 200
    assert receiver.receive_request(received.request) == 481  # nothing is accepted after the BYE


def test_reinvite_moves_the_remote_target_and_cseq_order_is_enforced() -> None:
    call = Call(Network())
    alice, bob = call.alice_dialog, call.bob_dialog
    assert alice is not None
    alice.contact = NameAddress(parse_uri("sip:alice@198.51.100.20:6000"))
    hold = alice.new_request("INVITE", body=b"v=0\r\na=sendonly\r\n")
    assert hold.cseq.number == 102 and hold.headers.get("Contact") == "<sip:alice@198.51.100.20:6000>"
    assert bob.receive_request(hold) is None and str(bob.remote_target) == "sip:alice@198.51.100.20:6000"
    late = alice.new_request("INFO")
    late.headers.set("CSeq", "100 INFO")
    assert bob.receive_request(late) == 500
    bob.contact = NameAddress(parse_uri("sip:bot@203.0.113.5"))
    ok = make_response(hold, 200, headers=[("Contact", str(bob.contact))])
    alice.receive_response(hold, ok)
    assert str(alice.remote_target) == "sip:bot@203.0.113.5"
    update = bob.new_request("UPDATE", headers=[("Session-Expires", "1800;refresher=uas")])
    assert update.cseq.number == 1 and update.headers.get("Contact") == "<sip:bot@203.0.113.5>"
    assert alice.receive_request(update) is None and alice.remote_cseq == 1


def test_info_carries_a_body() -> None:
    call = Call(Network())
    info = call.bob_dialog.new_request("INFO", body=b"Signal=5\r\nDuration=160\r\n",
                                       content_type="application/dtmf-relay")
    parsed = parse_message(info.to_bytes())
    assert isinstance(parsed, Request) and parsed.content_type == "application/dtmf-relay"
    assert parsed.body == b"Signal=5\r\nDuration=160\r\n" and parsed.headers.get("Contact") is None


def test_ack_and_cancel_are_not_new_requests() -> None:
    call = Call(Network())
    with pytest.raises(ValueError):
        call.bob_dialog.new_request("ACK")
    call.bob_dialog.bye()
    with pytest.raises(DialogError):
        call.bob_dialog.new_request("INFO")


def test_route_sets_are_reversed_for_the_uac_and_strict_routers_get_the_request_uri() -> None:
    request = invite()
    request.headers.add("Record-Route", "<sip:p1.example.com;lr>")
    request.headers.add("Record-Route", "<sip:p2.example.com;lr>")
    bob = Dialog.for_uas(request, local_tag="b1", contact=BOB_CONTACT, via=BOB_VIA)
    ok = make_response(request, 200, to_tag="b1", headers=[("Contact", str(BOB_CONTACT))])
    alice = Dialog.for_uac(request, ok, contact=ALICE_CONTACT, via=ALICE_VIA)
    assert [str(h.uri) for h in bob.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert [str(h.uri) for h in alice.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    bye = alice.new_request("BYE")
    assert str(bye.uri) == "sip:bot@192.0.2.10:5060"
    assert [str(r.uri) for r in bye.route] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    alice.route_set = [parse_name_address("<sip:strict.example.com>")]
    strict = alice.new_request("BYE")
    assert str(strict.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in strict.route] == ["sip:bot@192.0.2.10:5060"]


def test_early_dialog_is_confirmed_by_the_2xx_with_a_new_route_set() -> None:
    request = invite()
    ringing = make_response(request, 180, to_tag="b1", headers=[("Contact", str(BOB_CONTACT)),
                                                                ("Record-Route", "<sip:early.example;lr>")])
    early = Dialog.for_uac(request, ringing, contact=ALICE_CONTACT, via=ALICE_VIA)
    assert early.state == DialogState.EARLY
    ok = make_response(request, 200, to_tag="b1", headers=[("Contact", str(BOB_CONTACT)),
                                                           ("Record-Route", "<sip:final.example;lr>")])
    early.receive_response(request, ok)
    assert early.state == DialogState.CONFIRMED and [str(h.uri) for h in early.route_set] == ["sip:final.example;lr"]
    early.receive_response(early.new_request("INFO"), make_response(request, 481))
    assert early.state == DialogState.TERMINATED


def test_dialog_needs_tags_and_one_contact() -> None:
    untagged = invite()
    untagged.headers.set("From", "<sip:alice@example.com>")
    with pytest.raises(DialogError):
        Dialog.for_uas(untagged, local_tag="b1", contact=BOB_CONTACT, via=BOB_VIA)
    request = invite()
    request.headers.remove("Contact")
    with pytest.raises(DialogError):
        Dialog.for_uas(request, local_tag="b1", contact=BOB_CONTACT, via=BOB_VIA)
    with pytest.raises(DialogError):
        Dialog.for_uac(invite(), make_response(invite(), 200), contact=ALICE_CONTACT, via=ALICE_VIA)


# --- REFER ------------------------------------------------------------------------------------------------


def test_blind_transfer_refer_and_notify_round_trip() -> None:
    call = Call(Network())
    net, bob, alice = call.net, call.bob_dialog, call.alice_dialog
    assert alice is not None
    me = NameAddress(parse_uri("sip:bot@192.0.2.10"))
    refer = bob.new_request("REFER", headers=refer_headers(parse_uri("sip:human@pbx.example.com"), referred_by=me))
    assert refer.headers.get("Contact") == str(BOB_CONTACT)
    net.deliver(net.bob, net.bob.layer.send_request(refer, ALICE, net.now)[1])
    [received] = net.alice.take(RequestReceived)
    referral = parse_refer(received.request)
    assert str(referral.target.uri) == "sip:human@pbx.example.com" and referral.referred_by == me
    assert alice.receive_request(received.request) is None
    net.deliver(net.alice, net.alice.layer.send_response(make_response(received.request, 202), net.now))
    outcomes = []
    for status, ended in ((100, False), (200, True)):
        notify = alice.new_request("NOTIFY", headers=notify_headers(terminated=ended), body=sipfrag(status))
        net.deliver(net.alice, net.alice.layer.send_request(notify, BOB, net.now)[1])
        [got] = net.bob.take(RequestReceived)
        assert bob.receive_request(got.request) is None
        outcomes.append(parse_refer_notify(got.request))
    assert [(o.status, o.final, o.subscription_ended, o.succeeded) for o in outcomes] == [
        (100, False, False, False), (200, True, True, True)]
    assert [e.response.status for e in net.bob.take(ResponseReceived)] == [202]


def test_refer_with_replaces_and_tel_targets() -> None:
    request = invite()
    request.method = "REFER"
    request.headers.set("Refer-To", "<sip:agent@pbx.example.com?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>")
    assert parse_refer(request).replaces == "abc@h;to-tag=1;from-tag=2"
    assert refer_headers(parse_uri("tel:+15551234567")) == [("Refer-To", "<tel:+15551234567>")]
    request.headers.remove("Refer-To")
    with pytest.raises(HeaderError):
        parse_refer(request)


@pytest.mark.parametrize("body", [b"", b"hello", b"SIP/2.0 99 x", b"SIP/2.0 200 \xff", b"SIP/2.0 200 OK" * 400])
def test_bad_sipfrags(body: bytes) -> None:
    with pytest.raises(HeaderError):
        parse_sipfrag(body)
    assert parse_sipfrag(b"SIP/2.0 486 Busy Here\r\n") == (486, "Busy Here")


def test_refer_notify_needs_its_headers() -> None:
    call = Call(Network())
    notify = call.bob_dialog.new_request("NOTIFY", headers=notify_headers(terminated=False), body=sipfrag(180))
    assert parse_refer_notify(notify).status == 180
    notify.headers.set("Event", "dialog")
    with pytest.raises(HeaderError):
        parse_refer_notify(notify)


# --- session timers (RFC 4028) ----------------------------------------------------------------------------


def with_headers(*headers: tuple[str, str]) -> Request:
    return invite(list(headers))


def test_uas_grants_the_asked_interval_and_lets_the_uac_refresh_when_asked() -> None:
    timer = answer_session_timer(with_headers(("Supported", "timer"), ("Session-Expires", "600;refresher=uac")),
                                 SessionTimerPolicy())
    assert timer == SessionTimer(600, "uac", we_refresh=False, required=True)
    assert timer.headers() == [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]
    assert timer.refresh_at(100.0) == 400.0 and timer.expires_at(100.0) == 100.0 + 600 - 32


def test_uas_caps_the_interval_and_refreshes_itself_for_a_uac_without_timers() -> None:
    timer = answer_session_timer(with_headers(("Session-Expires", "7200")), SessionTimerPolicy(interval=1800))
    assert isinstance(timer, SessionTimer)
    assert (timer.interval, timer.refresher, timer.we_refresh) == (1800, "uas", True)
    assert not timer.required and timer.headers() == [("Session-Expires", "1800;refresher=uas")]
    plain = answer_session_timer(invite(), SessionTimerPolicy())
    assert isinstance(plain, SessionTimer) and plain.interval == 1800 and plain.refresher == "uas"


def test_too_small_an_interval_gets_422_and_the_uac_retries_higher() -> None:
    policy = SessionTimerPolicy(min_se=300)
    refused = answer_session_timer(with_headers(("Supported", "timer"), ("Session-Expires", "120")), policy)
    assert refused == IntervalTooSmall(300) and refused.headers() == [("Min-SE", "300")]
    reply = make_response(invite(), 422, headers=refused.headers())
    retry = SessionTimerPolicy(interval=120, min_se=90).after_422(reply)
    assert (retry.interval, retry.min_se) == (300, 300)
    assert ("Session-Expires", "300") in retry.request_headers()


def test_uas_respects_the_request_min_se() -> None:
    timer = answer_session_timer(with_headers(("Supported", "timer"), ("Min-SE", "1000")),
                                 SessionTimerPolicy(interval=600))
    assert isinstance(timer, SessionTimer) and timer.interval == 1000


def test_uac_reads_the_uas_decision() -> None:
    ok = make_response(invite(), 200, to_tag="b", headers=[("Session-Expires", "900;refresher=uac"),
                                                           ("Require", "timer")])
    assert accept_session_timer(ok) == SessionTimer(900, "uac", we_refresh=True, required=True)
    assert accept_session_timer(make_response(invite(), 200, to_tag="b")) is None


@pytest.mark.parametrize("value", ["abc", "600;refresher=me", "-5", "1" * 11])
def test_bad_session_expires(value: str) -> None:
    with pytest.raises(HeaderError):
        parse_session_expires(value)


def test_responses_build_from_dialog_requests_parse() -> None:
    call = Call(Network())
    request = call.bob_dialog.new_request("OPTIONS")
    reply = make_response(request, 200)
    parsed = parse_message(reply.to_bytes())
    assert isinstance(parsed, Response) and parsed.to.tag == "a1" and isinstance(request.uri, SipUri)
    assert isinstance(Transmit(reply, ALICE, reply.to_bytes()).data, bytes)

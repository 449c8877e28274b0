"""SIP transactions: RFC 3261 timers and retransmissions on an explicit clock, through real bytes."""

from __future__ import annotations

import pytest

from tests.sip_network import ALICE, BOB, Network, Peer
from voxgate.sip.headers import NameAddress, Via, new_branch
from voxgate.sip.message import Request, Response, make_response, new_request, parse_message
from voxgate.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerInviteTransaction,
    State,
    Timers,
    TransactionLayer,
    TransactionTimedOut,
    Transmit,
    ack_for,
    cancel_for,
)
from voxgate.sip.uri import parse_uri


def request(method: str, *, branch: str | None = None, cseq: int = 1, call_id: str = "c1") -> Request:
    via = Via("UDP", ALICE[0], ALICE[1], (("branch", branch or new_branch()),))
    return new_request(method, parse_uri("sip:bob@192.0.2.10"), via=via,
                       from_=NameAddress(parse_uri("sip:alice@example.com"), params=(("tag", "a1"),)),
                       to=NameAddress(parse_uri("sip:bob@example.com")), call_id=call_id, cseq=cseq,
                       contact=NameAddress(parse_uri("sip:alice@192.0.2.1:5062")))


def count_sent(peer_sent: list[bytes], start_line: bytes) -> int:
    return sum(1 for data in peer_sent if data.startswith(start_line))


def send_times(net: Network, peer: Peer, *, until: float) -> list[float]:
    """Step the clock timer by timer up to `until`; when did `peer` send something?"""
    times = []
    while net.now < until:
        before = len(peer.sent)
        net.advance(peer.layer.next_deadline() or until)
        if len(peer.sent) > before:
            times.append(net.now)
    return times


def only(items: list) -> object:
    assert len(items) == 1, items
    return items[0]


def server_request(net: Network) -> RequestReceived:
    received = only(net.bob.take(RequestReceived))
    assert isinstance(received, RequestReceived)
    return received


def call(net: Network) -> tuple[Request, ClientTransaction | None, RequestReceived]:
    """Alice sends an INVITE; Bob's core receives it."""
    invite = request("INVITE")
    client, events = net.alice.layer.send_request(invite, BOB, net.now)
    net.deliver(net.alice, events)
    return invite, client, server_request(net)


def bob_answers(net: Network, received: RequestReceived, status: int, **kwargs: object) -> Response:
    response = make_response(received.request, status, to_tag="b1", **kwargs)  # type: ignore[arg-type]
    net.deliver(net.bob, net.bob.layer.send_response(response, net.now))
    return response


# --- client INVITE ------------------------------------------------------------------------------------------


def test_invite_retransmits_with_timer_a_then_times_out_with_b() -> None:
    net = Network()
    for _ in range(7):
        net.drop(lambda data: data.startswith(b"INVITE"))
    _, events = net.alice.layer.send_request(request("INVITE"), BOB, net.now)
    net.deliver(net.alice, events)
    assert send_times(net, net.alice, until=40) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: T1, doubling
    timeout = only(net.alice.take(TransactionTimedOut))
    assert isinstance(timeout, TransactionTimedOut) and timeout.transaction.state == State.TERMINATED
    assert net.alice.layer.client_transactions == 0 and net.alice.layer.next_deadline() is None


def test_reliable_transport_sends_once_and_still_times_out() -> None:
    net = Network(reliable=True)
    net.drop(lambda data: data.startswith(b"INVITE"))
    _, events = net.alice.layer.send_request(request("INVITE"), BOB, net.now, reliable=True)
    net.deliver(net.alice, events)
    net.advance(31.9)
    assert net.alice.events(TransactionTimedOut) == [] and len(net.alice.sent) == 1
    net.advance(32.0)
    assert len(net.alice.events(TransactionTimedOut)) == 1 and len(net.alice.sent) == 1


def test_server_answers_100_at_once_and_absorbs_retransmitted_invites() -> None:
    net = Network()
    net.drop(lambda data: data.startswith(b"SIP/2.0 100"))  # the first 100 is lost: Alice retransmits
    _, events = net.alice.layer.send_request(request("INVITE"), BOB, net.now)
    net.deliver(net.alice, events)
    assert len(net.bob.events(RequestReceived)) == 1
    net.advance(0.5)  # Timer A fires, Bob answers the retransmission with the 100 again
    assert len(net.bob.events(RequestReceived)) == 1, "a retransmission must not reach the core"
    assert net.bob.layer.counters.retransmissions_absorbed == 1
    trying = only(net.alice.take(ResponseReceived))
    assert isinstance(trying, ResponseReceived) and trying.response.status == 100
    net.advance(40)
    assert count_sent(net.alice.sent, b"INVITE") == 2  # Proceeding: no more retransmissions
    assert net.alice.events(TransactionTimedOut) == []  # Timer B is off once a provisional came


def test_non_2xx_final_is_acked_by_the_client_and_retransmitted_until_then() -> None:
    net = Network()
    invite, client, received = call(net)
    net.drop(lambda data: data.startswith(b"SIP/2.0 486"))
    net.drop(lambda data: data.startswith(b"SIP/2.0 486"))
    bob_answers(net, received, 486)
    net.advance(0.5)  # Timer G: lost again
    assert net.alice.events(ResponseReceived)[-1].response.status == 100
    net.advance(1.5)  # third copy arrives: Alice ACKs it, reports it once
    busy = [e.response.status for e in net.alice.take(ResponseReceived)]
    assert busy == [100, 486]
    assert count_sent(net.bob.sent, b"SIP/2.0 486") == 3  # G: 0, 0.5, 1.5
    ack = parse_message(next(d for d in net.alice.sent if d.startswith(b"ACK")))
    assert isinstance(ack, Request) and ack.via[0].branch == invite.via[0].branch  # the INVITE's branch
    assert ack.to.tag == "b1" and ack.cseq.number == 1 and ack.cseq.method == "ACK"
    assert isinstance(client, ClientInviteTransaction) and client.state == State.COMPLETED
    server = received.transaction
    assert isinstance(server, ServerInviteTransaction) and server.state == State.CONFIRMED
    assert net.bob.events(RequestReceived) == []  # the ACK to a non-2xx stays in the transaction
    net.advance(40)
    assert count_sent(net.bob.sent, b"SIP/2.0 486") == 3  # no retransmission after the ACK
    assert net.alice.layer.client_transactions == 0 and net.bob.layer.server_transactions == 0


def test_timer_g_doubles_to_t2_and_h_gives_up() -> None:
    net = Network()
    _, _, received = call(net)
    for _ in range(20):
        net.drop(lambda data: data.startswith(b"SIP/2.0 480"))
    bob_answers(net, received, 480)
    times = send_times(net, net.bob, until=33)
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]  # doubling up to T2 = 4 s
    assert times[-1] == 31.5
    timed_out = only(net.bob.take(TransactionTimedOut))
    assert isinstance(timed_out, TransactionTimedOut) and timed_out.transaction is received.transaction


def test_2xx_retransmissions_reach_the_core_and_the_ack_is_a_new_transaction() -> None:
    net = Network()
    invite, client, received = call(net)
    ok = bob_answers(net, received, 200, headers=[("Contact", "<sip:bob@192.0.2.10>")])
    assert isinstance(received.transaction, ServerInviteTransaction)
    assert received.transaction.state == State.ACCEPTED
    net.deliver(net.bob, [Transmit(ok, ALICE, ok.to_bytes())])  # the UAS core retransmits its 2xx
    statuses = [e.response.status for e in net.alice.take(ResponseReceived)]
    assert statuses == [100, 200, 200]  # each 2xx goes up: the core ACKs each
    # the INVITE retransmitted in Accepted is absorbed (RFC 6026), not a new call
    net.deliver(net.alice, [Transmit(invite, BOB, invite.to_bytes())])
    assert net.bob.events(RequestReceived) == []
    ack = request("ACK")
    ack.headers.set("CSeq", "1 ACK")
    net.deliver(net.alice, net.alice.layer.send_request(ack, BOB, net.now)[1])
    acked = only(net.bob.take(RequestReceived))
    assert isinstance(acked, RequestReceived) and acked.request.method == "ACK" and acked.transaction is None
    assert isinstance(client, ClientInviteTransaction) and client.state == State.ACCEPTED
    net.advance(32)  # Timers L and M
    assert net.alice.layer.client_transactions == 0 and net.bob.layer.server_transactions == 0
    # a 2xx after the client transaction ended is a stray for the core to ACK again
    stray = net.alice.layer.receive_response(ok, net.now)
    assert [type(e) for e in stray] == [ResponseReceived] and stray[0].transaction is None  # type: ignore[union-attr]


# --- client non-INVITE ------------------------------------------------------------------------------------


def test_non_invite_timer_e_caps_at_t2_then_f_times_out() -> None:
    net = Network()
    for _ in range(20):
        net.drop(lambda data: data.startswith(b"OPTIONS"))
    net.deliver(net.alice, net.alice.layer.send_request(request("OPTIONS"), BOB, net.now)[1])
    assert send_times(net, net.alice, until=33) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(net.alice.take(TransactionTimedOut)) == 1


def test_non_invite_after_a_provisional_retransmits_every_t2() -> None:
    net = Network()
    net.deliver(net.alice, net.alice.layer.send_request(request("BYE"), BOB, net.now)[1])
    received = server_request(net)
    net.drop(lambda data: data.startswith(b"SIP/2.0 200"))
    bob_answers(net, received, 100)
    net.advance(0.5)  # E fires in Proceeding: the next comes T2 later
    before = count_sent(net.alice.sent, b"BYE")
    net.advance(4.4)
    assert count_sent(net.alice.sent, b"BYE") == before
    net.advance(4.5)
    assert count_sent(net.alice.sent, b"BYE") == before + 1
    assert count_sent(net.bob.sent, b"SIP/2.0 100") >= 2  # each retransmission got the 100 again


def test_server_non_invite_retransmits_its_final_and_lingers_for_timer_j() -> None:
    net = Network()
    bye = request("BYE")
    net.deliver(net.alice, net.alice.layer.send_request(bye, BOB, net.now)[1])
    received = server_request(net)
    net.drop(lambda data: data.startswith(b"SIP/2.0 200"))
    bob_answers(net, received, 200)
    net.advance(0.5)  # Alice retransmits; Bob repeats the 200 from the transaction
    assert [e.response.status for e in net.alice.take(ResponseReceived)] == [200]
    assert net.bob.events(RequestReceived) == []
    net.advance(31.9)
    assert net.bob.layer.server_transactions == 1  # Timer J: 64*T1 over UDP
    net.advance(32.1)
    assert net.bob.layer.server_transactions == 0 and net.alice.layer.client_transactions == 0


# --- CANCEL -------------------------------------------------------------------------------------------------


def test_cancel_waits_for_a_provisional_then_487_is_acked() -> None:
    net = Network()
    net.drop(lambda data: data.startswith(b"INVITE"))  # nothing from Bob yet
    invite = request("INVITE")
    client, events = net.alice.layer.send_request(invite, BOB, net.now)
    net.deliver(net.alice, events)
    assert isinstance(client, ClientInviteTransaction)
    assert net.alice.layer.cancel(client, net.now) == []  # deferred: no provisional yet (§9.1)
    net.advance(0.5)  # the retransmitted INVITE arrives; the 100 Trying releases the CANCEL
    cancel = parse_message(next(d for d in net.alice.sent if d.startswith(b"CANCEL")))
    assert isinstance(cancel, Request) and cancel.via[0].branch == invite.via[0].branch
    assert cancel.cseq.number == invite.cseq.number and cancel.cseq.method == "CANCEL"
    seen = {e.request.method: e for e in net.bob.take(RequestReceived)}
    invite_seen, cancel_seen = seen["INVITE"], seen["CANCEL"]
    target = net.bob.layer.invite_for_cancel(cancel_seen.request)
    assert target is invite_seen.transaction and target.state == State.PROCEEDING
    bob_answers(net, cancel_seen, 200)
    bob_answers(net, invite_seen, 487)
    statuses = sorted((e.response.cseq.method, e.response.status) for e in net.alice.take(ResponseReceived))
    assert statuses == [("CANCEL", 200), ("INVITE", 100), ("INVITE", 487)]
    assert target.state == State.CONFIRMED  # Alice's layer ACKed the 487
    assert net.alice.layer.cancel(client, net.now) == []  # too late: a final response came


def test_cancel_matching_nothing() -> None:
    layer = TransactionLayer()
    assert layer.invite_for_cancel(cancel_for(request("INVITE"))) is None


def test_cancel_that_gets_no_final_answer_times_out() -> None:
    net = Network()
    _, client, _ = call(net)
    assert isinstance(client, ClientInviteTransaction)
    net.deliver(net.alice, net.alice.layer.cancel(client, net.now))
    bob_answers(net, server_request(net), 200)  # the CANCEL is answered; the INVITE never is
    net.advance(31.9)
    assert net.alice.events(TransactionTimedOut) == []
    net.advance(32.0)
    assert [t.transaction for t in net.alice.events(TransactionTimedOut)] == [client]


# --- matching and bounds ------------------------------------------------------------------------------------


def test_response_with_two_vias_is_discarded() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    layer.send_request(invite, BOB, 0.0)
    response = make_response(invite, 200, to_tag="x")
    response.headers.add("Via", "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23")
    assert layer.receive_response(response, 0.0) == [] and layer.counters.responses_discarded == 1


def test_stray_non_2xx_response_is_dropped() -> None:
    layer = TransactionLayer()
    assert layer.receive_response(make_response(request("OPTIONS"), 200, to_tag="x"), 0.0) == []
    assert layer.counters.responses_discarded == 1


def test_rfc2543_requests_match_without_the_magic_cookie() -> None:
    layer = TransactionLayer()
    old = request("OPTIONS", branch="z9hG4bK")  # RFC 4475 badbranch: the bare cookie is no identifier
    first = layer.receive_request(old, ALICE, 0.0)
    assert [type(e) for e in first] == [RequestReceived]
    again = parse_message(old.to_bytes())
    assert isinstance(again, Request) and layer.receive_request(again, ALICE, 0.1) == []
    events = layer.send_response(make_response(old, 200, to_tag="t"), 0.2)
    assert [type(e) for e in events] == [Transmit]
    other = request("OPTIONS", branch="z9hG4bK", cseq=2)
    assert [type(e) for e in layer.receive_request(other, ALICE, 0.3)] == [RequestReceived]


def test_flood_past_the_table_bound_is_answered_503_statelessly() -> None:
    layer = TransactionLayer(max_server_transactions=3)
    for n in range(3):
        assert any(isinstance(e, RequestReceived) for e in layer.receive_request(request("INVITE", call_id=f"f{n}"),
                                                                                 ALICE, 0.0))
    events = layer.receive_request(request("INVITE", call_id="f3"), ALICE, 0.0)
    [busy] = events
    assert isinstance(busy, Transmit) and isinstance(busy.message, Response) and busy.message.status == 503
    assert layer.server_transactions == 3 and layer.counters.overloaded == 1


def test_misuse_is_refused() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    with pytest.raises(LookupError):
        layer.send_response(make_response(invite, 200, to_tag="t"), 0.0)
    layer.send_request(invite, BOB, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(invite, BOB, 0.0)
    layer.receive_request(request("INVITE", branch="z9hG4bKsrv"), ALICE, 0.0)
    served = request("INVITE", branch="z9hG4bKsrv")
    layer.send_response(make_response(served, 486, to_tag="t"), 0.0)
    with pytest.raises(RuntimeError):
        layer.send_response(make_response(served, 200, to_tag="t"), 0.0)


def test_ack_for_copies_the_invite() -> None:
    invite = request("INVITE")
    invite.headers.add("Route", "<sip:edge.example;lr>")
    ack = ack_for(invite, make_response(invite, 404, to_tag="nf"))
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert ack.route[0].uri == invite.route[0].uri and ack.to.tag == "nf" and str(ack.uri) == str(invite.uri)


def test_custom_timers() -> None:
    layer = TransactionLayer(Timers(t1=0.1, t2=0.4))
    layer.send_request(request("OPTIONS"), BOB, 10.0)
    assert layer.next_deadline() == pytest.approx(10.1)
    assert [type(e) for e in layer.handle_timer(10.1)] == [Transmit]
    assert layer.next_deadline() == pytest.approx(10.3)

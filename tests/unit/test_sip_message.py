"""SIP URIs, typed header values and messages: parse, serialise, frame on a stream, bound, answer."""

from __future__ import annotations

import pytest

from voxgate.sip.headers import (
    CSeq,
    HeaderError,
    NameAddress,
    Via,
    new_branch,
    parse_cseq,
    parse_name_address,
    parse_name_addresses,
    parse_via,
    split_list,
)
from voxgate.sip.message import (
    BadRequest,
    FramingError,
    Headers,
    KeepAlive,
    MalformedMessage,
    MessageLimits,
    MessageStream,
    Request,
    Response,
    is_keepalive,
    make_response,
    new_request,
    parse_message,
)
from voxgate.sip.uri import OtherUri, SipUri, TelUri, UriError, parse_uri

INVITE = (
    b"INVITE sip:bot@192.0.2.10:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK-1;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-0;received=198.51.100.7\r\n"
    b"Max-Forwards: 70\r\n"
    b"Record-Route: <sip:proxy.example.com;lr>\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <sip:bot@192.0.2.10>\r\n"
    b"Call-ID: call-1@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5062>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def invite() -> Request:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    return message


# --- URIs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "sip:alice@example.com",
    "sip:+15551234567@trunk.example:5060;transport=tcp;user=phone",
    "sips:[2001:db8::1]:5061;lr",
    "sip:alice:secret@example.com?subject=hello&priority=urgent",
    "sip:192.0.2.1",
    "tel:+1-555-0100;ext=12",
    "tel:7042;phone-context=example.com",
])
def test_uris_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_uri_components() -> None:
    uri = parse_uri("SIP:Bob@Example.COM:5070;Transport=TCP;lr")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", "Bob", "example.com", 5070)
    assert uri.param("transport") == "TCP" and uri.param("lr") == "" and uri.param("maddr") is None
    assert uri.host_port == "example.com:5070" and not uri.secure
    assert str(uri.with_params(transport="udp")) == "sip:Bob@example.com:5070;lr;transport=udp"
    tel = parse_uri("tel:+1-555-0100")
    assert isinstance(tel, TelUri) and tel.digits == "+15550100"
    assert isinstance(parse_uri("mailto:a@b"), OtherUri)


@pytest.mark.parametrize("text", [
    "sip:", "sip:@host", "sip:host:99999", "sip:host:port", "sip:a b@host", "sip:[::1", "sip:[zz::1]",
    "sip:host;=x", "sip:300.1.1.1", "sip:-bad-.example.com", "tel:12345", "tel:+", "no-colon", "1x:rest",
    "sip:host?noequals", "sip:" + "a" * 3000,
])
def test_bad_uris_raise_uri_error(text: str) -> None:
    with pytest.raises(UriError) as caught:
        parse_uri(text)
    assert caught.value.code


# --- header values -----------------------------------------------------------------------------------------


def test_via_values() -> None:
    [via] = parse_via("SIP/2.0/udp 192.0.2.1:5062;branch=z9hG4bKx;rport;received=192.0.2.99;ttl=4")
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.1", 5062)
    assert via.branch == "z9hG4bKx" and via.rfc3261_branch and via.wants_rport and via.rport is None
    assert via.received == "192.0.2.99"
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKx;rport;received=192.0.2.99;ttl=4"
    assert via.with_params(rport="5062").rport == 5062
    v6 = parse_via("SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bK1")[0]
    assert v6.host == "[2001:db8::9]" and v6.port == 5061
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()


@pytest.mark.parametrize("value", ["", "SIP/2.0 host", "HTTP/1.1/TCP host", "SIP/2.0/UDP", "SIP/2.0/UDP host;ttl=999",
                                   "SIP/2.0/UDP host;branch=", "SIP/2.0/UDP host:70000", "SIP/2.0/UDP host junk"])
def test_bad_vias(value: str) -> None:
    with pytest.raises(HeaderError):
        parse_via(value)


def test_name_addresses() -> None:
    address = parse_name_address('"Doe, \\"J\\"" <sip:j@example.com;transport=tcp>;tag=x9;expires=60')
    assert address.display_name == 'Doe, "J"' and address.tag == "x9" and address.param("expires") == "60"
    assert isinstance(address.uri, SipUri) and address.uri.param("transport") == "tcp"
    assert str(address) == '"Doe, \\"J\\"" <sip:j@example.com;transport=tcp>;tag=x9;expires=60'
    assert str(NameAddress(parse_uri("sip:a@b"), "Agent Smith").with_tag("t")) == "Agent Smith <sip:a@b>;tag=t"
    bare = parse_name_address("sip:a@b;tag=1")
    assert bare.tag == "1" and isinstance(bare.uri, SipUri) and bare.uri.params == ()
    hops = parse_name_addresses("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>,sip:p3.example.com")
    assert [str(h.uri) for h in hops] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr", "sip:p3.example.com"]
    assert split_list('a, "b,c" <sip:x>, <sip:y;p=1,2>') == ['a', '"b,c" <sip:x>', "<sip:y;p=1,2>"]


@pytest.mark.parametrize("value", ['"unterminated <sip:a@b>', "<sip:a@b", "Bell, A <sip:a@b>", "<sip:a@b>;;tag=1",
                                   "<sip:a@b> junk", "", '"x"', "< sip:a@b>"])
def test_bad_name_addresses(value: str) -> None:
    with pytest.raises(HeaderError):
        parse_name_address(value)


def test_cseq() -> None:
    assert parse_cseq(" 42   BYE ") == CSeq(42, "BYE") and str(CSeq(42, "BYE")) == "42 BYE"
    for bad in ("BYE", "1", "2147483648 INVITE", "1 INVITE x", "-1 BYE"):
        with pytest.raises(HeaderError):
            parse_cseq(bad)


# --- messages ----------------------------------------------------------------------------------------------


def test_parse_invite() -> None:
    msg = invite()
    assert msg.method == "INVITE" and str(msg.uri) == "sip:bot@192.0.2.10:5060"
    assert [v.branch for v in msg.via] == ["z9hG4bK-1", "z9hG4bK-0"]
    assert msg.from_.tag == "a1" and msg.to.tag is None and msg.call_id == "call-1@192.0.2.1"
    assert msg.cseq == CSeq(1, "INVITE") and msg.max_forwards == 70
    assert [str(c.uri) for c in msg.contacts] == ["sip:alice@192.0.2.1:5062"]
    assert msg.content_type == "application/sdp" and msg.body == b"v=0\n"


def test_serialise_round_trip() -> None:
    msg = invite()
    again = parse_message(msg.to_bytes())
    assert isinstance(again, Request)
    assert list(again.headers) == list(msg.headers) and again.body == msg.body
    assert again.to_bytes() == msg.to_bytes()


def test_compact_forms_and_case_are_one_header() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("VIA", "SIP/2.0/UDP b;branch=z9hG4bK2"),
                       ("i", "x@y"), ("l", "0")])
    assert headers.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]
    assert headers.get("call-id") == "x@y" and "Content-Length" in headers and "Route" not in headers
    assert [name for name, _ in headers] == ["Via", "Via", "Call-ID", "Content-Length"]
    headers.set("Via", "SIP/2.0/UDP c;branch=z9hG4bK3")
    assert headers.get_all("Via") == ["SIP/2.0/UDP c;branch=z9hG4bK3"] and len(headers) == 3
    headers.remove("i")
    assert headers.get("Call-ID") is None and headers.count("Via") == 1


def test_typed_views_follow_header_changes() -> None:
    msg = invite()
    assert msg.cseq.number == 1
    msg.headers.set("CSeq", "2 INVITE")
    assert msg.cseq.number == 2


def test_make_response_copies_what_rfc3261_says() -> None:
    msg = invite()
    ok = make_response(msg, 200, to_tag="b2", headers=[("Contact", "<sip:bot@192.0.2.10>")], body=b"v=0\r\n")
    assert ok.headers.get_all("Via") == msg.headers.get_all("Via")
    assert ok.headers.get("From") == msg.headers.get("From") and ok.to.tag == "b2"
    assert ok.headers.get_all("Record-Route") == ["<sip:proxy.example.com;lr>"]
    assert ok.cseq == msg.cseq and ok.call_id == msg.call_id and ok.content_type == "application/sdp"
    parsed = parse_message(ok.to_bytes())
    assert isinstance(parsed, Response) and (parsed.status, parsed.reason) == (200, "OK")
    trying = make_response(msg, 100, to_tag="b2")
    assert trying.to.tag is None and not trying.headers.get_all("Record-Route")  # 100 carries no tag
    tagged = parse_message(INVITE.replace(b"To: <sip:bot@192.0.2.10>", b"To: <sip:bot@192.0.2.10>;tag=old"))
    assert isinstance(tagged, Request) and make_response(tagged, 200, to_tag="new").to.tag == "old"


def test_new_request_is_parseable() -> None:
    via = Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bKabc"), ("rport", None)))
    req = new_request("OPTIONS", parse_uri("sip:trunk.example"), via=via,
                      from_=NameAddress(parse_uri("sip:bot@192.0.2.10"), params=(("tag", "f"),)),
                      to=NameAddress(parse_uri("sip:trunk.example")), call_id="c1", cseq=7,
                      route=[parse_name_address("<sip:edge.example;lr>")], headers=[("Accept", "application/sdp")])
    parsed = parse_message(req.to_bytes())
    assert isinstance(parsed, Request) and parsed.method == "OPTIONS" and parsed.cseq == CSeq(7, "OPTIONS")
    assert parsed.max_forwards == 70 and [str(r.uri) for r in parsed.route] == ["sip:edge.example;lr"]


def test_datagram_framing() -> None:
    no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse_message(no_length).body == b"v=0\n"  # without Content-Length a datagram's rest is the body
    extra = parse_message(INVITE + b"trailing junk")
    assert extra.body == b"v=0\n"
    with pytest.raises(BadRequest):
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: 40"))
    with pytest.raises(MalformedMessage) as caught:
        parse_message(INVITE[:60])
    assert caught.value.code == "truncated"
    assert parse_message(b"\r\n\r\n" + INVITE).body == b"v=0\n"  # leading CRLFs are ignored
    assert is_keepalive(b"\r\n\r\n") and not is_keepalive(INVITE)


def test_an_ack_is_never_answered() -> None:
    bad_ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"CSeq: 1 INVITE", b"CSeq: 1 INVITE x")
    with pytest.raises(MalformedMessage):
        parse_message(bad_ack)


def test_limits() -> None:
    limits = MessageLimits(max_message_bytes=2000, max_head_bytes=600, max_headers=12, max_body_bytes=3)
    with pytest.raises(MalformedMessage):
        parse_message(INVITE + b" " * 2000, limits)
    with pytest.raises(BadRequest) as caught:
        parse_message(INVITE, limits)
    assert caught.value.code == "body_too_large"
    many = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-Pad: 1\r\n" * 20)
    with pytest.raises(BadRequest) as caught:
        parse_message(many, MessageLimits(max_headers=12))
    assert caught.value.code == "too_many_headers"
    with pytest.raises(MalformedMessage) as dropped:
        parse_message(INVITE, MessageLimits(max_head_bytes=100))
    assert dropped.value.code == "head_too_large"


def test_non_utf8_and_garbage() -> None:
    with pytest.raises(MalformedMessage):
        parse_message(INVITE.replace(b"Alice", b"Al\xffce"))
    with pytest.raises(MalformedMessage):
        parse_message(b"\x00\x01\x02\r\n\r\n")
    with pytest.raises(BadRequest):
        parse_message(INVITE.replace(b"Max-Forwards: 70", b"Bad Header Line"))


# --- stream framing ----------------------------------------------------------------------------------------


def test_stream_frames_messages_split_anywhere() -> None:
    two = INVITE + INVITE.replace(b"CSeq: 1", b"CSeq: 2")
    for cut in (1, 7, len(INVITE) - 2, len(INVITE), len(INVITE) + 5):
        stream = MessageStream()
        stream.receive_data(two[:cut])
        got = []
        while (item := stream.next_message()) is not None:
            got.append(item)
        stream.receive_data(two[cut:])
        while (item := stream.next_message()) is not None:
            got.append(item)
        assert [m.cseq.number for m in got if isinstance(m, Request)] == [1, 2]


def test_stream_keepalives() -> None:
    stream = MessageStream()
    stream.receive_data(b"\r\n\r\n")
    item = stream.next_message()
    assert isinstance(item, KeepAlive) and item.ping
    stream.receive_data(b"\r\n")
    assert stream.next_message() is None  # maybe the start of a ping
    stream.receive_data(INVITE)
    pong = stream.next_message()
    assert isinstance(pong, KeepAlive) and not pong.ping
    assert isinstance(stream.next_message(), Request)


def test_stream_bad_message_then_good_one() -> None:
    stream = MessageStream()
    stream.receive_data(INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: x") + INVITE)
    with pytest.raises(BadRequest):
        stream.next_message()
    assert isinstance(stream.next_message(), Request)


@pytest.mark.parametrize("data", [
    INVITE.replace(b"Content-Length: 4", b"Content-Length: many"),
    INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nl: 4"),
    INVITE.replace(b"Content-Length: 4", b"Content-Length: 99999999"),
])
def test_stream_framing_errors(data: bytes) -> None:
    stream = MessageStream()
    stream.receive_data(data)
    with pytest.raises(FramingError):
        stream.next_message()


def test_stream_bounds_an_endless_head() -> None:
    stream = MessageStream(MessageLimits(max_head_bytes=1000))
    stream.receive_data(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 200)
    with pytest.raises(FramingError):
        stream.next_message()


def test_every_core_error_is_a_sip_error_with_a_code() -> None:
    from voxgate.sip.dialog import DialogError
    from voxgate.sip.digest import DigestError
    from voxgate.sip.dtmf import DtmfError
    from voxgate.sip.errors import SipError
    from voxgate.sip.rtcp import RtcpError
    from voxgate.sip.rtp import RtpError
    from voxgate.sip.sdes import SdesError
    from voxgate.sip.sdp import OfferRejected, SdpError

    kinds = [UriError, HeaderError, BadRequest, MalformedMessage, FramingError, DialogError, DigestError,
             DtmfError, RtcpError, RtpError, SdesError, SdpError, OfferRejected]
    for kind in kinds:
        assert issubclass(kind, SipError)
    assert {UriError("x").code, HeaderError("x").code, SdpError("x").code, RtpError("x").code} == {
        "bad_uri", "bad_header", "bad_sdp", "bad_rtp"}
    assert HeaderError("x", "bad_via").code == "bad_via"

"""The RFC 4475 SIP torture messages against the message parser.

tests/data/sip/rfc4475/<name>.dat holds each message of RFC 4475 §3 as bytes (CRLF line ends, the RFC's
<repeat> and <hex> notation expanded, Content-Length equal to the body's length except where the test is
about Content-Length). Written from the RFC's text; where the text could not be recalled to the octet the
message keeps the property the test is named for. Well-formed messages must parse to the right values;
malformed ones must raise BadRequest (answered 400, or 505 for another version) or MalformedMessage
(dropped: a response, or a request whose Via cannot be read), never anything else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from voxgate.sip.headers import MAGIC_COOKIE
from voxgate.sip.message import BadRequest, MalformedMessage, Request, Response, make_response, parse_message
from voxgate.sip.uri import OtherUri, SipUri, unescape

DATA = Path(__file__).parent.parent / "data" / "sip" / "rfc4475"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request(name: str) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    return message


# --- 3.1.1: valid messages --------------------------------------------------------------------------------


def test_wsinv_short_tortuous_invite() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri) and msg.uri.param("unknownparam") == ""
    assert msg.to.tag == "1918181833n" and str(msg.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert msg.from_.display_name == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    [contact] = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    [route] = msg.route
    assert isinstance(route.uri, SipUri) and route.uri.param("lr") == "" and route.uri.param("unknown-no-value") == ""
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n") and msg.content_type == "application/sdp"


def test_intmeth_wide_range_of_valid_characters() -> None:
    msg = request("intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~" == msg.cseq.method
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.param("fromparam''~+*_!.-%") == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.via[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_valid_percent_escapes() -> None:
    msg = request("esc01")
    assert isinstance(msg.uri, SipUri) and unescape(msg.uri.user or "") == "sips:user@example.com"
    assert isinstance(msg.to.uri, SipUri) and unescape(msg.to.uri.user or "") == "user"
    assert isinstance(msg.from_.uri, SipUri) and unescape(msg.from_.uri.user or "") == "I have spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact `i:`
    [contact] = msg.contacts
    assert isinstance(contact.uri, SipUri) and contact.uri.param("%6c%72") == ""
    assert msg.content_type == "application/sdp"  # compact `C:`


def test_escnull_escaped_nulls() -> None:
    msg = request("escnull")
    assert isinstance(msg.to.uri, SipUri) and unescape(msg.to.uri.user or "") == "null-\x00-null"
    assert [unescape(c.uri.user or "") for c in msg.contacts if isinstance(c.uri, SipUri)] == ["\x00", "\x00\x00"]
    assert msg.body == b""


def test_esc02_percent_that_is_not_an_escape() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R"  # a token, not REGISTER
    assert msg.to.display_name == "%Z%45"
    assert [str(c.uri) for c in msg.contacts] == ["sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"  # an unknown header


def test_lwsdisp_no_space_before_angle_bracket() -> None:
    assert request("lwsdisp").from_.display_name == "caller"


def test_longreq_long_values() -> None:
    msg = request("longreq")
    assert len(msg.via) == 34 and msg.via[0].host == "sip33.example.com"
    assert msg.via[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.port == 6000
    assert msg.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"


def test_dblreq_extra_octets_after_the_body_are_ignored() -> None:
    msg = request("dblreq")
    assert msg.method == "REGISTER" and msg.body == b""


def test_semiuri_semicolons_in_the_user_part() -> None:
    msg = request("semiuri")
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "user;par=u%40example.net" and msg.uri.host == "example.com" and msg.uri.params == ()
    assert msg.headers.values("Accept") == ["application/sdp", "application/pkcs7-mime", "multipart/mixed",
                                            "multipart/signed", "message/sip", "message/sipfrag"]


def test_transports_varied_and_unknown() -> None:
    assert [v.transport for v in request("transports").via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_multipart_body() -> None:
    msg = request("mpart01")
    assert msg.content_type == "multipart/mixed" and b"\x00\xff\xfe" in msg.body
    assert len(msg.body) == int(msg.headers.get("Content-Length") or -1)


def test_unreason_and_noreason_reason_phrases() -> None:
    unusual = parse_message(load("unreason"))
    assert isinstance(unusual, Response) and unusual.status == 200
    assert unusual.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    empty = parse_message(load("noreason"))
    assert isinstance(empty, Response) and (empty.status, empty.reason) == (100, "")


# --- 3.1.2: invalid messages ------------------------------------------------------------------------------

ANSWERED_400 = ["clerr", "ncl", "scalar02", "quotbal", "ltgtruri", "lwsruri", "lwsstart", "trws", "escruri",
                "baddate", "regbadct", "badaspec", "baddn", "mismatch01", "mismatch02", "insuf", "multi01",
                "mcl01"]


@pytest.mark.parametrize("name", ANSWERED_400)
def test_malformed_requests_are_answered_400(name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_message(load(name))
    assert caught.value.status == 400
    answer = caught.value.response(to_tag="abc")
    assert answer.to_bytes().startswith(b"SIP/2.0 400 Bad Request")
    assert answer.headers.get_all("Via") == caught.value.headers.get_all("Via")  # routed back the same way
    for name in ("From", "Call-ID", "CSeq"):  # copied as they came, even when they are what was wrong
        assert answer.headers.get(name) == caught.value.headers.get(name)


def test_badvers_is_answered_505() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_message(load("badvers"))
    assert caught.value.status == 505 and caught.value.response().reason == "Version Not Supported"


@pytest.mark.parametrize("name", ["badinv01", "scalarlg", "bigcode"])
def test_unanswerable_messages_are_dropped(name: str) -> None:
    """badinv01's Via cannot be read (nobody to answer); scalarlg and bigcode are responses."""
    with pytest.raises(MalformedMessage):
        parse_message(load(name))


# --- 3.2-3.4: transaction and application layer: valid syntax, decisions above the parser ------------------


def test_badbranch_is_an_rfc2543_branch() -> None:
    via = request("badbranch").via[0]
    assert via.branch == MAGIC_COOKIE and via.rfc3261_branch  # the transaction layer treats it as 2543


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_unknown_request_uri_schemes_parse_for_a_416(name: str) -> None:
    assert isinstance(request(name).uri, OtherUri)


def test_unknown_schemes_in_header_fields() -> None:
    msg = request("unksm2")
    assert isinstance(msg.to.uri, OtherUri) and str(msg.to.uri) == "isbn:2983792873"
    assert isinstance(msg.contacts[0].uri, OtherUri)


def test_contact_parameters_belong_to_the_header_or_the_uri() -> None:
    [bare] = request("cparam01").contacts
    assert bare.param("unknownparam") == "" and isinstance(bare.uri, SipUri) and bare.uri.params == ()
    [enclosed] = request("cparam02").contacts
    assert enclosed.params == () and isinstance(enclosed.uri, SipUri) and enclosed.uri.param("unknownparam") == ""
    [escaped] = request("regescrt").contacts
    assert isinstance(escaped.uri, SipUri) and escaped.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_inv2543_old_syntax_is_accepted() -> None:
    msg = request("inv2543")
    assert msg.via[0].branch is None and msg.from_.tag is None and msg.max_forwards is None
    assert msg.to.param("user") == "phone"  # an addr-spec's parameters belong to the header
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")


@pytest.mark.parametrize("name", ["bext01", "invut", "regaut01", "zeromf", "sdp01", "bcast"])
def test_application_layer_cases_parse(name: str) -> None:
    """These are well-formed: what to answer (420, 415, 401, 406, or dropping a response with two Vias)
    is decided above the parser; the endpoint's and the transaction layer's tests cover those answers."""
    message = parse_message(load(name))
    if isinstance(message, Request):
        reply = make_response(message, 200, to_tag="t1")
        assert parse_message(reply.to_bytes()).cseq == message.cseq

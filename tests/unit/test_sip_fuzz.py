"""Fuzzing the SIP, SDP, RTP, RTCP, DTMF and digest parsers: whatever arrives, a parser returns a typed
value or raises its documented error, never anything else, and what it accepts survives the next layer.

Inputs are raw bytes, mutations of well-formed messages (RFC 4475's and our own: bytes replaced, inserted,
deleted, lines repeated or dropped, header values swapped for SIP-ish text) and grammar-shaped text.
Thousands of cases per parser; pure cores, so it is fast. Hypothesis is derandomised by conftest.
A stateless parser gets its inputs in batches, bulky ones built from a seeded Random (tests/input_batches.py).
"""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.input_batches import BATCHED, batches, seeded, text_from
from tests.sip_network import ALICE
from voxgate.sip.dialog import Dialog, DialogError
from voxgate.sip.digest import DigestError, parse_challenge, parse_credentials
from voxgate.sip.dtmf import DtmfError, DtmfReceiver, parse_dtmf_info
from voxgate.sip.headers import HeaderError, NameAddress, Via, parse_name_addresses, parse_via
from voxgate.sip.jitter import JitterBuffer
from voxgate.sip.message import (
    BadRequest,
    FramingError,
    MessageError,
    MessageStream,
    Request,
    Response,
    make_response,
    parse_message,
)
from voxgate.sip.rtcp import RtcpError, parse_rtcp
from voxgate.sip.rtp import RtpError, RtpPacket, parse_rtp
from voxgate.sip.sdes import SdesError, parse_crypto
from voxgate.sip.sdp import SdpError, answer_offer, parse_sdp
from voxgate.sip.transaction import TransactionLayer
from voxgate.sip.uri import UriError, parse_uri

DATA = Path(__file__).parent.parent / "data" / "sip" / "rfc4475"
SEEDS = [path.read_bytes() for path in sorted(DATA.glob("*.dat"))]
SDP_SEED = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 6000 RTP/SAVP 0 8 101 111\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            b"a=fmtp:101 0-16\r\na=rtpmap:111 opus/48000/2\r\na=ptime:20\r\na=sendonly\r\n"
            b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n")
SIP_CHARS = list(" \t;:,=<>\"@/\\%.-_!*~'+`()[]?&$") + list("sipSIPtagbranchz9hG4bK0123456789")
sip_text = st.text(st.sampled_from(SIP_CHARS), max_size=40)


def _sip_text(rnd: random.Random) -> str:
    return text_from(rnd, SIP_CHARS, 40)


def _some_bytes(rnd: random.Random, low: int, high: int) -> bytes:
    """SIP-ish text most of the time, so most cases get past UTF-8 decoding into the grammar."""
    if rnd.random() < 0.5:
        return _sip_text(rnd).encode()[:high] or b"x"
    return rnd.randbytes(rnd.randint(low, high))


def mutate(data: bytearray, rnd: random.Random) -> bytes:
    """One to three edits: bytes replaced, inserted or deleted, a line repeated, a header's value swapped."""
    for _ in range(rnd.randint(1, 3)):
        if not data:
            break
        kind = rnd.choice(["replace", "insert", "delete", "line", "value"])
        at = rnd.randrange(len(data))
        if kind == "replace":
            data[at : at + rnd.randint(1, 8)] = _some_bytes(rnd, 1, 8)
        elif kind == "insert":
            data[at:at] = _some_bytes(rnd, 1, 16)
        elif kind == "delete":
            del data[at : at + rnd.randint(1, 40)]
        else:
            lines = bytes(data).split(b"\r\n")
            index = rnd.randrange(len(lines))
            if kind == "line":
                lines.insert(rnd.randint(0, len(lines)), lines[index])  # a repeated header
            else:
                name, colon, _ = lines[index].partition(b":")
                lines[index] = name + colon + b" " + _sip_text(rnd).encode()
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return seeded(lambda rnd: mutate(bytearray(rnd.choice(seeds)), rnd))


HEADER_VALUES = {
    "Via": ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport", "SIP/2.0/TCP h;branch=z9hG4bK", "SIP/2.0/UDP [::1]",
            "SIP/2.0/UDP a;received=1.2.3.4, SIP/2.0/TLS b;branch=x", "SIP / 2.0 / UDP c ; branch = z9hG4bKq"],
    "From": ['"A" <sip:a@b>;tag=1', "sip:a@b;tag=2", "<tel:+1555>;tag=3", "<sip:a@b>", 'x <sip:a@[::1]:5>;tag=4'],
    "To": ["<sip:b@c>", "sip:b@c;tag=9", '"B, C" <sip:b@c>;tag=8', "<sips:b@c;transport=tls>"],
    "Call-ID": ["abc@host", "x", "a@b@c"],
    "CSeq": ["1 INVITE", "2 BYE", "3 OPTIONS", "1 ACK", "4294967295 INVITE"],
    "Contact": ["<sip:a@192.0.2.1:5062>", "*", "<sip:a@b>;expires=60, <sip:c@d>;q=0.5", "sip:x@y;unknown"],
    "Record-Route": ["<sip:p1;lr>, <sip:p2;lr>", "<sip:p3>"],
    "Route": ["<sip:edge.example;lr>"],
    "Max-Forwards": ["70", "0", "256"],
    "Content-Type": ["application/sdp", "message/sipfrag;version=2.0", "application/dtmf-relay"],
    "Refer-To": ["<sip:human@pbx?Replaces=a%40b>", "tel:+15551234567"],
    "Session-Expires": ["1800;refresher=uac", "90"],
    "Date": ["Sat, 13 Nov 2010 23:29:00 GMT", "yesterday"],
}
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY", "INFO", "UPDATE", "REGISTER"]
REQUIRED = ["Via", "From", "To", "Call-ID", "CSeq"]
OPTIONAL = sorted(set(HEADER_VALUES) - set(REQUIRED))
REPEATED: list[list[str]] = [[], [], [], ["Via"], ["To"]]
BODIES = [b"", SDP_SEED, b"SIP/2.0 200 OK\r\n", b"Signal=5\r\n"]


def _assemble(rnd: random.Random) -> bytes:
    """A request or response from a pool of good, odd and bad header values, in any order and number."""
    names = REQUIRED + rnd.sample(OPTIONAL, rnd.randint(0, 6)) + rnd.choice(REPEATED)
    rnd.shuffle(names)
    if rnd.randrange(10) == 0:
        names = names[1:]  # now and then a required header is missing
    values = [rnd.choice(HEADER_VALUES[name]) if rnd.randrange(8) else _sip_text(rnd) for name in names]
    lines = [f"{name}: {value}" for name, value in zip(names, values, strict=True)]
    method = rnd.choice(METHODS)
    start = rnd.choice([f"{method} sip:bot@192.0.2.10 SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 180 Ringing",
                        f"{method} tel:+1555 SIP/2.0"])
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode() + rnd.choice(BODIES)


assembled = seeded(_assemble)


def _exercise(message: Request | Response) -> None:
    """What the layers above do with an accepted message must not blow up either."""
    again = parse_message(message.to_bytes())  # what we accept, we write back acceptably
    assert type(again) is type(message) and again.cseq == message.cseq and again.body == message.body
    if isinstance(message, Request):
        assert isinstance(again, Request) and again.method == message.method
        if message.method != "ACK":
            make_response(message, 400, to_tag="t").to_bytes()
        TransactionLayer().receive_request(message, ALICE, 0.0)
        try:
            Dialog.for_uas(message, local_tag="t", contact=NameAddress(parse_uri("sip:a@b")), via=Via("UDP", "b"))
        except DialogError:
            pass
    else:
        TransactionLayer().receive_response(message, 0.0)


@settings(BATCHED, max_examples=200)
@given(batches(mutated(SEEDS) | assembled | st.binary(max_size=600), max_size=16))
def test_message_parser_on_datagrams(datagrams: list[bytes]) -> None:
    for data in datagrams:
        try:
            message = parse_message(data)
        except BadRequest as error:
            assert 400 <= error.status < 600 and error.code
            error.response(to_tag="t").to_bytes()
            continue
        except MessageError as error:
            assert error.code
            continue
        _exercise(message)


@settings(BATCHED, max_examples=150)  # ~1,200 connections
@given(batches(st.lists(mutated(SEEDS), min_size=1, max_size=3), st.lists(st.integers(1, 300), max_size=6),
               max_size=16))
def test_message_stream_in_chunks(connections: list[tuple[list[bytes], list[int]]]) -> None:
    """Each connection: its messages back to back, cut into chunks anywhere."""
    for messages, cuts in connections:
        _receive_in_chunks(b"".join(messages), cuts)


def _receive_in_chunks(data: bytes, cuts: list[int]) -> None:
    stream = MessageStream()
    position = 0
    for cut in [*cuts, len(data)]:
        chunk, position = data[position : position + cut], position + cut
        try:
            stream.receive_data(chunk)
            while True:
                try:
                    item = stream.next_message()
                except FramingError:
                    return  # the connection closes
                except MessageError:
                    continue  # answered or dropped; the stream goes on
                if item is None:
                    break
                if isinstance(item, Request | Response):
                    _exercise(item)
        except FramingError:
            return


@BATCHED
@given(batches(st.text(max_size=80) | sip_text.map(lambda s: "sip:" + s) | sip_text.map(lambda s: "tel:+" + s)))
def test_uri_parser(texts: list[str]) -> None:
    for text in texts:
        try:
            uri = parse_uri(text)
        except UriError as error:
            assert error.code
            continue
        assert str(parse_uri(str(uri))) == str(uri)  # what parses, round-trips


@BATCHED
@given(batches(sip_text | st.text(max_size=60)))
def test_header_value_parsers(texts: list[str]) -> None:
    for text in texts:
        for parser in (parse_via, parse_name_addresses):
            try:
                parser(text)
            except HeaderError as error:
                assert error.code


@settings(BATCHED, max_examples=200)
@given(batches(mutated([SDP_SEED]) | st.binary(max_size=400), max_size=16))
def test_sdp_parser_and_answer(bodies: list[bytes]) -> None:
    for data in bodies:
        try:
            offer = parse_sdp(data)
        except SdpError as error:
            assert error.code
            continue
        assert parse_sdp(offer.to_bytes()).to_bytes() == offer.to_bytes()
        try:
            answer, media = answer_offer(offer, address="192.0.2.10", port=40000, session_id=1, session_version=1)
        except SdpError:
            continue  # OfferRejected (488) is an SdpError
        assert len(answer.media) == len(offer.media) and 0 <= media.remote_port <= 65535
        parse_sdp(answer.to_bytes())


@BATCHED
@given(batches(st.binary(max_size=200)
               | st.tuples(st.binary(min_size=12, max_size=12), st.binary(max_size=200)).map(
                   lambda parts: bytes([0x80 | (parts[0][0] & 0x3F)]) + parts[0][1:] + parts[1])))  # version 2
def test_rtp_rtcp_and_dtmf_parsers(datagrams: list[bytes]) -> None:
    for data in datagrams:
        try:
            packet = parse_rtp(data)
        except RtpError as error:
            assert error.code
        else:
            assert parse_rtp(packet.to_bytes()) == packet
            try:
                DtmfReceiver().receive(packet)
            except DtmfError:
                pass
        try:
            parse_rtcp(data)
        except RtcpError as error:
            assert error.code


def _arrivals(rnd: random.Random) -> list[tuple[int, int, int, float]]:
    """Packets in any order, often near one another (reordered, duplicated, wrapping), now and then anywhere."""
    sequence, timestamp = rnd.randrange(0x10000), rnd.randrange(2**32)
    arrivals = []
    for _ in range(rnd.randint(0, 80)):
        if rnd.random() < 0.2:
            sequence, timestamp = rnd.randrange(0x10000), rnd.randrange(2**32)
        else:
            step = rnd.choice([1, 1, 1, 0, -1, 2, 3, -5])
            sequence, timestamp = (sequence + step) % 0x10000, (timestamp + 160 * step) % 2**32
        arrivals.append((sequence, timestamp, rnd.choice([1, 1, 1, 2]), rnd.uniform(0, 10)))
    return arrivals


@settings(BATCHED, max_examples=180)  # ~1,500 buffers of up to 80 packets
@given(batches(seeded(_arrivals), st.lists(st.floats(0, 12, allow_nan=False), max_size=40), max_size=16))
def test_jitter_buffer_never_breaks_its_bounds(
        buffers: list[tuple[list[tuple[int, int, int, float]], list[float]]]) -> None:
    """Each buffer: packets arrive (any sequence, timestamp, source, time), then it is read at any times."""
    for arrivals, pops in buffers:
        buffer = JitterBuffer(capacity=20)
        for sequence, timestamp, ssrc, arrival in arrivals:
            buffer.push(RtpPacket(0, sequence, timestamp, ssrc, b"x"), arrival)
            assert len(buffer) <= 20
        for now in sorted(pops):
            buffer.pop(now)
        stats = buffer.stats  # every packet is accounted for exactly once
        assert stats.received == (stats.played + stats.late + stats.duplicate + stats.overflow + stats.flushed
                                   + len(buffer))


@BATCHED
@given(batches(st.text(max_size=120) | sip_text.map(lambda s: "Digest " + s)
               | st.lists(st.sampled_from(['realm="r"', 'nonce="n"', "qop=auth", 'uri="u"', 'response="0a"',
                                           "nc=00000001", 'cnonce="c"', 'username="a"', "algorithm=SHA-256", "x",
                                           '"', ",", "="]),
                          max_size=10).map(lambda parts: "Digest " + ", ".join(parts))))
def test_digest_header_parsers(values: list[str]) -> None:
    for value in values:
        for parser in (parse_challenge, parse_credentials):
            try:
                parser(value)
            except DigestError as error:
                assert error.code


@BATCHED
@given(batches(st.text(max_size=80), st.binary(max_size=80),
               st.sampled_from(["application/dtmf-relay", "application/dtmf", None])))
def test_crypto_and_info_parsers(inputs: list[tuple[str, bytes, str | None]]) -> None:
    for text, body, content_type in inputs:
        try:
            parse_crypto(text)
        except SdesError as error:
            assert error.code
        try:
            parse_dtmf_info(content_type, body)
        except DtmfError as error:
            assert error.code

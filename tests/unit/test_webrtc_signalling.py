"""The body of a WebRTC signalling request (raw SDP, or a multipart form with `sdp` and `session` parts):
any bytes under any content type give the offer and the session part, or a RealtimeError to answer with."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.input_batches import BATCHED, batches
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.json_text import MAX_JSON_DEPTH
from voxgate.transports.webrtc import read_signalling

OFFER = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"


def form(*parts: tuple[str, bytes], boundary: str = "xyz", headers: str = "") -> bytes:
    body = b""
    for name, payload in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n{headers}\r\n").encode()
        body += payload + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def test_a_form_with_an_offer_and_a_session() -> None:
    sdp, session = read_signalling("multipart/form-data; boundary=xyz",
                                   form(("sdp", OFFER), ("session", b'{"type": "realtime"}')), True)
    assert sdp == OFFER.decode() and session == {"type": "realtime"}
    assert read_signalling("application/sdp", OFFER, False) == (OFFER.decode(), None)


@pytest.mark.parametrize(("header", "body", "allow_session", "code", "param"), [
    ("image/png", OFFER, True, "unsupported_content_type", None),
    ("multipart/form-data; boundary=xyz", form(("sdp", OFFER)), False, "unsupported_content_type", None),
    ("multipart/form-data", form(("sdp", OFFER)), True, "invalid_body", None),
    ("multipart/form-data; boundary=xyz", form(("session", b"{}")), True, "missing_required_parameter", "sdp"),
    ("multipart/form-data; boundary=xyz", form(("sdp", OFFER), ("session", b"{")), True, "invalid_json", "session"),
    ("multipart/form-data; boundary=xyz",
     form(("sdp", OFFER), ("session", b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))), True,
     "invalid_json", "session"),
    ("multipart/form-data; boundary=xyz", form(("sdp", OFFER), ("session", b"[" * 200_000 + b"]" * 200_000)), True,
     "invalid_json", "session"),  # an HTTP 500 with a RecursionError before
])
def test_bad_bodies_are_realtime_errors(header: str, body: bytes, allow_session: bool, code: str,
                                        param: str | None) -> None:
    with pytest.raises(RealtimeError) as info:
        read_signalling(header, body, allow_session)
    assert (info.value.code, info.value.param) == (code, param)


_payloads = st.one_of(
    st.just(OFFER), st.binary(max_size=60),
    st.sampled_from([b'{"type": "realtime"}', b"[" * 50 + b"]" * 50, b'{"audio": {"input": 1}}', b"\xff\xfe",
                     b"=?utf-8?b?e30=?=", b"e30=", b"--xyz", b"\r\n\r\n"]),
    st.recursive(st.none() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=8).map(lambda v: json.dumps(v).encode()),
)
_part_headers = st.sampled_from(["", "Content-Type: application/json\r\n", "Content-Transfer-Encoding: base64\r\n",
                                 "Content-Transfer-Encoding: quoted-printable\r\n",
                                 "Content-Type: multipart/mixed; boundary=inner\r\n", "Bad Header Line\r\n",
                                 "Content-Type: text/plain; charset=unknown-8bit\r\n"])
_headers = st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data",
                            "MULTIPART/FORM-DATA; boundary=xyz", 'multipart/form-data; boundary="xyz"',
                            "multipart/form-data; boundary=", "application/sdp",
                            "multipart/form-data; boundary*=utf-8''%ff", "text/plain", "", "application/json",
                            "multipart/form-data; boundary=" + "x" * 300])


_parts = st.lists(st.tuples(st.sampled_from(["sdp", "session", "other", 'sdp"; filename="a', ""]), _payloads),
                  max_size=4)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    body = form(*draw(_parts), headers=draw(_part_headers))
    for _ in range(draw(st.integers(0, 3))):  # a few bytes inserted or cut anywhere
        at = draw(st.integers(0, len(body)))
        if draw(st.booleans()):
            body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
        else:
            body = body[:at] + body[at + draw(st.integers(1, 8)):]
    return body


@settings(BATCHED, max_examples=120)  # ~450 bodies (400 unbatched)
@given(batches(_headers, _bodies(), st.booleans()))
def test_any_body_is_an_offer_or_a_realtime_error(requests: list[tuple[str, bytes, bool]]) -> None:
    for header, body, allow_session in requests:
        try:
            sdp, _session = read_signalling(header, body, allow_session)
        except RealtimeError as exc:
            assert exc.code and exc.message and exc.type == "invalid_request_error"
        else:
            assert isinstance(sdp, str)

"""The SDP offer check: what it accepts, the messages it refuses with, and that nothing else ever escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.transports.webrtc_offer import (
    MAX_CANDIDATES,
    MAX_MEDIA_SECTIONS,
    MAX_OFFER_BYTES,
    MAX_OFFER_LINES,
    OfferError,
    read_offer,
)

CHROME_OFFER = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "a=fingerprint:sha-256 AA:BB:CC", "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuv", "a=mid:0", "a=sendrecv",
    "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:63 red/48000/2",
    "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000", "a=rtpmap:126 telephone-event/8000",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=mid:1", "a=sctp-port:5000", "",
])


def test_a_browser_offer() -> None:
    offer = read_offer(CHROME_OFFER)
    assert offer.audio_codecs == ["opus", "pcmu", "pcma"]
    assert offer.audio.direction == "sendrecv"
    assert offer.has_data_channel


def test_static_payload_types_need_no_rtpmap() -> None:
    sdp = CHROME_OFFER.replace("111 63 9 0 8 13 110 126", "0").replace("a=rtpmap:0 PCMU/8000\r\n", "")
    assert read_offer(sdp).audio_codecs == ["pcmu"]


@pytest.mark.parametrize(("sdp", "message"), [
    ("", "not an SDP offer"),
    ("<html>hi</html>", "not an SDP offer"),
    ("v=0\r\no=x\r\nthis is not sdp", "not of the form"),
    ("v=0\r\ns=-\r\n", "no origin"),
    (CHROME_OFFER.replace("a=fingerprint:sha-256 AA:BB:CC\r\n", ""), "DTLS fingerprint"),
    (CHROME_OFFER.replace("a=ice-ufrag:abcd\r\n", ""), "ICE credentials"),
    (CHROME_OFFER.replace("m=audio 9 ", "m=audio 0 "), "no audio section"),
    (CHROME_OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "m=video 9 UDP/TLS/RTP/SAVPF 96"),
     "no audio section"),
    (CHROME_OFFER.replace("111 63 9 0 8 13 110 126", "63 9 13"), "(cn, g722, red)"),
    (CHROME_OFFER.replace("m=audio 9 ", "m=audio nine "), "Malformed port"),
    (CHROME_OFFER.replace("m=audio 9 ", "m=audio 70000 "), "out of range"),
    (CHROME_OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "m=audio 9"), "Malformed media"),
    ("v=0\r\n" + "a=x\r\n" * (MAX_OFFER_BYTES // 4), "larger than"),
    ("v=0\r\n" + "a=x\r\n" * MAX_OFFER_LINES, f"{MAX_OFFER_LINES + 1} lines; at most {MAX_OFFER_LINES}"),
    (CHROME_OFFER + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * (MAX_MEDIA_SECTIONS - 1),
     f"{MAX_MEDIA_SECTIONS + 1} media sections; at most {MAX_MEDIA_SECTIONS}"),
    (CHROME_OFFER + "a=candidate:1 1 udp 2130706431 10.0.0.1 9 typ host\r\n" * (MAX_CANDIDATES + 1),
     f"{MAX_CANDIDATES + 1} ICE candidates; at most {MAX_CANDIDATES}"),
])
def test_refusals_say_what_is_wrong(sdp: str, message: str) -> None:
    with pytest.raises(OfferError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_offer(sdp)


def test_offers_up_to_every_bound_are_read() -> None:
    sections = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * (MAX_MEDIA_SECTIONS - 2)
    candidates = "a=candidate:1 1 udp 2130706431 10.0.0.1 9 typ host\r\n" * MAX_CANDIDATES
    assert read_offer(CHROME_OFFER + sections + candidates).audio_codecs[0] == "opus"


def test_bundle_only_audio_counts() -> None:
    sdp = CHROME_OFFER.replace("m=audio 9 ", "m=audio 0 ").replace("a=mid:0", "a=mid:0\r\na=bundle-only")
    assert read_offer(sdp).audio_codecs[0] == "opus"


@settings(max_examples=400)
@given(st.text(max_size=400))
def test_any_text_is_an_offer_or_an_offer_error(text: str) -> None:
    try:
        read_offer(text)
    except OfferError as exc:
        assert str(exc)


@settings(max_examples=400)
@given(st.lists(st.sampled_from(CHROME_OFFER.split("\r\n")), max_size=400))
def test_any_shuffle_of_real_lines_is_an_offer_or_an_offer_error(lines: list[str]) -> None:
    try:
        offer = read_offer("\r\n".join(["v=0", *lines]))
    except OfferError:
        return
    assert offer.audio_codecs  # accepted only with a usable audio codec

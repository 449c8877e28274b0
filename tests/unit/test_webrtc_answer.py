"""The answer to a browser's offer: one codec, the data channel, everything else refused, one bundle."""

from __future__ import annotations

import pytest

from voxgate.transports.webrtc_offer import OfferError, read_offer
from voxgate.webrtc.answer import IceCredentials, plan_answer

# What Chromium offers for `addTransceiver("audio")`, `createDataChannel("oai-events")` and a camera it
# will not get (trimmed of extmaps and rtcp-fb lines, which the answer ignores).
CHROME = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=extmap-allow-mixed
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1 1 udp 2122260223 192.0.2.5 54400 typ host generation 0
a=ice-ufrag:Tq8F
a=ice-pwd:yGmQk4F2G9a6hVt1aRmX2tU0
a=ice-options:trickle
a=fingerprint:sha-256 6B:8B:5E:2D:5A:1F:0E:3C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88
a=setup:actpass
a=mid:0
a=sendrecv
a=msid:- 0b2f
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:Tq8F
a=ice-pwd:yGmQk4F2G9a6hVt1aRmX2tU0
a=fingerprint:sha-256 6B:8B:5E:2D:5A:1F:0E:3C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88
a=setup:actpass
a=mid:1
a=sctp-port:5000
a=max-message-size:262144
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=ice-ufrag:Tq8F
a=ice-pwd:yGmQk4F2G9a6hVt1aRmX2tU0
a=setup:actpass
a=mid:2
a=recvonly
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
""".replace("\n", "\r\n")

ICE = IceCredentials("gw01", "0123456789abcdef0123456789abcdef")
FINGERPRINTS = [("sha-256", "AA:" * 31 + "AA")]


def answer(sdp: str) -> tuple[str, list[str]]:
    plan = plan_answer(read_offer(sdp))
    text = plan.to_sdp(ice=ICE, fingerprints=FINGERPRINTS, candidates=[("192.0.2.10", 40000)])
    return text, text.split("\r\n")


def test_chrome_gets_opus_the_channel_and_a_refused_camera_on_one_bundle() -> None:
    plan = plan_answer(read_offer(CHROME))
    assert (plan.codec, plan.payload_type, plan.clock_rate) == ("opus", 111, 48000)
    assert plan.dtls_server and plan.remote_ice == IceCredentials("Tq8F", "yGmQk4F2G9a6hVt1aRmX2tU0")
    assert plan.remote_sctp_port == 5000 and plan.remote_max_message_size == 262144
    text, lines = answer(CHROME)
    assert "a=ice-lite" in lines and "a=group:BUNDLE 0 1" in lines
    media = [line for line in lines if line.startswith("m=")]
    assert media == ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                     "m=video 0 UDP/TLS/RTP/SAVPF 96 97"]
    assert lines.count("a=setup:passive") == 2 and lines.count("a=ice-ufrag:gw01") == 2
    assert lines.count("a=candidate:1 1 udp 2130706430 192.0.2.10 40000 typ host") == 1
    assert "a=rtpmap:111 opus/48000/2" in lines and "a=sendrecv" in lines and "a=rtcp-mux" in lines
    assert "a=sctp-port:5000" in lines
    # Our answer is itself a well-formed offer/answer by the same reader.
    assert read_offer(text).audio_codecs == ["opus"]


def test_directions_mirror_the_offer() -> None:
    _, lines = answer(CHROME.replace("a=sendrecv", "a=recvonly"))
    assert "a=sendonly" in lines
    plan = plan_answer(read_offer(CHROME.replace("a=sendrecv", "a=sendonly")))
    assert plan.receives
    _, lines = answer(CHROME.replace("a=sendrecv", "a=sendonly"))
    assert "a=recvonly" in lines and not any(line.startswith("a=ssrc:") for line in lines)


def test_g711_only_offers_get_g711_and_an_active_offer_makes_us_client() -> None:
    sdp = CHROME.replace("111 63 9 0 8 13 110 126", "0 8").replace("a=setup:actpass", "a=setup:passive")
    plan = plan_answer(read_offer(sdp))
    assert (plan.codec, plan.payload_type, plan.clock_rate) == ("pcmu", 0, 8000) and not plan.dtls_server
    _, lines = answer(sdp)
    assert "a=setup:active" in lines and "a=rtpmap:0 PCMU/8000" in lines


def test_offers_the_gateway_cannot_serve_say_why() -> None:
    cases = {
        "a=ice-lite\r\n": "ICE-lite",
        "a=setup:holdconn": "a=setup",
        "a=max-message-size:lots": "max-message-size",
    }
    for change, message in cases.items():
        if change.startswith("a=ice-lite"):
            sdp = CHROME.replace("t=0 0\r\n", "t=0 0\r\n" + change)
        elif change.startswith("a=setup"):
            sdp = CHROME.replace("a=setup:actpass", change)
        else:
            sdp = CHROME.replace("a=max-message-size:262144", change)
        with pytest.raises(OfferError, match=message):
            plan_answer(read_offer(sdp))
    unbundled = CHROME.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 1 2")
    with pytest.raises(OfferError, match="BUNDLE"):
        plan_answer(read_offer(unbundled))


def test_an_offer_without_a_data_channel_is_audio_only() -> None:
    sdp = CHROME.split("m=application")[0]
    plan = plan_answer(read_offer(sdp))
    assert plan.data is None
    _, lines = answer(sdp)
    assert [line for line in lines if line.startswith("m=")] == ["m=audio 9 UDP/TLS/RTP/SAVPF 111"]


def test_a_second_audio_section_outside_the_bundle_is_refused_and_the_first_served() -> None:
    extra = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:9\r\na=rtpmap:0 PCMU/8000\r\n"
    sdp = CHROME.replace("m=application", extra + "m=application", 1)
    plan = plan_answer(read_offer(sdp))
    assert plan.audio.mid == "0" and plan.codec == "opus"
    _, lines = answer(sdp)
    assert "m=audio 0 UDP/TLS/RTP/SAVPF 0" in lines and "a=group:BUNDLE 0 1" in lines

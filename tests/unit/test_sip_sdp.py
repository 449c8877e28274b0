"""SDP parsing and offer/answer: codecs by preference with the offerer's numbering, telephone-event,
Opus when offered and preferred, hold, refused streams, SDES-SRTP answered and checked with pylibsrtp."""

from __future__ import annotations

import base64

import pylibsrtp
import pytest

from voxgate.sip.rtp import RtpPacket, parse_rtp
from voxgate.sip.sdes import CryptoAttribute, SdesError, SrtpKeys, answer_crypto, new_key, parse_crypto
from voxgate.sip.sdp import (
    CodecPreferences,
    MediaSession,
    OfferRejected,
    RtpMap,
    SdpError,
    SessionDescription,
    accept_answer,
    answer_offer,
    make_offer,
    parse_sdp,
)

SIPP_OFFER = (  # what samples/sipp/uac_rtpstream.xml sends
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")

KEY = bytes(range(30))


def offer(media: str, *, session: str = "", connection: str = "c=IN IP4 198.51.100.7\r\n") -> str:
    return f"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\n{connection}t=0 0\r\n{session}{media}"


def answer(text: str, *, preferences: CodecPreferences | None = None,
           local_key: bytes | None = None) -> tuple[SessionDescription, MediaSession]:
    return answer_offer(parse_sdp(text), address="192.0.2.10", port=40000, session_id=7, session_version=1,
                        preferences=preferences, local_key=local_key)


def test_parse_sipp_offer() -> None:
    sdp = parse_sdp(SIPP_OFFER)
    [audio] = sdp.media
    assert (audio.media, audio.port, audio.protocol, audio.formats) == ("audio", 6000, "RTP/AVP", ["0", "101"])
    assert sdp.connection is not None and sdp.connection.address == "127.0.0.1"
    assert audio.rtpmap(101) is not None and audio.fmtp(101) == "0-16" and audio.ptime == 20
    assert sdp.direction_of(audio) == "sendrecv" and audio.rtcp_port == 6001
    assert sdp.origin.session_version == 2353687637
    again = parse_sdp(sdp.to_bytes())
    assert again.media[0].attributes == audio.attributes and again.to_bytes() == sdp.to_bytes()


def test_answer_to_sipp_picks_pcmu_and_telephone_event() -> None:
    sdp, media = answer(SIPP_OFFER)
    assert (media.codec.name, media.codec.payload_type, media.telephone_event) == ("PCMU", 0, 101)
    assert media.remote == ("127.0.0.1", 6000) and media.direction == "sendrecv" and not media.on_hold
    text = sdp.to_bytes().decode()
    assert "m=audio 40000 RTP/AVP 0 101\r\n" in text and "c=IN IP4 192.0.2.10\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text and "a=sendrecv" in text
    assert text.startswith("v=0\r\no=- 7 1 IN IP4 192.0.2.10\r\n")
    parse_sdp(sdp.to_bytes())


def test_offerers_numbering_and_our_preference() -> None:
    text = offer("m=audio 5004 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\n")
    _, media = answer(text)
    assert media.codec.name == "PCMU" and media.telephone_event == 96  # static PCMU/PCMA need no rtpmap
    _, alaw = answer(text, preferences=CodecPreferences(order=("PCMA", "PCMU")))
    assert alaw.codec.name == "PCMA" and alaw.codec.payload_type == 8


def test_opus_only_when_offered_and_preferred() -> None:
    text = offer("m=audio 5004 RTP/AVP 111 0 101\r\na=rtpmap:111 opus/48000/2\r\n"
                 "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n")
    _, plain = answer(text)
    assert plain.codec.name == "PCMU" and plain.telephone_event is None  # no 8 kHz telephone-event offered
    sdp, opus = answer(text, preferences=CodecPreferences(order=("opus", "PCMU")))
    assert (opus.codec.name, opus.codec.payload_type, opus.codec.clock_rate) == ("OPUS", 111, 48000)
    assert opus.telephone_event == 101 and opus.codec.samples_per_20ms == 960
    assert "a=rtpmap:111 opus/48000/2" in sdp.to_bytes().decode()


@pytest.mark.parametrize(("attribute", "ours", "held"), [
    ("a=sendonly\r\n", "recvonly", True), ("a=inactive\r\n", "inactive", True),
    ("a=recvonly\r\n", "sendonly", False), ("", "sendrecv", False)])
def test_direction_is_complemented_and_hold_recognised(attribute: str, ours: str, held: bool) -> None:
    sdp, media = answer(offer(f"m=audio 5004 RTP/AVP 0\r\n{attribute}"))
    assert media.direction == ours and media.on_hold == held
    assert f"a={ours}" in sdp.to_bytes().decode()


def test_session_level_direction_and_old_style_hold() -> None:
    _, media = answer(offer("m=audio 5004 RTP/AVP 0\r\n", session="a=sendonly\r\n"))
    assert media.remote_direction == "sendonly" and media.direction == "recvonly"
    _, old = answer(offer("m=audio 5004 RTP/AVP 0\r\n", connection="c=IN IP4 0.0.0.0\r\n"))
    assert old.on_hold


def test_refused_streams_keep_their_place() -> None:
    text = offer("m=video 5006 RTP/AVP 31\r\nm=audio 5004 RTP/AVP 18\r\nm=audio 5008 RTP/AVP 0\r\n"
                 "m=audio 5010 RTP/AVP 0\r\n")
    sdp, media = answer(text)
    assert [m.port for m in sdp.media] == [0, 0, 40000, 0]  # video, G.729 only, ours, a second audio
    assert [m.formats for m in sdp.media][:2] == [["31"], ["18"]] and media.remote_port == 5008


@pytest.mark.parametrize("media", ["m=audio 5004 RTP/AVP 18\r\n", "m=audio 0 RTP/AVP 0\r\n",
                                   "m=video 5004 RTP/AVP 31\r\n", "m=audio 5004 UDP/TLS/RTP/SAVPF 0\r\n"])
def test_nothing_acceptable_is_488(media: str) -> None:
    with pytest.raises(OfferRejected):
        answer(offer(media))


def test_offer_and_its_answer_agree() -> None:
    ours = make_offer(address="192.0.2.10", port=40000, session_id=9, session_version=1,
                      preferences=CodecPreferences(order=("opus", "PCMU", "PCMA")))
    text = ours.to_bytes().decode()
    assert "m=audio 40000 RTP/AVP 111 0 8 101 102 13\r\n" in text
    assert "a=rtpmap:101 telephone-event/48000" in text and "a=rtpmap:102 telephone-event/8000" in text
    assert "a=rtpmap:13 CN/8000" in text
    theirs, their_media = answer_offer(parse_sdp(ours.to_bytes()), address="198.51.100.7", port=5004,
                                       session_id=3, session_version=1)
    assert their_media.codec.name == "PCMU" and their_media.telephone_event == 102
    assert their_media.comfort_noise == 13
    settled = accept_answer(ours, parse_sdp(theirs.to_bytes()), CodecPreferences(order=("opus", "PCMU", "PCMA")))
    assert settled.codec.name == "PCMU" and settled.telephone_event == 102 and settled.remote == ("198.51.100.7", 5004)
    assert settled.comfort_noise == 13


@pytest.mark.parametrize(("formats", "rtpmaps", "expected"), [
    ("0 13", "", 13),  # static CN/8000: no rtpmap needed
    ("0 101 96", "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:96 CN/8000\r\n", 96),  # CN on a dynamic number
    ("0 96", "a=rtpmap:96 CN/16000\r\n", None),  # CN at another clock rate than the codec's
    ("0", "", None),  # not offered
    ("0 101", "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:101 CN/8000\r\n", None),  # one number, two maps
])
def test_comfort_noise_is_agreed_when_the_offer_lists_it_at_the_codecs_clock(
        formats: str, rtpmaps: str, expected: int | None) -> None:
    sdp, media = answer(offer(f"m=audio 40000 RTP/AVP {formats}\r\n{rtpmaps}"))
    assert media.comfort_noise == expected
    [audio] = parse_sdp(sdp.to_bytes()).media
    if expected is None:
        assert all(rtpmap.encoding != "CN" for rtpmap in map(audio.rtpmap, map(int, audio.formats)) if rtpmap)
    else:
        assert str(expected) in audio.formats and audio.rtpmap(expected) == RtpMap(expected, "CN", 8000)


def test_comfort_noise_is_not_agreed_when_turned_off_or_beside_opus() -> None:
    _, off = answer(offer("m=audio 40000 RTP/AVP 0 13\r\n"),
                    preferences=CodecPreferences(comfort_noise=False))
    assert off.comfort_noise is None
    _, opus = answer(offer("m=audio 40000 RTP/AVP 111 13\r\na=rtpmap:111 opus/48000/2\r\n"),
                     preferences=CodecPreferences(order=("opus", "PCMU")))
    assert opus.codec.name == "OPUS" and opus.comfort_noise is None
    plain = make_offer(address="192.0.2.10", port=40000, session_id=9, session_version=1,
                       preferences=CodecPreferences(comfort_noise=False))
    assert "CN/" not in plain.to_bytes().decode()


def test_an_answer_cannot_add_comfort_noise_our_offer_lacked() -> None:
    ours = make_offer(address="192.0.2.10", port=40000, session_id=9, session_version=1,
                      preferences=CodecPreferences(comfort_noise=False))
    theirs = parse_sdp(offer("m=audio 5004 RTP/AVP 0 13\r\n"))
    assert accept_answer(ours, theirs).comfort_noise is None
    assert accept_answer(make_offer(address="192.0.2.10", port=40000, session_id=9, session_version=1),
                         theirs).comfort_noise == 13


def test_answer_that_refuses_our_audio() -> None:
    ours = make_offer(address="192.0.2.10", port=40000, session_id=9, session_version=1)
    refused = parse_sdp(offer("m=audio 0 RTP/AVP 0\r\n"))
    with pytest.raises(OfferRejected):
        accept_answer(ours, refused)
    with pytest.raises(SdpError):
        accept_answer(ours, parse_sdp(offer("m=audio 5 RTP/AVP 0\r\nm=audio 6 RTP/AVP 0\r\n")))


# --- SDES-SRTP ---------------------------------------------------------------------------------------------


def srtp_offer(crypto: str) -> str:
    return offer(f"m=audio 5004 RTP/SAVP 0\r\n{crypto}")


def test_sdes_offer_is_answered_with_the_same_tag_and_our_key() -> None:
    remote_key = new_key()
    line = CryptoAttribute(2, "AES_CM_128_HMAC_SHA1_80", remote_key)
    sdp, media = answer(srtp_offer("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"
                                   "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
                                   f"a=crypto:{line}\r\n"), local_key=KEY)
    assert media.srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, remote_key)  # the MKI line is skipped
    [audio] = sdp.media
    assert audio.protocol == "RTP/SAVP" and [c.tag for c in audio.crypto] == [2] and audio.crypto[0].key == KEY


def test_srtp_keys_from_the_negotiation_protect_real_packets() -> None:
    """Both sides' SrtpKeys drive pylibsrtp: what one protects, the other unprotects."""
    caller_key = new_key()
    inline = base64.b64encode(caller_key).decode()
    ours = parse_sdp(srtp_offer(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\n"))
    _, media = answer_offer(ours, address="192.0.2.10", port=40000, session_id=1, session_version=1)
    assert media.srtp is not None
    keys = media.srtp
    ours_tx = pylibsrtp.Session(pylibsrtp.Policy(keys.local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, keys.profile))
    caller_rx = pylibsrtp.Session(pylibsrtp.Policy(keys.local_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, keys.profile))
    caller_tx = pylibsrtp.Session(pylibsrtp.Policy(caller_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, keys.profile))
    ours_rx = pylibsrtp.Session(pylibsrtp.Policy(keys.remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, keys.profile))
    sent = RtpPacket(0, 7, 160, 0xCAFE, b"\xff" * 160).to_bytes()
    assert parse_rtp(caller_rx.unprotect(ours_tx.protect(sent))).payload == b"\xff" * 160
    assert ours_rx.unprotect(caller_tx.protect(sent)) == sent


@pytest.mark.parametrize(("prefs", "text"), [
    (CodecPreferences(srtp="never"), srtp_offer(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{'A' * 40}\r\n")),
    (CodecPreferences(srtp="required"), offer("m=audio 5004 RTP/AVP 0\r\n")),
    (CodecPreferences(), srtp_offer("a=crypto:1 F8_128_HMAC_SHA1_80 inline:" + "A" * 40 + "\r\n")),
    (CodecPreferences(), srtp_offer("")),
])
def test_srtp_policy_refusals(prefs: CodecPreferences, text: str) -> None:
    with pytest.raises(OfferRejected):
        answer(text, preferences=prefs)


def test_srtp_offer_when_required() -> None:
    ours = make_offer(address="192.0.2.10", port=40000, session_id=1, session_version=1, local_key=KEY,
                      preferences=CodecPreferences(srtp="required"))
    their_key = new_key()
    reply, _ = answer_offer(parse_sdp(ours.to_bytes()), address="198.51.100.7", port=5004, session_id=2,
                            session_version=1, local_key=their_key)
    settled = accept_answer(ours, parse_sdp(reply.to_bytes()))
    assert settled.srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, their_key)


def test_crypto_lines() -> None:
    line = parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4")
    assert (line.tag, line.lifetime, line.mki, line.supported) == (1, "2^20", "1:4", False)
    assert str(line) == "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
    assert answer_crypto([line], KEY) is None
    with_param = parse_crypto(f"3 AES_CM_128_HMAC_SHA1_32 inline:{'QUFB' * 10} UNENCRYPTED_SRTP")
    assert with_param.session_params == ("UNENCRYPTED_SRTP",) and not with_param.supported
    for bad in ("x AES inline:AAAA", "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "1 AES_CM_128_HMAC_SHA1_80 key:AAAA",
                "1 AES_CM_128_HMAC_SHA1_80 inline:AAA"):
        with pytest.raises(SdesError):
            parse_crypto(bad)


# --- bounds and bad syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "", "v=1\r\n", "v=0\r\ns=-\r\n", "v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", "v=0\r\no=- 1 1 IN IP4 h\r\nv=0\r\n",
    offer("m=audio x RTP/AVP 0\r\n"), offer("m=audio 5004 RTP/AVP 300\r\n"), offer("m=audio 70000 RTP/AVP 0\r\n"),
    offer("m=audio 5004\r\n"), offer("", connection="c=IN IP9 1.2.3.4\r\n"), offer("", connection="c=IN IP4 a b\r\n"),
    offer("m=audio 5004 RTP/AVP 0\r\nbad line\r\n"), offer("m=audio 5004 RTP/AVP 0\r\na=crypto:1 X inline:@@\r\n"),
    offer("m=audio 5004 RTP/AVP 0\r\n" * 20), offer("a=x\r\n" * 600), offer("a=" + "x" * 17000),
    "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=\xff\r\n".encode("latin-1"),
])
def test_bad_sdp(text: str | bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(text)


def test_rtcp_port_follows_the_offer_and_rtcp_mux_is_answered_when_offered() -> None:
    _, plain = answer(offer("m=audio 5004 RTP/AVP 0\r\n"))
    assert (plain.remote_rtcp_port, plain.rtcp_mux) == (5005, False)
    _, moved = answer(offer("m=audio 5004 RTP/AVP 0\r\na=rtcp:6001\r\n"))
    assert moved.remote_rtcp_port == 6001
    sdp, muxed = answer(offer("m=audio 5004 RTP/AVP 0\r\na=rtcp-mux\r\n"))
    assert (muxed.remote_rtcp_port, muxed.rtcp_mux) == (5004, True) and "a=rtcp-mux\r\n" in sdp.to_bytes().decode()


def test_keys_never_show_in_a_repr() -> None:
    """A key logged by mistake (a MediaSession or crypto line in a log call) shows only its suite."""
    theirs = bytes(reversed(KEY))
    line = CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", theirs)
    _, media = answer(srtp_offer(f"a=crypto:{line}\r\n"), local_key=KEY)
    assert media.srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, theirs)
    shown = repr(media) + repr(line) + repr(media.srtp)
    assert "AES_CM_128_HMAC_SHA1_80" in shown
    for key in (KEY, theirs):
        assert base64.b64encode(key).decode() not in shown and repr(key) not in shown

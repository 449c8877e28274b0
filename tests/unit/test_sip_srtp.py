"""SRTP/SRTCP for a call (RFC 3711 through pylibsrtp): both sides' keys from SDES interoperate, and what
fails authentication or replays is refused with the reason it is counted under."""

from __future__ import annotations

import pytest

from voxgate.sip.rtcp import ReceiverReport, parse_rtcp
from voxgate.sip.rtp import RtpSender, parse_rtp
from voxgate.sip.sdes import SrtpKeys, new_key
from voxgate.sip.srtp import SrtpContext, SrtpError

SUITE = "AES_CM_128_HMAC_SHA1_80"


def pair(suite: str = SUITE) -> tuple[SrtpContext, SrtpContext]:
    """Our context and the peer's, keyed as one offer/answer keys them."""
    ours, theirs = new_key(), new_key()
    return SrtpContext(SrtpKeys(suite, ours, theirs)), SrtpContext(SrtpKeys(suite, theirs, ours))


@pytest.mark.parametrize("suite", [SUITE, "AES_CM_128_HMAC_SHA1_32"])
def test_each_side_reads_what_the_other_protects(suite: str) -> None:
    us, peer = pair(suite)
    sender = RtpSender(0)
    plain = sender.packet(b"\x7f" * 160, 160).to_bytes()
    protected = us.protect(plain)
    assert protected[:12] == plain[:12] and protected[12:172] != plain[12:]  # header clear, payload not
    assert len(protected) == len(plain) + (10 if suite == SUITE else 4)  # the authentication tag
    assert parse_rtp(peer.unprotect(protected)).payload == b"\x7f" * 160
    report = ReceiverReport(sender.ssrc).to_bytes()
    assert parse_rtcp(us.unprotect_rtcp(peer.protect_rtcp(report))) == [ReceiverReport(sender.ssrc)]


def test_forgeries_replays_and_plain_packets_are_refused_with_a_reason() -> None:
    us, peer = pair()
    stranger, _ = pair()
    sender = RtpSender(0)
    first = peer.protect(sender.packet(b"\x01" * 160, 160).to_bytes())
    assert us.unprotect(first)
    reasons = []
    tampered = bytearray(peer.protect(sender.packet(b"\x02" * 160, 160).to_bytes()))
    tampered[40] ^= 0x01
    for data in (first, bytes(tampered), sender.packet(b"\x03" * 160, 160).to_bytes(),
                 stranger.protect(sender.packet(b"\x04" * 160, 160).to_bytes()), b"\x80\x00\x01"):
        with pytest.raises(SrtpError) as refused:
            us.unprotect(data)
        reasons.append(refused.value.code)
    assert reasons == ["replay", "auth_failed", "auth_failed", "auth_failed", "bad_packet"]
    with pytest.raises(SrtpError):
        us.unprotect_rtcp(ReceiverReport(1).to_bytes())  # SRTCP without its tag and index
    plain = ReceiverReport(1).to_bytes() + bytes(20)  # room for an index and a tag, but no E flag
    with pytest.raises(SrtpError) as refused:
        us.unprotect_rtcp(plain)
    assert refused.value.code == "unencrypted"


def test_rekey_restarts_only_the_direction_whose_key_changed() -> None:
    ours, theirs, renewed = new_key(), new_key(), new_key()
    us = SrtpContext(SrtpKeys(SUITE, ours, theirs))
    peer_tx = SrtpContext(SrtpKeys(SUITE, theirs, ours))
    peer_rx = SrtpContext(SrtpKeys(SUITE, theirs, ours))
    sender, ours_sender = RtpSender(0), RtpSender(0)
    assert us.unprotect(peer_tx.protect(sender.packet(b"\x01" * 160, 160).to_bytes()))
    assert peer_rx.unprotect(us.protect(ours_sender.packet(b"\x05" * 160, 160).to_bytes()))
    us.rekey(SrtpKeys(SUITE, ours, renewed))  # the peer's re-INVITE brought a new key; ours stands
    assert peer_rx.unprotect(us.protect(ours_sender.packet(b"\x06" * 160, 160).to_bytes()))
    with pytest.raises(SrtpError):
        us.unprotect(peer_tx.protect(sender.packet(b"\x02" * 160, 160).to_bytes()))  # the old key fails now
    renewed_tx = SrtpContext(SrtpKeys(SUITE, renewed, ours))
    assert us.unprotect(renewed_tx.protect(sender.packet(b"\x03" * 160, 160).to_bytes()))
    assert "inline" not in repr(us) and repr(us) == f"<SrtpContext {SUITE}>"

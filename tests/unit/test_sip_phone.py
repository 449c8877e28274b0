"""The SIP door's pure decisions: who may call without credentials, which agent answers, where a transfer
goes."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from voxgate.audio import g711
from voxgate.config import Settings
from voxgate.sip.message import parse_message
from voxgate.sip.uri import SipUri, TelUri, UriError
from voxgate.transports.sip_call import transcoded, transfer_uri
from voxgate.transports.sip_phone import allowed_networks, route_agent, source_allowed

AGENTS = {"acme": object(), "echo": object()}


def invite(uri: str, to: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
            f"From: <sip:caller@192.0.2.1>;tag=1\r\nTo: <{to}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@192.0.2.1>\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize(("uri", "to", "headers", "expected"), [
    ("sip:echo@gw", "sip:echo@gw", (), "echo"),  # the request-URI user names an agent
    ("sip:+15551234567@gw", "sip:+15551234567@gw", (), "acme"),  # a routed number
    ("sip:gw", "tel:+15551234567", (), "acme"),  # the called number, when the request-URI has no user
    ("sip:nobody@gw", "sip:nobody@gw", (), None),  # no match: the default agent
    ("sip:echo@gw", "sip:echo@gw", ("X-Agent: acme",), "acme"),  # the header wins
    ("sip:echo@gw", "sip:echo@gw", ("X-Agent: nobody",), "echo"),  # a header naming no agent is ignored
])
def test_routing_by_header_uri_user_and_called_number(uri: str, to: str, headers: tuple[str, ...],
                                                     expected: str | None) -> None:
    request = parse_message(invite(uri, to, *headers))
    assert route_agent(request, {"+15551234567": "acme"}, AGENTS, "X-Agent") == expected  # type: ignore[arg-type]


def test_only_loopback_may_call_unless_sources_are_configured() -> None:
    default = allowed_networks([])
    assert source_allowed("127.0.0.1", default) and source_allowed("::1", default)
    assert not source_allowed("192.0.2.7", default) and not source_allowed("not-an-address", default)
    trunk = allowed_networks(["192.0.2.0/24", "2001:db8::1"])
    assert source_allowed("192.0.2.7", trunk) and source_allowed("2001:db8::1", trunk)
    assert not source_allowed("127.0.0.1", trunk)  # configuring sources replaces the loopback default


def test_transfer_targets_become_refer_to_uris() -> None:
    assert transfer_uri("+1 555 0100", "192.0.2.1") == SipUri("sip", "192.0.2.1", "+15550100",
                                                              params=(("user", "phone"),))
    assert transfer_uri("sip:desk@pbx.example", "192.0.2.1") == SipUri("sip", "pbx.example", "desk")
    assert isinstance(transfer_uri("tel:+15550100", "192.0.2.1"), TelUri)
    with pytest.raises(UriError):
        transfer_uri("the front desk", "192.0.2.1")


def test_a_bridge_transcodes_between_the_g711_laws_only_when_they_differ() -> None:
    tone = g711.ulaw_encode((np.sin(np.arange(160) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16))
    assert transcoded(tone, "PCMU", "PCMU") is tone
    alaw = transcoded(tone, "PCMU", "PCMA")
    assert len(alaw) == len(tone) and alaw != tone
    assert transcoded(b"\xff" * 160, "PCMU", "PCMA") == b"\xd5" * 160  # silence stays silence
    back = g711.ulaw_decode(transcoded(alaw, "PCMA", "PCMU")).astype(np.int32)
    assert np.max(np.abs(back - g711.ulaw_decode(tone).astype(np.int32))) < 300  # both laws' step sizes


def test_media_settings_are_checked() -> None:
    assert (Settings().sip_rtp_port_min, Settings().sip_rtp_port_max) == (10000, 20000)
    assert Settings(sip_rtp_port_min=0, sip_rtp_port_max=0).sip_rtp_port_max == 0  # ephemeral ports
    assert Settings(sip_rtp_port_min=40001, sip_rtp_port_max=40003).sip_rtp_port_min == 40001  # pair 40002-3
    for low, high in ((0, 20000), (10000, 0), (20000, 10000), (40001, 40002), (80, 100)):
        with pytest.raises(ValidationError, match="sip_rtp_port_min/max"):
            Settings(sip_rtp_port_min=low, sip_rtp_port_max=high)
    with pytest.raises(ValidationError):
        Settings(sip_srtp="sometimes")
    assert Settings(sip_codecs=["opus", "PCMU"]).sip_codecs == ["opus", "PCMU"]
    for codecs in ([], ["PCMU", "G729"]):
        with pytest.raises(ValidationError, match="sip_codecs"):
            Settings(sip_codecs=codecs)

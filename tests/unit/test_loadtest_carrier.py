"""The load generator as a carrier, with no sockets: it reads the answers the gateway writes (TwiML,
Telnyx answer commands, made here by the gateway's own code), declines, its REST commands, the media it
gets back, and the rule that keeps it on loopback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxgate.config import Settings
from voxgate.loadtest.carrier_line import LineCodec, LinePlayback, media_payload_bytes
from voxgate.loadtest.carrier_webhook import (
    AnswerError,
    Declined,
    StreamAnswer,
    parse_carrier_command,
    parse_twiml,
)
from voxgate.loadtest.target import RemoteTargetRefused, Target, is_loopback
from voxgate.transports import twiml
from voxgate.transports.telnyx import answer_command
from voxgate.transports.telnyx_messages import TelnyxMediaStream


def test_twiml_from_the_gateway_gives_the_stream_url_and_every_parameter() -> None:
    document = twiml.connect_stream("ws://127.0.0.1:8000/twilio/media",
                                    {"agent": "echo", "callSid": "CA1", "token": "t&<\"k"})
    assert parse_twiml(document) == StreamAnswer("ws://127.0.0.1:8000/twilio/media",
                                                 {"agent": "echo", "callSid": "CA1", "token": "t&<\"k"})


@pytest.mark.parametrize(("document", "reason"), [
    ('<?xml version="1.0"?><Response><Reject reason="busy"/></Response>', "reject:busy"),
    ("<Response><Reject/></Response>", "reject:rejected"),
    ("<Response><Say>We are busy, please call later.</Say><Hangup/></Response>", "hangup"),
    (twiml.hang_up(), "hangup"),
])
def test_twiml_that_ends_the_call_is_a_decline(document: str, reason: str) -> None:
    assert parse_twiml(document) == Declined(reason)


@pytest.mark.parametrize("document", ["", "not xml", "<Other/>", "<Response><Say>hi</Say></Response>",
                                      "<Response><Connect><Stream/></Connect></Response>", "<Response>" * 40000])
def test_twiml_that_is_neither_is_an_error(document: str) -> None:
    with pytest.raises(AnswerError):
        parse_twiml(document)


def test_the_gateways_telnyx_answer_command_gives_url_token_parameters_and_codecs() -> None:
    settings = Settings(telnyx_api_key="KEYtest", telnyx_codec="L16", telnyx_sample_rate=16000)
    body = json.dumps(answer_command(settings, "echo", "t" * 43)).encode()
    command = parse_carrier_command("/v2/calls/v3%3Aabc/actions/answer", body)
    assert command is not None and (command.call_id, command.action) == ("v3:abc", "answer")
    answer = command.answer()
    assert isinstance(answer, StreamAnswer)
    assert answer.url == "ws://127.0.0.1:8000/telnyx/media" and answer.parameters == {"agent": "echo"}
    assert answer.auth_token == "t" * 43
    assert answer.inbound == LineCodec("l16", 8000) and answer.outbound == LineCodec("l16", 16000)


def test_carrier_commands_that_decline_or_end_a_call() -> None:
    reject = parse_carrier_command("/v2/calls/v3:x/actions/reject", b'{"cause": "USER_BUSY"}')
    assert reject is not None and reject.answer() == Declined("reject:USER_BUSY") and reject.ends_call
    hangup = parse_carrier_command("/2010-04-01/Accounts/AC1/Calls/CA9.json", b"Status=completed")
    assert hangup is not None and (hangup.call_id, hangup.action, hangup.ends_call) == ("CA9", "hangup", True)
    dial = parse_carrier_command("/2010-04-01/Accounts/AC1/Calls/CA9.json",
                                 b"Twiml=%3CResponse%3E%3CDial%3E%2B1555%3C%2FDial%3E%3C%2FResponse%3E")
    assert dial is not None and dial.action == "transfer"
    dtmf = parse_carrier_command("/v2/calls/v3:x/actions/send_dtmf", b"{}")
    assert dtmf is not None and not dtmf.ends_call
    with pytest.raises(AnswerError):
        dtmf.answer()
    assert parse_carrier_command("/v2/other", b"") is None


def test_media_from_the_gateway_is_sized_without_parsing_and_played_in_real_time() -> None:
    payload = bytes(range(160))
    raw = TelnyxMediaStream().media(payload)
    assert media_payload_bytes(raw) == 160 and media_payload_bytes(raw.replace(raw[-40:-3], "")) != 160
    assert media_payload_bytes('{"event":"mark","mark":{"name":"a"}}') is None
    line = LinePlayback()
    line.audio(10.0, 0.02)
    line.mark(10.0, "m1")
    line.audio(10.0, 0.02)
    line.mark(10.0, "m2")
    assert line.due_marks(10.019) == [] and line.due_marks(10.02) == ["m1"] and line.due_marks(10.05) == ["m2"]


def test_line_codecs_frame_audio_in_20_ms_with_their_own_silence() -> None:
    pcm = np.arange(-4000, 4000, 10, dtype=np.int16)  # 800 samples: 5 frames at 8 kHz
    for codec, size in ((LineCodec("pcmu"), 160), (LineCodec("pcma"), 160), (LineCodec("l16", 16000), 640)):
        frames = codec.frames(pcm)
        assert all(len(f) == size for f in frames) and len(codec.silence()) == size
        assert codec.seconds(size) == pytest.approx(0.02)
    assert LineCodec("pcmu").decode(LineCodec("pcmu").encode(pcm))[:10].tolist() == pytest.approx(
        pcm[:10].tolist(), rel=0.04)  # µ-law steps are 128 at this level


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("api.localhost", True), ("10.0.0.1", False), ("192.168.1.2", False), ("0.0.0.0", False),
    ("example.com", False), ("127.0.0.1.example.com", False), ("::ffff:8.8.8.8", False), ("", False),
])
def test_only_loopback_hosts_are_targets_by_default(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_remote_target_or_stream_url_needs_allow_remote() -> None:
    target = Target.parse("ws://127.0.0.1:8000/", "k")
    assert (target.base_url, target.ws_url) == ("http://127.0.0.1:8000", "ws://127.0.0.1:8000")
    with pytest.raises(RemoteTargetRefused):
        target.check("wss://voice.example.com/twilio/media")  # a stream URL the gateway's answer gave
    with pytest.raises(RemoteTargetRefused):
        Target.parse("https://voice.example.com", "k")
    assert Target.parse("https://voice.example.com", "k", allow_remote=True).ws_url == "wss://voice.example.com"
    with pytest.raises(ValueError):
        Target.parse("ftp://127.0.0.1", "k")

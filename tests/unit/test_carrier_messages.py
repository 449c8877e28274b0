"""The Twilio and Telnyx media-stream codecs: documented frames parse, bad frames raise typed errors only.

Hypothesis throws arbitrary JSON and near-valid frames at both parsers: whatever arrives, `receive`
either returns events or raises CarrierMessageError, never anything else.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.input_batches import json_value, seeded
from voxgate.transports.media_stream import (
    AudioReceived,
    CarrierErrorReported,
    CarrierMessageError,
    ChunkOrder,
    ChunksLost,
    DigitPressed,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from voxgate.transports.telnyx_messages import TelnyxMediaStream
from voxgate.transports.twilio_messages import TwilioMediaStream

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA" + "1" * 32
ACCOUNT = "AC" + "2" * 32

# Frames as Twilio documents them (reference §1.2).
TWILIO_START = {"event": "start", "sequenceNumber": "1", "streamSid": SID,
                "start": {"accountSid": ACCOUNT, "streamSid": SID, "callSid": CALL, "tracks": ["inbound"],
                          "customParameters": {"agent": "acme", "from": "+15557654321"},
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def twilio_media(chunk: int, payload: bytes, sid: str = SID) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(chunk + 1), "streamSid": sid,
                       "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                                 "payload": base64.b64encode(payload).decode()}})


def started_twilio() -> TwilioMediaStream:
    stream = TwilioMediaStream()
    assert stream.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}') == [StreamConnected()]
    [started] = stream.receive(json.dumps(TWILIO_START))
    assert isinstance(started, StreamStarted)
    return stream


def test_twilio_documented_frames() -> None:
    stream = TwilioMediaStream()
    [started] = stream.receive(json.dumps(TWILIO_START))
    assert started == StreamStarted(stream_id=SID, call_id=CALL, account_id=ACCOUNT,
                                    parameters={"agent": "acme", "from": "+15557654321"}, encoding="pcmu",
                                    sample_rate=8000, from_number="+15557654321")
    assert stream.receive(twilio_media(1, b"\x7f" * 160)) == [AudioReceived(b"\x7f" * 160, 1)]
    assert stream.receive(json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID,
                                      "mark": {"name": "item_1:100"}})) == [MarkPlayed("item_1:100")]
    assert stream.receive(json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                                      "dtmf": {"track": "inbound_track", "digit": "#"}})) == [DigitPressed("#")]
    assert repr(DigitPressed("7")) == "DigitPressed(digit='*')"  # never a key in a log by accident
    assert stream.receive(json.dumps({"event": "stop", "sequenceNumber": "9", "streamSid": SID,
                                      "stop": {"accountSid": ACCOUNT, "callSid": CALL}})) == [StreamStopped()]


def test_twilio_outbound_frames_are_the_documented_json() -> None:
    stream = started_twilio()
    assert json.loads(stream.media(b"\x00\xff")) == {"event": "media", "streamSid": SID,
                                                      "media": {"payload": base64.b64encode(b"\x00\xff").decode()}}
    assert json.loads(stream.mark("it:20")) == {"event": "mark", "streamSid": SID, "mark": {"name": "it:20"}}
    assert json.loads(stream.clear()) == {"event": "clear", "streamSid": SID}
    with pytest.raises(RuntimeError):
        TwilioMediaStream().media(b"\xff")


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('{"event": "dance"}', "unknown_event"),
    (twilio_media(1, b"\xff" * 160, sid="MZother"), "unknown_stream"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {"chunk": "1", "payload": "@@@"}}), "invalid_base64"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {"chunk": "1", "payload": ""}}), "bad_payload_size"),
    (twilio_media(1, b"\xff" * 8001), "bad_payload_size"),
    (json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "/w=="}}), "missing_field"),
    (json.dumps({"event": "media", "streamSid": SID}), "missing_field"),
    (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}}), "invalid_digit"),
    (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "missing_field"),
    (json.dumps(TWILIO_START), "duplicate_start"),
    ("x" * 70000, "too_large"),
])
def test_twilio_bad_frames_raise_typed_errors(frame: str, code: str) -> None:
    stream = started_twilio()
    with pytest.raises(CarrierMessageError) as error:
        stream.receive(frame)
    assert error.value.code == code
    assert not error.value.fatal
    assert stream.receive(twilio_media(1, b"\xff" * 160)) == [AudioReceived(b"\xff" * 160, 1)]  # still fine


def test_twilio_media_before_start_and_unusable_starts() -> None:
    with pytest.raises(CarrierMessageError) as error:
        TwilioMediaStream().receive(twilio_media(1, b"\xff" * 160))
    assert error.value.code == "media_before_start"
    for broken in ({**TWILIO_START, "streamSid": 'MZ"injected'},
                   {**TWILIO_START, "start": {**TWILIO_START["start"], "callSid": "../../etc"}},
                   {**TWILIO_START, "start": {**TWILIO_START["start"],
                                              "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000}}}):
        with pytest.raises(CarrierMessageError) as error:
            TwilioMediaStream().receive(json.dumps(broken))
        assert error.value.fatal


def test_twilio_late_and_duplicate_chunks_are_refused_and_gaps_reported() -> None:
    stream = started_twilio()
    assert stream.receive(twilio_media(1, b"\x01")) == [AudioReceived(b"\x01", 1)]
    with pytest.raises(CarrierMessageError, match="after chunk 1"):
        stream.receive(twilio_media(1, b"\x01"))
    assert stream.receive(twilio_media(3, b"\x03")) == []  # held: chunk 2 may still come
    assert stream.receive(twilio_media(2, b"\x02")) == [AudioReceived(b"\x02", 2), AudioReceived(b"\x03", 3)]
    events = []
    for chunk in (5, 6, 7, 8):  # chunk 4 never comes: given up once the window is full
        events += stream.receive(twilio_media(chunk, bytes([chunk])))
    assert events == [ChunksLost(1), *[AudioReceived(bytes([c]), c) for c in (5, 6, 7, 8)]]


TELNYX_START = {"event": "start", "sequence_number": "1", "stream_id": "32de0dea-53cb-4b21-89a4-9e7a9ee0e6e6",
                "start": {"user_id": "u1", "call_control_id": "v3:abc", "call_session_id": "s1",
                          "client_state": None, "from": "+15557654321", "to": "+15551234567",
                          "custom_parameters": {"agent": "acme"},
                          "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1}}}


def telnyx_media(chunk: int, payload: bytes) -> str:
    return json.dumps({"event": "media", "sequence_number": str(chunk + 1), "stream_id": TELNYX_START["stream_id"],
                       "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                                 "payload": base64.b64encode(payload).decode()}})


def test_telnyx_documented_frames_and_reordering() -> None:
    stream = TelnyxMediaStream()
    assert stream.receive('{"event":"connected","version":"1.0.0","x-telnyx-streaming-auth-token":"t"}') == [
        StreamConnected("t")]
    [started] = stream.receive(json.dumps(TELNYX_START))
    assert started == StreamStarted(stream_id=TELNYX_START["stream_id"], call_id="v3:abc", account_id="u1",
                                    parameters={"agent": "acme"}, encoding="pcma", sample_rate=8000,
                                    from_number="+15557654321", to_number="+15551234567")
    # Out of order, as Telnyx may deliver: released in order, without waiting when in order.
    assert stream.receive(telnyx_media(1, b"\x01")) == [AudioReceived(b"\x01", 1)]
    assert stream.receive(telnyx_media(3, b"\x03")) == []
    assert stream.receive(telnyx_media(2, b"\x02")) == [AudioReceived(b"\x02", 2), AudioReceived(b"\x03", 3)]
    assert stream.receive(json.dumps({"event": "dtmf", "stream_id": TELNYX_START["stream_id"],
                                      "dtmf": {"digit": "1"}})) == [DigitPressed("1")]
    assert stream.receive(json.dumps({"event": "error", "stream_id": "x",
                                      "payload": {"code": 100002, "title": "Unknown error", "detail": "d"}})) == [
        CarrierErrorReported("100002", "Unknown error", "d")]
    assert json.loads(stream.media(b"\xd5")) == {"event": "media", "media": {"payload": "1Q=="}}
    assert json.loads(stream.mark("m")) == {"event": "mark", "mark": {"name": "m"}}
    assert json.loads(stream.clear()) == {"event": "clear"}


@pytest.mark.parametrize("fmt", [{"encoding": "L16", "sample_rate": 16000, "channels": 1},
                                 {"encoding": "PCMU", "sample_rate": 8000}])
def test_telnyx_l16_and_pcmu_streams(fmt: dict[str, Any]) -> None:
    stream = TelnyxMediaStream()
    [started] = stream.receive(json.dumps({**TELNYX_START, "start": {**TELNYX_START["start"], "media_format": fmt}}))
    assert isinstance(started, StreamStarted)
    assert started.sample_rate == fmt["sample_rate"]
    if started.encoding == "l16":
        with pytest.raises(CarrierMessageError, match=r"bad_payload_size|payload"):
            stream.receive(telnyx_media(1, b"\x00\x01\x02"))  # half a sample


@pytest.mark.parametrize("fmt", [{"encoding": "OPUS", "sample_rate": 48000}, {"encoding": "PCMU", "sample_rate": 16000},
                                 {"encoding": "L16", "sample_rate": 11025}, {"encoding": "PCMU", "channels": 2},
                                 {"encoding": "PCMU", "sample_rate": "fast"}])
def test_telnyx_refuses_formats_it_cannot_play(fmt: dict[str, Any]) -> None:
    with pytest.raises(CarrierMessageError) as error:
        TelnyxMediaStream().receive(json.dumps({**TELNYX_START, "start": {**TELNYX_START["start"],
                                                                            "media_format": fmt}}))
    assert error.value.code == "unsupported_format" and error.value.fatal


# -- fuzzing -----------------------------------------------------------------------------------------

json_values = seeded(lambda rnd: json_value(rnd, leaves=12))
events = st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "error", "clear", "x"])
near_valid = st.fixed_dictionaries({"event": events}, optional={
    "streamSid": st.sampled_from([SID, "MZ2", 5]), "stream_id": st.sampled_from([TELNYX_START["stream_id"], "z"]),
    "media": st.fixed_dictionaries({}, optional={"chunk": st.integers(-3, 10) | st.text(max_size=3),
                                                 "payload": st.binary(max_size=400).map(
                                                     lambda b: base64.b64encode(b).decode()) | st.text(max_size=8),
                                                 "track": st.sampled_from(["inbound", "outbound", 7])}),
    "mark": json_values, "dtmf": st.fixed_dictionaries({}, optional={"digit": st.text(max_size=2)}),
    "start": json_values, "payload": json_values})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(json_values.map(json.dumps), near_valid.map(json.dumps), st.text(max_size=50),
                          st.binary(max_size=50)), max_size=12))
def test_fuzzed_frames_only_ever_raise_media_stream_errors(frames: list[str | bytes]) -> None:
    for stream in (started_twilio(), TwilioMediaStream(), TelnyxMediaStream()):
        for frame in frames:
            try:
                stream.receive(frame)
            except CarrierMessageError:
                pass


@given(st.lists(st.binary(min_size=1, max_size=320), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_chunks_shuffled_within_the_window_come_out_in_order_and_complete(payloads: list[bytes], rnd: Any) -> None:
    order = list(range(1, len(payloads) + 1))
    for i in range(1, len(order) - 1, 3):  # swap neighbours: a bounded disorder
        if rnd.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    order.insert(0, order.pop(order.index(1)))  # the stream's first chunk opens it
    chunks = ChunkOrder(window=3)
    out: list[AudioReceived] = []
    for number in order:
        ready, lost = chunks.push(number, payloads[number - 1])
        assert lost == 0
        out += ready
    assert [e.chunk for e in out] == list(range(1, len(payloads) + 1))
    assert [e.payload for e in out] == payloads


@given(st.lists(st.integers(0, 60), max_size=60))
def test_any_chunk_sequence_releases_strictly_increasing_chunks(numbers: list[int]) -> None:
    chunks = ChunkOrder(window=3)
    released: list[int] = []
    for number in numbers:
        try:
            ready, _ = chunks.push(number, b"\xff")
        except CarrierMessageError as exc:
            assert exc.code == "out_of_order"
            continue
        released += [e.chunk for e in ready]
    assert released == sorted(set(released))

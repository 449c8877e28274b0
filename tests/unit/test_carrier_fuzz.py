"""Fuzzing the carriers' parsers: Twilio and Telnyx media-stream frames and call webhooks.

Thousands of frames per parser: arbitrary JSON (NaN, infinities, huge numbers, deep nesting), documented
frames with one field swapped for anything, and raw bytes. Whatever arrives, a parser returns typed
events or raises its documented error (CarrierMessageError for frames, CallEventError for webhooks) with a
stable code and a message: the shell answers each one (a counted rejection, a close, an HTTP 400), and
nothing else can escape into a traceback. Pure cores, so it is fast.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.input_batches import BATCHED, any_text, batches, json_value, seeded
from tests.unit.test_carrier_messages import TELNYX_START, TWILIO_START, telnyx_media, twilio_media
from voxgate.transports.media_stream import (
    AudioReceived,
    CallEventError,
    CarrierErrorReported,
    CarrierMessageError,
    ChunksLost,
    DigitPressed,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from voxgate.transports.telnyx_messages import CallEvent, TelnyxMediaStream, parse_call_event
from voxgate.transports.twilio_messages import TwilioMediaStream, VoiceCall, parse_voice_call

EVENTS = (StreamConnected, StreamStarted, AudioReceived, ChunksLost, DigitPressed, MarkPlayed, StreamStopped,
          CarrierErrorReported)

CODE = re.compile(r"[a-z][a-z0-9_]{2,40}")

def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        out += _paths(child, (*prefix, key))
    return out


def _swapped(template: dict[str, Any], rnd: random.Random) -> str:
    """The documented frame with one field (at any depth) replaced by anything, or removed."""
    frame = copy.deepcopy(template)
    path = rnd.choice(_paths(template))
    parent = frame
    for key in path[:-1]:
        parent = parent[key]
    if rnd.randrange(6) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = json_value(rnd)
    return json.dumps(frame)


ODD_NUMBERS = ['{"event":"media","streamSid":"MZ","media":{"chunk":1e400,"payload":"/w=="}}',
               '{"event":"media","stream_id":"s","media":{"chunk":"9' + "9" * 5000 + '"}}',
               '{"event":"start","start":{"mediaFormat":{"sampleRate":Infinity}}}', "NaN",
               '{"event":"start","start":{"media_format":{"sample_rate":-Infinity}}}']


def odd_text(rnd: random.Random) -> str | bytes:
    """Deep nesting, numbers no parser should take, and plain garbage, as text and as bytes."""
    kind = rnd.randrange(5)
    depth = rnd.randint(1, 3000)
    if kind == 0:
        return "[" * depth + "]" * depth
    if kind == 1:
        return '{"event":' * depth + "1" + "}" * depth
    if kind == 2:
        return rnd.choice(ODD_NUMBERS)
    if kind == 3:
        return any_text(rnd, 60)
    return rnd.randbytes(rnd.randint(0, 60))


def one_frame(templates: list[dict[str, Any]], media: Sequence[str]) -> Callable[[random.Random], str | bytes]:
    def build(rnd: random.Random) -> str | bytes:
        kind = rnd.randrange(len(templates) + (3 if media else 2))
        if kind < len(templates):
            return _swapped(templates[kind], rnd)
        kind -= len(templates)
        return json.dumps(json_value(rnd)) if kind == 0 else odd_text(rnd) if kind == 1 else rnd.choice(media)
    return build


def frames(templates: list[dict[str, Any]], *media: str) -> st.SearchStrategy[list[str | bytes]]:
    return st.lists(seeded(one_frame(templates, media)), min_size=1, max_size=6)


def answered(stream: TwilioMediaStream | TelnyxMediaStream, frame: str | bytes) -> None:
    """One frame in: typed events out, or a CarrierMessageError with a code and a message; nothing else."""
    try:
        events = stream.receive(frame)
    except CarrierMessageError as exc:
        assert CODE.fullmatch(exc.code), exc.code
        assert exc.message
        return
    assert isinstance(events, list) and all(isinstance(e, EVENTS) for e in events), events
    if stream.started is not None:  # whatever `start` said, what we send back is valid JSON
        for text in (stream.media(b"\xff" * 160), stream.mark("item_1:100"), stream.clear()):
            json.loads(text)


TWILIO_TEMPLATES: list[dict[str, Any]] = [
    TWILIO_START, {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    json.loads(twilio_media(1, b"\xff" * 160)),
    {"event": "mark", "sequenceNumber": "4", "streamSid": TWILIO_START["streamSid"], "mark": {"name": "m"}},
    {"event": "dtmf", "streamSid": TWILIO_START["streamSid"], "dtmf": {"track": "inbound_track", "digit": "1"}},
    {"event": "stop", "streamSid": TWILIO_START["streamSid"], "stop": {"accountSid": "AC", "callSid": "CA"}}]
TELNYX_TEMPLATES: list[dict[str, Any]] = [
    TELNYX_START, {"event": "connected", "version": "1.0.0", "x-telnyx-streaming-auth-token": "t"},
    json.loads(telnyx_media(1, b"\xd5" * 160)),
    {"event": "mark", "stream_id": TELNYX_START["stream_id"], "mark": {"name": "m"}},
    {"event": "dtmf", "stream_id": TELNYX_START["stream_id"], "dtmf": {"digit": "1"}},
    {"event": "error", "stream_id": TELNYX_START["stream_id"], "payload": {"code": 1, "title": "t", "detail": "d"}},
    {"event": "stop", "stream_id": TELNYX_START["stream_id"], "stop": {"call_control_id": "v3:abc"}},
    {**TELNYX_START, "start": {**TELNYX_START["start"],
                               "custom_parameters": [{"name": "agent", "value": "acme"}]}}]


@settings(BATCHED, max_examples=200)  # ~1,700 sequences, ~5,900 frames
@given(batches(frames([*TWILIO_TEMPLATES, *TELNYX_TEMPLATES], twilio_media(2, b"\xff" * 160),
                      telnyx_media(2, b"\xd5" * 160)), max_size=16))
def test_media_frames_are_answered_whatever_they_hold(sequences: list[list[str | bytes]]) -> None:
    """Every frame goes to both carriers' parsers, before and after a good `start` (one carrier's frames
    are garbage to the other, which is a test too); each sequence to fresh streams."""
    for sequence in sequences:
        streams: list[TwilioMediaStream | TelnyxMediaStream] = [TwilioMediaStream(), TelnyxMediaStream()]
        for stream, start in ((TwilioMediaStream(), TWILIO_START), (TelnyxMediaStream(), TELNYX_START)):
            stream.receive(json.dumps(start))
            streams.append(stream)
        for frame in sequence:
            for stream in streams:
                answered(stream, frame)


CALL_INITIATED = {"data": {"record_type": "event", "event_type": "call.initiated", "id": "0ccc7b54",
                           "occurred_at": "2025-01-01T00:00:00.000000Z",
                           "payload": {"call_control_id": "v3:abc", "direction": "incoming",
                                       "from": "+15557654321", "to": "+15551234567", "state": "parked",
                                       "client_state": "eyJ2b3hnYXRlX3RyYW5zZmVyX29mIjoidjM6YWJjIn0=",
                                       "hangup_cause": "timeout"}}}


@BATCHED
@given(batches(seeded(one_frame([CALL_INITIATED], []))))
def test_telnyx_webhook_bodies_are_answered_whatever_they_hold(bodies: list[str | bytes]) -> None:
    for body in bodies:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        try:
            event = parse_call_event(raw)
        except CallEventError as exc:
            assert str(exc)
            continue
        assert isinstance(event, CallEvent)
        assert event.event_type and 0 < len(event.call_control_id) <= 256
        assert all(isinstance(v, str) for k, v in vars(event).items() if k != "client_state")
        assert all(isinstance(k, str) and isinstance(v, str) and len(v) <= 256 for k, v in event.client_state.items())


VOICE_FORM = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "2" * 32, "From": "+15557654321",
              "To": "+15551234567", "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
SID = re.compile(r"[A-Za-z0-9_-]{1,64}")


FORM_VALUES = ["CA" + "1" * 32, "CA1\n", "../../x", "AC" + "2" * 32, ""]


def voice_form(rnd: random.Random) -> dict[str, str]:
    """Any subset of the fields (over the real form or none), each with any value."""
    form = dict(VOICE_FORM) if rnd.randrange(2) else {}
    for name in rnd.sample([*VOICE_FORM, "Caller"], rnd.randint(0, len(VOICE_FORM) + 1)):
        form[name] = rnd.choice(FORM_VALUES) if rnd.randrange(4) == 0 else any_text(rnd, 80)
    return form


@settings(BATCHED, max_examples=330)  # ~1,350-1,450 forms (1200 unbatched)
@given(batches(seeded(voice_form)))
def test_twilio_voice_webhook_forms_are_answered_whatever_they_hold(forms: list[dict[str, str]]) -> None:
    for form in forms:
        # Through the wire encoding the route reads, so characters survive as Twilio would send them.
        params = parse_qsl(urlencode(form), keep_blank_values=True)
        try:
            call = parse_voice_call(params)
        except CallEventError as exc:
            assert str(exc)
            continue
        assert isinstance(call, VoiceCall)
        # These end up in a REST URL: nothing there may be able to steer it.
        assert SID.fullmatch(call.call_sid) and (not call.account_sid or SID.fullmatch(call.account_sid))


@pytest.mark.parametrize(("state", "read"), [
    (base64.b64encode(b'{"voxgate_transfer_of": "v3:abc"}').decode(), {"voxgate_transfer_of": "v3:abc"}),
    (base64.b64encode(b'{"a": 1, "b": "x", "c": null}').decode(), {"b": "x"}),  # strings only
    (base64.b64encode(b'["v3:abc"]').decode(), {}),  # not an object
    (base64.b64encode(b"not json").decode(), {}),
    ("not base64!", {}),
    (base64.b64encode(b"[" * 10_000 + b"]" * 10_000).decode(), {}),  # too long to be ours
    (42, {}),
])
def test_a_telnyx_client_state_is_read_only_when_it_is_a_json_object_of_strings(state: object,
                                                                                read: dict[str, str]) -> None:
    body = copy.deepcopy(CALL_INITIATED)
    body["data"]["payload"]["client_state"] = state
    assert parse_call_event(json.dumps(body).encode()).client_state == read

"""The serialiser: every typed server event, in both dialects, validated strictly by the official SDK's
own models; beta's renames and omissions; audio deltas encoded from PCM to the output format, once."""

from __future__ import annotations

import base64
import dataclasses
import typing
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from voxgate.audio import g711
from voxgate.audio.formats import PCM24K, PCMA, PCMU, pcm16_bytes
from voxgate.protocol import server_events as se
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.items import ContentPart, Item
from voxgate.protocol.serialiser import encode_event, wire_event
from voxgate.protocol.session_config import SessionConfig

EVERY_EVENT_TYPE = set(typing.get_args(se.ServerEvent))
SPEECH = (8000 * np.sin(np.arange(480) / 7)).astype(np.int16)


def _message() -> Item:
    return Item(id="item_a", type="message", role="assistant", status="completed",
                content=[ContentPart(type="output_audio", transcript="Hello there.", audio=bytearray(b"\x00\x00" * 48),
                                     audio_format=PCM24K)])


def _user_audio() -> Item:
    return Item(id="item_u", type="message", role="user",
                content=[ContentPart(type="input_audio", transcript=None, audio=bytearray(b"\x01\x00" * 24),
                                     audio_format=PCM24K)])


def _response(status: se.ResponseStatus, **extra: Any) -> se.ResponseResource:
    return se.ResponseResource(
        id="resp_1", status=status, output=(_message().snapshot(),), conversation_id="conv_1",
        max_output_tokens="inf", metadata=None, modalities=("audio",), voice="joe", output_format=PCM24K,
        temperature=0.8,
        usage=None if status == "in_progress" else {
            "total_tokens": 3, "input_tokens": 1, "output_tokens": 2,
            "input_token_details": {"text_tokens": 1, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": 1, "audio_tokens": 1}},
        **extra)


def _ids() -> dict[str, Any]:
    return {"response_id": "resp_1", "item_id": "item_a", "output_index": 0}


def every_event() -> list[se.ServerEvent]:
    config = SessionConfig(id="sess_1")
    message = _message().snapshot()
    call = Item(id="item_f", type="function_call", status="completed", call_id="call_1", name="f", arguments="{}")
    return [
        se.SessionCreated(session=config),
        se.SessionUpdated(session=config),
        se.TranscriptionSessionUpdated(session=config),
        RealtimeError("invalid_value", "Bad value.", param="item_id", event_id="evt_c").to_event(),
        se.InputAudioBufferCleared(),
        se.InputAudioBufferCommitted(item_id="item_u", previous_item_id=None),
        se.InputAudioBufferSpeechStarted(audio_start_ms=120, item_id="item_u"),
        se.InputAudioBufferSpeechStopped(audio_end_ms=900, item_id="item_u"),
        se.InputAudioBufferTimeoutTriggered(audio_start_ms=0, audio_end_ms=5000, item_id="item_t"),
        se.InputAudioBufferDtmfEventReceived(event="5", received_at=1_700_000_000),
        se.ConversationItemAdded(previous_item_id=None, item=message),
        se.ConversationItemDone(previous_item_id="item_u", item=call.snapshot()),
        se.ConversationItemRetrieved(item=_user_audio().snapshot(include_audio=True)),
        se.ConversationItemDeleted(item_id="item_a"),
        se.ConversationItemTruncated(item_id="item_a", content_index=0, audio_end_ms=300),
        se.ConversationItemInputAudioTranscriptionDelta(item_id="item_u", content_index=0, delta="Hi"),
        se.ConversationItemInputAudioTranscriptionCompleted(item_id="item_u", content_index=0, transcript="Hi",
                                                            audio_seconds=0.9),
        se.ConversationItemInputAudioTranscriptionFailed(item_id="item_u", content_index=0,
                                                         error_type="server_error", code="transcription_failed",
                                                         message="no words"),
        se.OutputAudioBufferStarted(response_id="resp_1"),
        se.OutputAudioBufferStopped(response_id="resp_1"),
        se.OutputAudioBufferCleared(response_id="resp_1"),
        se.ResponseCreated(response=_response("in_progress")),
        se.ResponseDone(response=_response("completed")),
        se.ResponseOutputItemAdded(response_id="resp_1", output_index=0, item=message),
        se.ResponseOutputItemDone(response_id="resp_1", output_index=1, item=call.snapshot()),
        se.ResponseContentPartAdded(**_ids(), part=se.OutputPart("audio", "")),
        se.ResponseContentPartDone(**_ids(), part=se.OutputPart("text", "Hello.")),
        se.ResponseOutputAudioDelta(**_ids(), pcm=SPEECH, format=PCM24K),
        se.ResponseOutputAudioDone(**_ids()),
        se.ResponseOutputAudioTranscriptDelta(**_ids(), delta="Hel"),
        se.ResponseOutputAudioTranscriptDone(**_ids(), transcript="Hello."),
        se.ResponseOutputTextDelta(**_ids(), delta="Hel"),
        se.ResponseOutputTextDone(**_ids(), text="Hello."),
        se.ResponseFunctionCallArgumentsDelta(response_id="resp_1", item_id="item_f", output_index=1,
                                              call_id="call_1", delta="{}"),
        se.ResponseFunctionCallArgumentsDone(response_id="resp_1", item_id="item_f", output_index=1,
                                             call_id="call_1", name="f", arguments="{}"),
    ]


def test_the_examples_cover_every_server_event_type() -> None:
    assert {type(event) for event in every_event()} == EVERY_EVENT_TYPE


@pytest.mark.parametrize("event", every_event(), ids=lambda e: e.type)
def test_every_event_validates_in_ga(event: se.ServerEvent, ga_server_events: TypeAdapter[Any]) -> None:
    wire = wire_event(event, "ga")
    assert wire is not None and wire["type"] == event.type
    if event.type == "transcription_session.updated":
        return  # a beta event that GA clients are sent as it is (the GA SDK has no model for it)
    ga_server_events.validate_python(wire)


@pytest.mark.parametrize("event", every_event(), ids=lambda e: e.type)
def test_every_event_validates_in_beta_or_is_left_out(event: se.ServerEvent,
                                                      beta_server_events: TypeAdapter[Any]) -> None:
    wire = wire_event(event, "beta")
    if event.type in ("conversation.item.done", "input_audio_buffer.dtmf_event_received",
                      "input_audio_buffer.timeout_triggered"):
        assert wire is None  # beta has no such event
        return
    assert wire is not None
    beta_server_events.validate_python(wire)


def test_beta_names() -> None:
    renamed = {type(e): (wire or {}).get("type") for e in every_event() if (wire := wire_event(e, "beta"))}
    assert renamed[se.ResponseOutputAudioDelta] == "response.audio.delta"
    assert renamed[se.ResponseOutputAudioTranscriptDone] == "response.audio_transcript.done"
    assert renamed[se.ResponseOutputTextDelta] == "response.text.delta"
    assert renamed[se.ConversationItemAdded] == "conversation.item.created"
    assert renamed[se.SessionCreated] == "session.created"


def test_beta_shapes_resources_its_own_way() -> None:
    created = se.ResponseCreated(response=_response("in_progress"))
    ga, beta = wire_event(created, "ga"), wire_event(created, "beta")
    assert ga is not None and beta is not None
    assert ga["response"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert beta["response"]["output_audio_format"] == "pcm16" and "audio" not in beta["response"]
    assert beta["response"]["output"][0]["content"][0]["type"] == "audio"  # GA's output_audio
    session = wire_event(se.SessionUpdated(session=SessionConfig(id="sess_1")), "beta")
    assert session is not None and session["session"]["input_audio_format"] == "pcm16"


def test_status_details_say_why_a_response_ended() -> None:
    cancelled = wire_event(se.ResponseDone(response=_response("cancelled", cancel_reason="turn_detected")), "ga")
    assert cancelled is not None
    assert cancelled["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    failed = wire_event(se.ResponseDone(response=_response("failed", error_type="server_error",
                                                           error_code="engine_error")), "ga")
    assert failed is not None
    assert failed["response"]["status_details"] == {"type": "failed",
                                                    "error": {"type": "server_error", "code": "engine_error"}}


@pytest.mark.parametrize(("fmt", "encode"), [(PCM24K, pcm16_bytes), (PCMU, g711.ulaw_encode),
                                             (PCMA, g711.alaw_encode)])
def test_audio_deltas_carry_pcm_and_leave_in_the_output_format(fmt: Any, encode: Any) -> None:
    event = se.ResponseOutputAudioDelta(**_ids(), pcm=SPEECH, format=fmt)
    wire = wire_event(event, "ga")
    assert wire is not None and base64.b64decode(wire["delta"]) == encode(SPEECH)


def test_errors_name_the_client_event_and_dtmf_has_no_event_id() -> None:
    error = wire_event(RealtimeError("invalid_value", "Bad.", param="x", event_id="evt_c").to_event(), "beta")
    assert error is not None and error["error"] == {"type": "invalid_request_error", "code": "invalid_value",
                                                    "message": "Bad.", "param": "x", "event_id": "evt_c"}
    dtmf = wire_event(se.InputAudioBufferDtmfEventReceived(event="#", received_at=1), "ga")
    assert dtmf == {"type": "input_audio_buffer.dtmf_event_received", "event": "#", "received_at": 1}


def test_an_item_snapshot_does_not_follow_the_item() -> None:
    item = _message()
    event = se.ConversationItemAdded(previous_item_id=None, item=item.snapshot())
    item.status = "incomplete"
    item.content[0].transcript = "Hello"
    wire = wire_event(event, "ga")
    assert wire is not None
    assert wire["item"]["status"] == "completed" and wire["item"]["content"][0]["transcript"] == "Hello there."


def test_encode_event_is_compact_json_and_events_are_frozen() -> None:
    text = encode_event(se.InputAudioBufferCleared(event_id="event_1"), "ga")
    assert text == '{"type":"input_audio_buffer.cleared","event_id":"event_1"}'
    assert encode_event(se.ConversationItemDone(previous_item_id=None, item=_message()), "beta") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        se.InputAudioBufferCleared().event_id = "x"  # type: ignore[misc]

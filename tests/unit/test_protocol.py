"""The sans-IO Realtime protocol core: client event parsing, session config, dialect translation."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.input_batches import BATCHED, batches
from voxgate.audio.formats import PCMU
from voxgate.protocol import client_events as ce
from voxgate.protocol.dialect import dialect_from_handshake
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.json_text import MAX_JSON_DEPTH, parse_json
from voxgate.protocol.session_config import SessionConfig

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "samples" / "openai_events"


def parse(event: dict[str, Any], dialect: str = "ga") -> ce.ClientEvent:
    return ce.parse_client_event(json.dumps(event), dialect, 1 << 20)  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect, name", [("ga", "ga_client.jsonl"), ("beta", "beta_client.jsonl")])
def test_every_reference_client_event_parses(dialect: str, name: str) -> None:
    lines = (SAMPLES / name).read_text().splitlines()
    assert lines
    for line in lines:
        event = ce.parse_client_event(line, dialect, 1 << 20)  # type: ignore[arg-type]
        assert isinstance(event, ce.ClientEvent)


def test_reference_session_updates_apply_in_both_dialects() -> None:
    for dialect, name in (("ga", "ga_client.jsonl"), ("beta", "beta_client.jsonl")):
        for line in (SAMPLES / name).read_text().splitlines():
            event = ce.parse_client_event(line, dialect, 1 << 20)  # type: ignore[arg-type]
            if isinstance(event, ce.SessionUpdate):
                cfg = SessionConfig(id="sess_1").updated(event.session, dialect)  # type: ignore[arg-type]
                assert cfg.input_format == PCMU if "pcmu" in line or "ulaw" in line else True


def test_append_decodes_base64_and_rejects_garbage() -> None:
    event = parse({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02").decode()})
    assert isinstance(event, ce.InputAudioBufferAppend) and event.audio == b"\x01\x02"
    with pytest.raises(RealtimeError) as info:
        parse({"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "e1"})
    assert info.value.param == "audio" and info.value.event_id == "e1"


@pytest.mark.parametrize("event, code, param", [
    ({"type": "nope"}, "invalid_event_type", "type"),
    ({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0}, "missing_required_parameter",
     "audio_end_ms"),
    ({"type": "conversation.item.truncate", "item_id": "x", "content_index": "0", "audio_end_ms": 1},
     "invalid_type", "content_index"),
    ({"type": "response.create", "response": {"conversation": "sometimes"}}, "invalid_value",
     "response.conversation"),
    ({"type": "response.create", "response": {"bogus": 1}}, "unknown_parameter", "response.bogus"),
    ({"type": "input_audio_buffer.commit", "extra": 1}, "unknown_parameter", "extra"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",
                                                   "content": [{"type": "input_audio", "audio": ""}]}},
     "invalid_value", "item.content[0].type"),
])
def test_bad_events_name_the_offending_parameter(event: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(RealtimeError) as info:
        parse(event)
    assert info.value.code == code
    assert info.value.param == param


def test_oversized_and_non_json_messages() -> None:
    with pytest.raises(RealtimeError) as info:
        ce.parse_client_event("x" * 100, "ga", 10)
    assert info.value.code == "message_too_large"
    with pytest.raises(RealtimeError) as info:
        ce.parse_client_event("{not json", "ga", 100)
    assert info.value.code == "invalid_json"


@given(st.text(max_size=200))
def test_parser_raises_only_realtime_errors(raw: str) -> None:
    try:
        ce.parse_client_event(raw, "ga", 1 << 16)
    except RealtimeError as exc:
        assert exc.to_event().message


@given(st.dictionaries(st.sampled_from(["type", "event_id", "session", "item", "audio", "response", "item_id",
                                        "content_index", "audio_end_ms", "response_id"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)), max_size=5),
       st.sampled_from(["ga", "beta"]))
def test_parser_never_crashes_on_event_shaped_garbage(data: dict[str, Any], dialect: str) -> None:
    try:
        parse(data, dialect)
    except RealtimeError:
        pass


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deep_nesting_is_refused_as_invalid_json(depth: int) -> None:
    # The event itself and its "session" are two levels; the rest is nested inside the session.
    event = '{"type":"session.update","session":{"instructions":' + "[" * (depth - 2) + "]" * (depth - 2) + "}}"
    if depth <= MAX_JSON_DEPTH:
        assert isinstance(ce.parse_client_event(event, "ga", 1 << 20), ce.SessionUpdate)
        return
    with pytest.raises(RealtimeError) as info:
        ce.parse_client_event(event, "ga", 1 << 20)
    assert info.value.code == "invalid_json" and info.value.type == "invalid_request_error"
    assert f"deeper than {MAX_JSON_DEPTH} levels" in info.value.message


def test_brackets_inside_strings_are_not_nesting() -> None:
    event = {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "[" * 10_000 + "{" * 10_000}]}}
    assert isinstance(parse(event), ce.ConversationItemCreate)
    assert parse_json(json.dumps(nested(MAX_JSON_DEPTH))) == nested(MAX_JSON_DEPTH)
    with pytest.raises(RealtimeError, match="deeper"):
        parse_json(json.dumps(nested(MAX_JSON_DEPTH + 1)).encode())


def _text_item(*texts: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": text} for text in texts]}}


@pytest.mark.parametrize(("event", "param"), [
    (_text_item("x" * 101), "item.content[0].text"),
    (_text_item("x" * 60, "y" * 41), "item.content[1].text"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_audio", "transcript": "x" * 101}]}}, "item.content[0].transcript"),
    ({"type": "conversation.item.create", "item": {"type": "function_call", "call_id": "c", "name": "f",
                                                   "arguments": "1" * 101}}, "item.arguments"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c",
                                                   "output": "o" * 101}}, "item.output"),
    ({"type": "response.create", "response": {"input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x" * 101}]}]}},
     "response.input[0].content[0].text"),
])
def test_items_over_the_text_limit_are_refused_naming_the_field(event: dict[str, Any], param: str) -> None:
    with pytest.raises(RealtimeError) as info:
        ce.parse_client_event(json.dumps({**event, "event_id": "evt_big"}), "ga", 1 << 20, max_item_chars=100)
    error = info.value.to_event()
    assert error.error_type == "invalid_request_error" and error.code == "string_above_max_length"
    assert error.param == param and error.client_event_id == "evt_big" and "at most 100 characters" in error.message


def test_items_up_to_the_text_limit_are_taken() -> None:
    event = ce.parse_client_event(json.dumps(_text_item("x" * 60, "y" * 40)), "ga", 1 << 20, max_item_chars=100)
    assert isinstance(event, ce.ConversationItemCreate)


# Any JSON at all in events of every type, with a field nested up to three times the limit: a typed event
# or a RealtimeError.
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=10)
_event_types = st.sampled_from([*ce.WIRE_TYPES.values(), "nope", ""])
_event_keys = st.sampled_from(["session", "item", "audio", "response", "item_id", "content_index", "audio_end_ms",
                               "response_id", "previous_item_id", "event_id", "type"])


@settings(BATCHED, max_examples=110)  # ~500 events (400 unbatched)
@given(batches(_event_types, st.dictionaries(_event_keys, _json, max_size=4), st.sampled_from(["ga", "beta"]),
               st.integers(0, 3 * MAX_JSON_DEPTH)))
def test_parser_answers_any_event_with_an_event_or_a_realtime_error(
        events: list[tuple[str, dict[str, Any], str, int]]) -> None:
    for kind, fields, dialect, depth in events:
        event = {"type": kind, **fields}
        if depth:
            event[str(kind.split(".")[0] or "session")] = nested(depth)
        try:
            parsed = ce.parse_client_event(json.dumps(event), dialect, 1 << 20,  # type: ignore[arg-type]
                                           max_item_chars=64)
        except RealtimeError as exc:
            error = exc.to_event()
            assert error.error_type == "invalid_request_error" and error.message and error.code
        else:
            assert isinstance(parsed, ce.ClientEvent) and depth <= MAX_JSON_DEPTH


def test_session_update_is_all_or_nothing() -> None:
    cfg = SessionConfig(id="sess_1", instructions="old")
    with pytest.raises(RealtimeError) as info:
        cfg.updated({"instructions": "new", "audio": {"input": {"format": {"type": "audio/flac"}}}}, "ga")
    assert info.value.param and info.value.param.startswith("session.audio.input.format")
    assert cfg.instructions == "old"


def test_ga_and_beta_session_shapes_round_trip() -> None:
    cfg = SessionConfig(id="sess_1").updated({"input_audio_format": "g711_ulaw", "voice": "alloy",
                                              "turn_detection": None, "modalities": ["text"]}, "beta")
    ga = cfg.to_ga()
    assert ga["type"] == "realtime" and ga["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert ga["audio"]["input"]["turn_detection"] is None and ga["output_modalities"] == ["text"]
    beta = cfg.to_beta()
    assert beta["input_audio_format"] == "g711_ulaw" and beta["voice"] == "alloy"
    again = SessionConfig(id="sess_1").updated({k: v for k, v in ga.items()
                                                if k not in ("object", "id", "expires_at")}, "ga")
    assert again.to_beta() == beta


def test_semantic_vad_and_bad_turn_detection() -> None:
    cfg = SessionConfig(id="s").updated({"audio": {"input": {"turn_detection": {"type": "semantic_vad",
                                                                                 "eagerness": "low"}}}}, "ga")
    assert cfg.turn_detection == {"type": "semantic_vad", "eagerness": "low", "create_response": True,
                                  "interrupt_response": True}
    with pytest.raises(RealtimeError):
        cfg.updated({"turn_detection": {"type": "server_vad", "threshold": 3}}, "beta")


def test_dialect_from_handshake() -> None:
    assert dialect_from_handshake({"openai-beta": "realtime=v1"}, []) == "beta"
    assert dialect_from_handshake({"openai-beta": "assistants=v2, realtime=v1"}, []) == "beta"
    assert dialect_from_handshake({}, ["realtime", "openai-beta.realtime-v1"]) == "beta"
    assert dialect_from_handshake({}, ["realtime"]) == "ga"

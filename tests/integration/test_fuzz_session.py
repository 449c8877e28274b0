"""Thousands of generated client events thrown at one live session, which must answer each bad one
with a well-formed `error` event, never close, and then still complete a normal turn."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ErrorRecords, LiveServer

CLIENT_TYPES = [
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.retrieve", "conversation.item.truncate",
    "conversation.item.delete", "response.create", "response.cancel", "output_audio_buffer.clear",
    "transcription_session.update", "no.such.event", "",
]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                      st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)), max_leaves=12)

fields = st.fixed_dictionaries({}, optional={
    "session": st.one_of(json_value, st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["realtime", "transcription", "bogus"]),
        "instructions": json_value,
        "output_modalities": st.one_of(st.just(["text"]), json_value),
        "audio": st.one_of(json_value, st.just({"input": {"format": {"type": "audio/pcmu"}}}),
                           st.just({"output": {"voice": "no-such-voice"}}),
                           st.just({"input": {"turn_detection": None}})),
        "tools": st.one_of(json_value, st.just([{"type": "function", "name": "f"}])),
        "tool_choice": json_value,
    })),
    "audio": st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=20),
                       json_value),
    "item": st.one_of(json_value, st.fixed_dictionaries({"type": st.sampled_from(
        ["message", "function_call", "function_call_output", "weird"])}, optional={
        "role": st.sampled_from(["user", "assistant", "system", "robot"]),
        "content": st.one_of(json_value, st.just([{"type": "input_text", "text": "hi"}])),
        "call_id": json_value, "output": json_value, "id": json_value,
    })),
    "item_id": json_value,
    "previous_item_id": json_value,
    "content_index": json_value,
    "audio_end_ms": json_value,
    "response": st.one_of(json_value, st.fixed_dictionaries({}, optional={
        "conversation": st.sampled_from(["none", "auto", "x"]), "output_modalities": json_value,
        "instructions": json_value, "metadata": json_value, "tool_choice": json_value})),
    "response_id": json_value,
    "event_id": st.one_of(st.text(max_size=10), json_value),
})

client_event = st.builds(lambda t, f: {"type": t, **f}, st.sampled_from(CLIENT_TYPES), fields)


def _nested(depth: int, event: dict[str, Any]) -> str:
    """`event` with a value nested `depth` deep in one of its fields (arrays and objects in turn)."""
    field = next((k for k in ("session", "item", "response", "audio") if k in event), "session")
    inner = "[" * depth + "]" * depth if depth % 2 else '{"a":' * depth + "1" + "}" * depth
    return json.dumps({**event, field: None}).replace(f'"{field}": null', f'"{field}": {inner}')


raw_message = st.one_of(
    client_event.map(json.dumps),
    st.text(max_size=40),  # not JSON at all
    json_value.map(json.dumps),  # JSON, but not an event
    st.builds(_nested, st.sampled_from([33, 40, 1000, 50_000]), client_event),  # nested too deep
    st.builds(lambda n, t: json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": t * n}]}}),  # over max_item_text_chars
              st.sampled_from([512 * 1024 + 1, 600_000]), st.sampled_from(["@", "1 ", "a"])),
)


_sentinels = itertools.count()


@pytest.fixture(scope="module")
def fuzz_connection(live_server: LiveServer) -> Iterator[ClientConnection]:
    with connect(f"{live_server.ws_url}/v1/realtime?model=fuzz",
                 additional_headers={"Authorization": f"Bearer {live_server.api_key}"},
                 max_size=None) as ws:
        created = json.loads(ws.recv(timeout=10))
        assert created["type"] == "session.created"
        yield ws


def read_until_sentinel(ws: ClientConnection, sentinel: str, adapter: TypeAdapter[Any]) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(ws.recv(timeout=30))
        adapter.validate_python(event)
        events.append(event)
        if event["type"] == "error":
            err = event["error"]
            assert err["message"] and err["type"]
            assert "code" in err and "param" in err and "event_id" in err
            assert err["type"] != "server_error", err  # a bad event is the client's mistake, never a crash
            if err.get("event_id") == sentinel:
                return events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(batch=st.lists(raw_message, min_size=1, max_size=25))
def test_generated_events_never_break_the_session(batch: list[str], fuzz_connection: ClientConnection,
                                                  ga_server_events: TypeAdapter[Any],
                                                  error_logs: ErrorRecords) -> None:
    for message in batch:
        fuzz_connection.send(message)
    sentinel = f"sentinel-{next(_sentinels)}"
    fuzz_connection.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "item_absent",
                                     "event_id": sentinel}))
    read_until_sentinel(fuzz_connection, sentinel, ga_server_events)
    assert not error_logs.records, [r.getMessage() for r in error_logs.records]  # no traceback logged


def test_session_still_completes_a_turn_after_fuzzing(fuzz_connection: ClientConnection,
                                                      ga_server_events: TypeAdapter[Any]) -> None:
    ws = fuzz_connection
    # Put the session back in a known state: text out, no pending response.
    ws.send(json.dumps({"type": "response.cancel", "event_id": "reset-cancel"}))
    ws.send(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "output_modalities": ["text"], "instructions": "", "tools": [], "tool_choice": "auto",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}}))
    ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "what's the status of order 4567"}]}}))
    ws.send(json.dumps({"type": "response.create"}))
    text = ""
    while True:
        event = json.loads(ws.recv(timeout=30))
        ga_server_events.validate_python(event)
        if event["type"] == "response.output_text.delta":
            text += event["delta"]
        if event["type"] == "response.done" and event["response"]["status"] == "completed" and text:
            break
    assert "shipped" in text.lower()

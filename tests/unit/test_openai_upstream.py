"""The sans-IO upstream session: mirroring a history by content, and reading the upstream's events."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.agents import AgentConfig
from voxgate.engines.base import AudioChunk, HistoryEntry, ResponseRequest, TextDelta, ToolCall, ToolSpec
from voxgate.engines.openai_upstream import (
    Output,
    RateLimits,
    ResponseEnded,
    Send,
    UpstreamConversation,
    UpstreamError,
)


def conversation() -> UpstreamConversation:
    counter = itertools.count()
    return UpstreamConversation(new_id=lambda prefix: f"{prefix}_{next(counter)}")


def request(history: list[HistoryEntry], **kw: Any) -> ResponseRequest:
    base: dict[str, Any] = dict(history=history, instructions="Be brief.", tools=[], tool_choice="auto",
                                modalities=["audio"], voice="marin", agent=AgentConfig(name="a"))
    return ResponseRequest(**{**base, **kw})


class FakeUpstream:
    """Applies item creates and deletes the way a Realtime server keeps its conversation."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def apply(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["type"] == "conversation.item.delete":
                ids = [i["id"] for i in self.items]
                assert event["item_id"] in ids, "deleted an item the upstream does not have"
                del self.items[ids.index(event["item_id"])]
            elif event["type"] == "conversation.item.create":
                assert event["item"]["id"] not in {i["id"] for i in self.items}
                self.items.append(event["item"])

    def contents(self) -> list[tuple[str, ...]]:
        return [content_of(i) for i in self.items]


def content_of(item: dict[str, Any]) -> tuple[str, ...]:
    if item["type"] == "function_call":
        return ("function_call", item["call_id"], item["name"], item["arguments"])
    if item["type"] == "function_call_output":
        return ("function_call_output", item["call_id"], item["output"])
    part = item["content"][0]
    return (item["role"], part.get("text") or part.get("transcript") or "")


def content_of_entry(e: HistoryEntry) -> tuple[str, ...]:
    if e.kind == "function_call":
        return ("function_call", e.call_id, e.name, e.arguments or "{}")
    if e.kind == "function_call_output":
        return ("function_call_output", e.call_id, e.output)
    return (e.kind, e.text)


entries = st.one_of(
    st.builds(HistoryEntry, kind=st.sampled_from(["user", "assistant", "system"]), text=st.sampled_from(
        ["", "hi", "order 4567", "Sorry, I did not", "Sorry, I did not catch that."])),
    st.builds(HistoryEntry, kind=st.just("function_call"), name=st.just("lookup_order"),
              call_id=st.sampled_from(["c1", "c2"]), arguments=st.sampled_from(['{"order_id": "4567"}', ""])),
    st.builds(HistoryEntry, kind=st.just("function_call_output"), call_id=st.sampled_from(["c1", "c2"]),
              output=st.sampled_from(['{"status": "shipped"}', "{}"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(entries, max_size=8), min_size=1, max_size=5))
def test_mirroring_any_sequence_of_histories_leaves_the_upstream_equal_to_the_latest(
        histories: list[list[HistoryEntry]]) -> None:
    conv = conversation()
    upstream = FakeUpstream()
    for history in histories:
        upstream.apply(conv.mirror(history))
        expected = [content_of_entry(e) for e in history if e.kind not in ("user", "assistant", "system") or e.text]
        assert upstream.contents() == expected
        assert conv.mirror(history) == []  # already in line: nothing to send


@settings(max_examples=100, deadline=None)
@given(st.lists(entries, max_size=6), st.lists(entries, max_size=4))
def test_a_growing_history_only_creates_the_new_entries(old: list[HistoryEntry], new: list[HistoryEntry]) -> None:
    conv = conversation()
    conv.mirror(old)
    events = conv.mirror([*old, *new])
    assert all(e["type"] == "conversation.item.create" for e in events)


def test_a_reply_trimmed_by_barge_in_is_recreated_as_what_was_heard() -> None:
    conv = conversation()
    user = HistoryEntry(kind="user", text="sing me a song")
    events = conv.begin_response(request([user]), user_audio=b"\x01\x00" * 2400)
    created = [e for e in events if e["type"] == "conversation.item.create"]
    assert created[0]["item"]["content"][0]["type"] == "input_audio"
    assert created[0]["item"]["content"][0]["transcript"] == "sing me a song"
    assert events[-1]["type"] == "response.create"
    conv.receive({"type": "response.created", "response": {"id": "resp_1"}})
    said = "Sorry, I did not catch that."
    assert conv.receive({"type": "response.output_audio_transcript.delta", "response_id": "resp_1",
                         "delta": said}) == [Output(TextDelta(said))]
    out = conv.receive({"type": "response.done", "response": {
        "id": "resp_1", "status": "cancelled", "usage": {"total_tokens": 5, "input_token_details": {"audio_tokens": 3}},
        "output": [{"id": "item_up", "type": "message", "role": "assistant",
                    "content": [{"type": "output_audio", "transcript": "Sorry, I did not catch that."}]}]}})
    assert out == [ResponseEnded("cancelled")]
    assert not conv.in_flight
    heard = HistoryEntry(kind="assistant", text="Sorry, I did")
    again = HistoryEntry(kind="user", text="stop")
    events = conv.begin_response(request([user, heard, again]))
    kinds = [(e["type"], e.get("item_id") or e.get("item", {}).get("role")) for e in events]
    assert kinds == [("conversation.item.delete", "item_up"), ("conversation.item.create", "assistant"),
                     ("conversation.item.create", "user"), ("response.create", None)]
    assert events[1]["item"]["content"] == [{"type": "output_text", "text": "Sorry, I did"}]
    assert conv.take_usage() == {"total_tokens": 5, "input_token_details": {"audio_tokens": 3}}
    assert conv.take_usage() is None


def test_session_config_is_sent_when_it_changes_and_a_refused_voice_is_not_asked_again() -> None:
    conv = conversation()
    tools = [ToolSpec("lookup_order", "Look up an order", {"type": "object"}, server=True)]
    first = conv.begin_response(request([], tools=tools, voice="joe"))
    updates = [e for e in first if e["type"] == "session.update"]
    assert updates[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert updates[0]["session"]["tools"][0]["name"] == "lookup_order"
    voice_event = updates[1]
    assert voice_event["session"]["audio"]["output"]["voice"] == "joe"
    refused = conv.receive({"type": "error", "error": {
        "type": "invalid_request_error", "code": "invalid_value", "message": "Unsupported voice",
        "event_id": voice_event["event_id"]}})
    assert isinstance(refused[0], UpstreamError)
    conv.receive({"type": "response.created", "response": {"id": "r1"}})
    conv.receive({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}})
    second = conv.begin_response(request([], tools=tools, voice="joe"))
    assert [e["type"] for e in second] == ["response.create"]
    conv.receive({"type": "response.created", "response": {"id": "r2"}})
    conv.receive({"type": "response.done", "response": {"id": "r2", "status": "completed", "output": []}})
    third = conv.begin_response(request([], tools=tools, voice="joe", instructions="Other."))
    assert [e["type"] for e in third] == ["session.update", "response.create"]
    assert third[0]["session"]["instructions"] == "Other."


def test_zero_retention_asks_the_upstream_for_no_trace() -> None:
    kept = conversation().begin_response(request([]))
    assert "tracing" not in kept[0]["session"]  # the upstream's own default
    withheld = conversation().begin_response(request([], zero_retention=True))
    assert withheld[0]["type"] == "session.update" and withheld[0]["session"]["tracing"] is None


def test_function_calls_are_announced_once_per_call_id() -> None:
    conv = conversation()
    conv.begin_response(request([]))
    conv.receive({"type": "response.created", "response": {"id": "r1"}})
    args = {"response_id": "r1", "item_id": "fc", "output_index": 0, "call_id": "call_1"}
    out = conv.receive({"type": "response.function_call_arguments.done", **args, "name": "get_weather",
                        "arguments": '{"city": "Paris"}'})
    assert out == [Output(ToolCall("get_weather", '{"city": "Paris"}', "call_1"))]
    item = {"id": "fc", "type": "function_call", "call_id": "call_1", "name": "get_weather",
            "arguments": '{"city": "Paris"}'}
    assert conv.receive({"type": "response.output_item.done", "response_id": "r1", "output_index": 0,
                         "item": item}) == []
    assert conv.receive({"type": "response.function_call_arguments.done", **args, "name": "get_weather",
                         "arguments": '{"city": "Paris"}'}) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=200), st.lists(st.integers(0, 400), max_size=6))
def test_audio_split_anywhere_across_deltas_comes_back_whole(samples: list[int], cuts: list[int]) -> None:
    conv = conversation()
    conv.begin_response(request([]))
    conv.receive({"type": "response.created", "response": {"id": "r"}})
    data = np.array(samples, dtype="<i2").tobytes()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    got: list[np.ndarray] = []
    for a, b in itertools.pairwise(bounds):
        for note in conv.receive({"type": "response.output_audio.delta", "response_id": "r",
                                  "delta": base64.b64encode(data[a:b]).decode()}):
            assert isinstance(note, Output) and isinstance(note.value, AudioChunk)
            assert note.value.rate == 24000
            got.append(note.value.pcm)
    assert np.concatenate(got).tolist() == samples


def test_a_cancel_before_the_response_exists_is_sent_when_it_does() -> None:
    conv = conversation()
    conv.begin_response(request([]))
    assert conv.cancel() == []
    out = conv.receive({"type": "response.created", "response": {"id": "r9"}})
    assert isinstance(out[0], Send) and out[0].event["type"] == "response.cancel"
    assert out[0].event["response_id"] == "r9"


def test_failures_rate_limits_and_strays() -> None:
    conv = conversation()
    events = conv.begin_response(request([], say="Hello there."))
    assert "Hello there." in events[-1]["response"]["instructions"]
    refused = conv.receive({"type": "error", "error": {"type": "invalid_request_error", "code": "rate_limit_exceeded",
                                                      "message": "slow down", "event_id": events[-1]["event_id"]}})
    assert refused == [ResponseEnded("failed", "slow down", "rate_limit_exceeded")]
    assert not conv.in_flight
    conv.begin_response(request([]))
    conv.receive({"type": "response.created", "response": {"id": "r2"}})
    assert conv.receive({"type": "response.output_text.delta", "response_id": "other", "delta": "x"}) == []
    limits = [{"name": "tokens", "limit": 100, "remaining": 0, "reset_seconds": 1.5}]
    assert conv.receive({"type": "rate_limits.updated", "rate_limits": limits}) == [RateLimits(limits)]
    failed = conv.receive({"type": "response.done", "response": {
        "id": "r2", "status": "failed", "output": [],
        "status_details": {"type": "failed", "error": {"type": "server_error", "code": "server_error"}}}})
    assert failed == [ResponseEnded("failed", "server_error", "server_error")]
    assert conv.receive({"type": "conversation.item.input_audio_transcription.completed", "item_id": "x"}) == []

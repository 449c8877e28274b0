"""The chat-completions wire core: streamed chunks cut anywhere, tool calls assembled from fragments,
errors named, sentences cut as they complete, and the conversation as chat messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.engines.base import HistoryEntry, ToolSpec
from voxgate.engines.chat_completions import (
    ChatStream,
    ChatStreamError,
    ContentDelta,
    Sentences,
    StreamDone,
    ToolCallDone,
    chat_messages,
    chat_tool_choice,
    chat_tools,
)


def sse(*chunks: dict | str, newline: str = "\n") -> bytes:
    parts = [f"data: {c if isinstance(c, str) else json.dumps(c)}{newline}{newline}" for c in chunks]
    return "".join(parts).encode()


def delta(**d: object) -> dict:
    return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}


STREAM = sse(
    delta(role="assistant", content=""),
    delta(content="Your order "),
    delta(content="has shipped."),
    delta(tool_calls=[{"index": 0, "id": "call_a", "type": "function",
                       "function": {"name": "lookup_order", "arguments": ""}}]),
    delta(tool_calls=[{"index": 1, "id": "call_b", "type": "function", "function": {"name": "notify"}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '{"order_id": '}}]),
    delta(tool_calls=[{"index": 1, "function": {"arguments": "{}"}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '"4567"}'}}]),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    "[DONE]",
)
EXPECTED = [ContentDelta("Your order "), ContentDelta("has shipped."),
            ToolCallDone("call_a", "lookup_order", '{"order_id": "4567"}'), ToolCallDone("call_b", "notify", "{}"),
            StreamDone("tool_calls")]


@pytest.mark.parametrize("size", [1, 3, 17, 10_000])
def test_a_stream_cut_anywhere_gives_the_same_events(size: int) -> None:
    stream = ChatStream()
    events = [e for i in range(0, len(STREAM), size) for e in stream.feed(STREAM[i:i + size])]
    assert events == EXPECTED and stream.done
    assert stream.feed(b"data: {}\n\n") == [] and stream.close() == []


def test_crlf_events_comments_and_a_body_that_ends_without_done() -> None:
    stream = ChatStream()
    body = b": keep-alive\r\n\r\n" + sse(delta(content="Hi."), {"choices": [{"index": 0, "delta": {},
                                                                              "finish_reason": "stop"}]},
                                         newline="\r\n")
    assert stream.feed(body) == [ContentDelta("Hi.")]
    assert stream.close() == [StreamDone("stop")]


def test_a_name_repeated_in_every_delta_is_one_name() -> None:
    """llama-cpp-python's streamed tool call repeats the full name (and the id) in every delta."""
    again = {"index": 0, "id": "call_x", "type": "function", "function": {"name": "get_order_status"}}
    body = sse(*(delta(tool_calls=[{**again, "function": {**again["function"], "arguments": piece}}])
                 for piece in ['{"order_id"', ': "4567"}']),
               {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, "[DONE]")
    assert ChatStream().feed(body) == [ToolCallDone("call_x", "get_order_status", '{"order_id": "4567"}'),
                                       StreamDone("tool_calls")]


@pytest.mark.parametrize(("written", "passed_on"), [
    ('{"order_id": "4567"}', '{"order_id": "4567"}'),  # strict JSON goes as written
    ('{"order_id": "}\n\n\nThe status of order 4567 is: " }',
     '{"order_id": "}\\n\\n\\nThe status of order 4567 is: "}'),
    ('{"note": "a\tb"}', '{"note": "a\\tb"}'),
    ('{"order_id": 45', '{"order_id": 45'),  # not JSON at all: the tool's validation answers it
])
def test_tool_arguments_reach_the_client_as_strict_json(written: str, passed_on: str) -> None:
    """llama.cpp's small models write raw newlines inside a string; every client's JSON parser refuses them."""
    body = sse(delta(tool_calls=[{"index": 0, "id": "call_y", "function": {"name": "f", "arguments": written}}]),
               {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, "[DONE]")
    assert ChatStream().feed(body)[0] == ToolCallDone("call_y", "f", passed_on)


@pytest.mark.parametrize(("body", "message"), [
    (b"data: not json\n\n", "not JSON"),
    (sse({"error": {"message": "model overloaded"}}), "model overloaded"),
    (sse(delta(tool_calls=[{"index": 99}])), "index out of range"),
    (sse(delta(tool_calls=[{"index": 0, "function": {"arguments": "{}"}}]), "[DONE]"), "without a name"),
])
def test_what_no_llm_server_should_send_is_named(body: bytes, message: str) -> None:
    with pytest.raises(ChatStreamError, match=message):
        ChatStream().feed(body)


def test_a_cut_off_answer_is_an_error() -> None:
    stream = ChatStream()
    stream.feed(sse(delta(content="Your order")))
    with pytest.raises(ChatStreamError, match="without a finish_reason"):
        stream.close()


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_no_bytes_raise_anything_but_a_stream_error(pieces: list[bytes]) -> None:
    stream = ChatStream()
    try:
        for piece in pieces:
            stream.feed(piece)
        stream.close()
    except ChatStreamError:
        pass


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["choices", "index", "delta", "content", "tool_calls", "function", "name",
                                         "arguments", "id", "finish_reason", "error", "usage"]), inner, max_size=4),
                    max_leaves=12)


@given(st.lists(JSON, max_size=6))
def test_no_json_chunk_raises_anything_but_a_stream_error(chunks: list[object]) -> None:
    stream = ChatStream()
    try:
        stream.feed(b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks))
        stream.close()
    except ChatStreamError:
        pass


def test_sentences_leave_as_soon_as_the_next_begins() -> None:
    cut = Sentences()
    assert cut.feed("Your order has ship") == []
    assert cut.feed("ped. Dr. Lee signed for it at 3 p.m. on") == ["Your order has shipped."]
    assert cut.feed(" Monday! Anything") == ["Dr. Lee signed for it at 3 p.m. on Monday!"]
    assert cut.flush() == ["Anything"] and cut.flush() == []


def test_the_conversation_as_chat_messages() -> None:
    history = [
        HistoryEntry("user", "where is order 4567"),
        HistoryEntry("function_call", name="lookup_order", call_id="c1", arguments='{"order_id":"4567"}'),
        HistoryEntry("function_call", name="notify", call_id="c2"),
        HistoryEntry("function_call_output", call_id="c1", output='{"status":"shipped"}'),
        HistoryEntry("function_call_output", call_id="c2", output="{}"),
        HistoryEntry("function_call_output", call_id="gone", output='{"x":1}'),
        HistoryEntry("assistant", "It has shipped."),
    ]
    messages = chat_messages("Be brief.", history)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "user", "assistant"]
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[2]["tool_calls"][1]["function"]["arguments"] == "{}"
    assert messages[2]["content"] == ""  # not null, not absent: llama-cpp-python's server takes neither
    assert messages[5]["content"].startswith("(A tool answered")


def test_tools_and_tool_choice_in_the_chat_shapes() -> None:
    spec = ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}}, False)
    assert chat_tools([spec]) == [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                                                    "parameters": spec.parameters}}]
    assert chat_tool_choice({"type": "function", "name": "get_weather"}) == {
        "type": "function", "function": {"name": "get_weather"}}
    assert chat_tool_choice("required") == "required"

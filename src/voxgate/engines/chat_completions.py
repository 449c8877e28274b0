"""OpenAI's Chat Completions wire format, both sides, sans-IO: what the cascade engine sends to an LLM
service (vLLM, llama.cpp server, Ollama, OpenAI) and reads back as it streams, and what voxgate's own
`/v1/chat/completions` reads and writes.

- `chat_messages(instructions, history)`: the conversation as chat messages (a system message, user and
  assistant turns, assistant `tool_calls` and `tool` results, each tool call with its result).
- `chat_tools(tools)`, `chat_tool_choice(choice)`: Realtime's flat function tools and tool_choice in
  the chat API's nested shapes.
- `ChatStream`: bytes of a streamed answer (server-sent events) in, typed events out: `ContentDelta`,
  `ToolCallDone` (arguments assembled from their fragments, per index), `StreamDone(finish_reason)`,
  or `ChatStreamError` for what no LLM server should send.
- `Sentences`: streamed text cut into sentences as soon as each is complete, for text to speech.

No sockets, tasks or clocks here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxgate.engines.base import HistoryEntry, ToolSpec

__all__ = [
    "ChatStream",
    "ChatStreamError",
    "ContentDelta",
    "Sentences",
    "StreamDone",
    "ToolCallDone",
    "chat_messages",
    "chat_tool_choice",
    "chat_tools",
]

MAX_EVENT_BYTES = 1 << 20  # one server-sent event beyond this is not an LLM's token
MAX_TOOL_CALLS = 16


class ChatStreamError(ValueError):
    """The stream is not a chat-completions stream (or breaks its own rules)."""


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    call_id: str
    name: str
    arguments: str  # a JSON object, as the model wrote it


@dataclass(frozen=True, slots=True)
class StreamDone:
    finish_reason: str | None
    usage: dict[str, Any] | None = None


ChatEvent = ContentDelta | ToolCallDone | StreamDone


def chat_messages(instructions: str, history: Iterable[HistoryEntry]) -> list[dict[str, Any]]:
    """The conversation as chat messages. Consecutive function calls become one assistant message with
    several `tool_calls`; a call's output is the `tool` message after it. Outputs whose call is not in
    the history (trimmed away) become user-visible context, not orphan tool messages a server refuses."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    called: set[str] = set()
    for entry in history:
        if entry.kind == "user":
            messages.append({"role": "user", "content": entry.text})
        elif entry.kind == "assistant":
            messages.append({"role": "assistant", "content": entry.text})
        elif entry.kind == "system":
            messages.append({"role": "system", "content": entry.text})
        elif entry.kind == "function_call":
            call = {"id": entry.call_id, "type": "function",
                    "function": {"name": entry.name, "arguments": entry.arguments or "{}"}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") \
                    and not last.get("content"):
                last["tool_calls"].append(call)
            else:
                # Empty, not null: OpenAI takes either, but llama-cpp-python's server refuses null and its
                # function-calling template fails on a message without content.
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            called.add(entry.call_id)
        elif entry.kind == "function_call_output":
            if entry.call_id in called:
                messages.append({"role": "tool", "tool_call_id": entry.call_id, "content": entry.output})
            else:
                messages.append({"role": "user", "content": f"(A tool answered: {entry.output})"})
    return messages


def chat_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters or {"type": "object", "properties": {}}}}
            for t in tools]


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """Realtime's `{"type": "function", "name": n}` is the chat API's `{"type": "function", "function":
    {"name": n}}`; "auto", "none" and "required" are the same words."""
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}
    return choice


@dataclass
class _PendingCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStream:
    """A streamed chat completion's bytes in (`feed`), typed events out; `close()` at the end of the body."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._calls: dict[int, _PendingCall] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, data: bytes) -> list[ChatEvent]:
        if self.done:
            return []
        self._buffer += data
        events: list[ChatEvent] = []
        while True:
            end = _event_end(self._buffer)
            if end is None:
                if len(self._buffer) > MAX_EVENT_BYTES:
                    raise ChatStreamError("a server-sent event longer than 1 MiB")
                return events
            raw, self._buffer = bytes(self._buffer[:end[0]]), self._buffer[end[1]:]
            events.extend(self._event(raw))
            if self.done:
                return events

    def close(self) -> list[ChatEvent]:
        """The body ended: what is left, and the end (a server that closes without `[DONE]` has finished
        when it gave a finish_reason; otherwise the answer was cut off)."""
        if self.done:
            return []
        events = self._event(bytes(self._buffer)) if self._buffer.strip() else []
        if not self.done:
            if self._finish is None and not self._calls:
                raise ChatStreamError("the stream ended without a finish_reason or [DONE]")
            events.extend(self._end())
        return events

    def _event(self, raw: bytes) -> list[ChatEvent]:
        data_lines = [line[5:].lstrip() for line in raw.decode("utf-8", "replace").splitlines()
                      if line.startswith("data:")]
        if not data_lines:
            return []  # a comment (": keep-alive") or an event without data
        data = "\n".join(data_lines)
        if data.strip() == "[DONE]":
            return self._end()
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ChatStreamError(f"a chunk that is not JSON: {data[:80]!r}") from exc
        if not isinstance(chunk, dict):
            raise ChatStreamError("a chunk that is not a JSON object")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise ChatStreamError(f"the LLM service reported an error: {message}")
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        events: list[ChatEvent] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n=1: other choices are not ours
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    events.append(ContentDelta(content))
                calls = delta.get("tool_calls")
                for call in calls if isinstance(calls, list) else []:
                    self._tool_call_delta(call)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        return events

    def _tool_call_delta(self, call: Any) -> None:
        if not isinstance(call, dict):
            raise ChatStreamError("a tool call delta that is not an object")
        index = call.get("index", 0)
        if not isinstance(index, int) or not 0 <= index < MAX_TOOL_CALLS:
            raise ChatStreamError(f"a tool call index out of range: {index!r}")
        pending = self._calls.setdefault(index, _PendingCall())
        if call.get("id"):
            pending.call_id = str(call["id"])
        function = call.get("function") or {}
        if isinstance(function, dict):
            name = function.get("name")
            # OpenAI and vLLM send the name once; llama-cpp-python repeats the whole name in every delta.
            # Names do not stream in pieces in practice, but a fragment that differs is still appended.
            if name and str(name) != pending.name:
                pending.name += str(name)
            if isinstance(function.get("arguments"), str):
                pending.arguments.append(function["arguments"])

    def _end(self) -> list[ChatEvent]:
        self.done = True
        events: list[ChatEvent] = []
        for index in sorted(self._calls):
            pending = self._calls[index]
            if not pending.name:
                raise ChatStreamError("a tool call without a name")
            events.append(ToolCallDone(pending.call_id or f"call_{index}", pending.name,
                                       strict_json("".join(pending.arguments) or "{}")))
        events.append(StreamDone(self._finish, self._usage))
        return events


def strict_json(arguments: str) -> str:
    """A model's tool arguments as strict JSON. Small local models write raw newlines and tabs inside
    strings, which `json.loads` (and every client's strict parser) refuses: such text is read leniently
    and written again with the characters escaped. Anything else is passed on as the model wrote it (the
    tool's validation answers it)."""
    try:
        json.loads(arguments)
        return arguments
    except ValueError:
        pass
    try:
        return json.dumps(json.loads(arguments, strict=False))
    except ValueError:
        return arguments


def _event_end(buffer: bytearray) -> tuple[int, int] | None:
    """Where the first event ends (a blank line, in any of the newline styles SSE allows)."""
    best: tuple[int, int] | None = None
    for separator in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        at = buffer.find(separator)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, at + len(separator))
    return best


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "no"})


class Sentences:
    """Streamed text in, whole sentences out as soon as the next one has begun; `flush()` for the rest."""

    def __init__(self) -> None:
        self._text = ""

    def feed(self, text: str) -> list[str]:
        self._text += text
        out: list[str] = []
        start = 0
        for match in _SENTENCE_END.finditer(self._text):
            candidate = self._text[start:match.start()].strip()
            last_word = candidate.rsplit(None, 1)[-1].rstrip(".").lower() if candidate else ""
            if not candidate or last_word in _ABBREVIATIONS or last_word.isdigit():
                continue  # "Dr. Smith", "No. 5", "3. Then": not the end of a sentence
            out.append(candidate)
            start = match.end()
        self._text = self._text[start:]
        return out

    def flush(self) -> list[str]:
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []

"""voxgate's flow brain as an OpenAI-compatible chat model: `POST /v1/chat/completions` (API key).

The `model` names an agent (its intents, tool phrases and templates; unknown names get the default
agent). The client's `tools` are routed by their names, descriptions and parameter schemas as in a call;
`tool_choice` is honoured. Answers are whole turns, streamed (`stream: true`, server-sent events, the
chunks OpenAI sends: role, content, tool calls, finish_reason, `[DONE]`) or not. So a cascade engine can
use the deterministic brain as its LLM, and one voxgate can be another's whole STT, LLM and TTS stack.

Stateless, as the chat API is: each request carries its conversation. What the brain keeps between the
turns of a call (a question it asked to fill a tool's argument) is not kept between requests; a reply to
a tool result, and a tool call from one utterance, are.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from voxgate.agents import AgentConfig
from voxgate.control.auth import require_api_key
from voxgate.control.problems import problem
from voxgate.engines.base import HistoryEntry, ResponseRequest, ToolSpec
from voxgate.engines.local.brains.base import CallTool, Say
from voxgate.engines.local.brains.flow import FlowBrain
from voxgate.gateway import gateway_of
from voxgate.protocol.ids import new_id

__all__ = ["chat_completions"]

MAX_MESSAGES = 500
MAX_BODY_BYTES = 4 * 1024 * 1024


async def chat_completions(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return problem(413, "request_too_large", f"The body is limited to {MAX_BODY_BYTES} bytes.")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return problem(400, "invalid_json", "The body must be a JSON object.")
    if not isinstance(body, dict):
        return problem(400, "invalid_json", "The body must be a JSON object.")
    parsed = _parse(body)
    if isinstance(parsed, JSONResponse):
        return parsed
    history, instructions, tools, tool_choice = parsed
    gateway = gateway_of(request)
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    models: ChatModels | None = getattr(request.app.state, "chat_models", None)
    if models is None:
        models = request.app.state.chat_models = ChatModels(FlowBrain(today=gateway.clock.today))
    agent = models.agent(gateway.agent(model))
    decision = models.brain.decide(ResponseRequest(history=history, instructions=instructions, tools=tools,
                                                   tool_choice=tool_choice, modalities=["text"], voice="",
                                                   agent=agent, state={}))
    completion_id, created = new_id("chatcmpl"), int(time.time())
    if isinstance(decision, CallTool):
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": new_id("call"), "type": "function",
             "function": {"name": decision.name, "arguments": json.dumps(decision.arguments)}}]}
        finish = "tool_calls"
    else:
        assert isinstance(decision, Say)
        message = {"role": "assistant", "content": decision.text}
        finish = "stop"
    if body.get("stream"):
        return StreamingResponse(_chunks(completion_id, created, agent.name, message, finish),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-store"})
    return JSONResponse({"id": completion_id, "object": "chat.completion", "created": created, "model": agent.name,
                         "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                         "usage": _usage(history, message)})


class ChatModels:
    """The flow brain serving as chat models: one brain, and each agent in its chat-model form, made once
    (the brain caches its routes per agent object, so a fresh copy per request would rebuild them)."""

    def __init__(self, brain: FlowBrain) -> None:
        self.brain = brain
        self._agents: dict[int, tuple[AgentConfig, AgentConfig]] = {}  # id(agent) -> (agent, its chat form)

    def agent(self, named: AgentConfig) -> AgentConfig:
        """`named` as a chat model: the request's tools are its only tools, as with any chat model, routed by
        their names, descriptions and schemas. The agent lends its replies, templates and tool-less intents
        (greetings, hours), not tools of its own or the phrases written for them, which the caller of this
        API cannot run."""
        known = self._agents.get(id(named))
        if known is not None and known[0] is named:
            return known[1]
        derived = named.model_copy(update={"client_tools": "replace",
                                           "intents": [i for i in named.intents if i.tool is None]})
        self._agents[id(named)] = (named, derived)
        return derived


def _parse(body: dict[str, Any]) -> JSONResponse | tuple[list[HistoryEntry], str, list[ToolSpec], Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problem(400, "missing_required_parameter", "`messages` must be a non-empty list.", param="messages")
    if len(messages) > MAX_MESSAGES:
        return problem(400, "array_above_max_length", f"At most {MAX_MESSAGES} messages.", param="messages")
    history: list[HistoryEntry] = []
    instructions: list[str] = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant",
                                                                        "tool"):
            return problem(400, "invalid_value", f"messages[{n}] needs a role of system, developer, user, "
                           "assistant or tool.", param=f"messages[{n}]")
        role, text = message["role"], _text(message.get("content"))
        if role in ("system", "developer"):
            instructions.append(text)
        elif role == "user":
            history.append(HistoryEntry(kind="user", text=text))
        elif role == "assistant":
            if text:
                history.append(HistoryEntry(kind="assistant", text=text))
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    return problem(400, "invalid_value", f"messages[{n}].tool_calls holds a malformed call.",
                                   param=f"messages[{n}].tool_calls")
                history.append(HistoryEntry(kind="function_call", name=str(function.get("name", "")),
                                            call_id=str(call.get("id", "")),
                                            arguments=str(function.get("arguments", "{}"))))
        else:
            history.append(HistoryEntry(kind="function_call_output", call_id=str(message.get("tool_call_id", "")),
                                        output=text))
    tools: list[ToolSpec] = []
    for n, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return problem(400, "invalid_value", f"tools[{n}] must be a function with a name.", param=f"tools[{n}]")
        parameters: dict[str, Any] = function.get("parameters") or {}
        if not isinstance(parameters, dict):
            return problem(400, "invalid_value", f"tools[{n}].parameters must be a JSON schema object.",
                           param=f"tools[{n}].function.parameters")
        tools.append(ToolSpec(function["name"], str(function.get("description", "")), parameters, server=False))
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if not isinstance(name, str):
            return problem(400, "invalid_value", "tool_choice names no function.", param="tool_choice")
        choice = {"type": "function", "name": name}
    elif choice not in ("auto", "none", "required"):
        return problem(400, "invalid_value", "tool_choice must be auto, none, required or a function.",
                       param="tool_choice")
    return history, "\n".join(instructions), tools, choice


def _text(content: Any) -> str:
    """A message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content
                        if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _usage(history: list[HistoryEntry], message: dict[str, Any]) -> dict[str, int]:
    """Words, as tokens: the brain has no tokenizer, and clients only need the shape and a magnitude."""
    prompt = sum(len((e.text or e.output or e.arguments).split()) for e in history)
    completion = len(json.dumps(message).split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _chunks(completion_id: str, created: int, model: str, message: dict[str, Any],
                  finish: str) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if message.get("content"):
        words = message["content"].split(" ")
        for n, word in enumerate(words):  # word by word, as an LLM streams: the reader's pace, not ours
            yield chunk({"content": word if n == 0 else " " + word})
    for index, call in enumerate(message.get("tool_calls") or []):
        yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"], "arguments": ""}}]})
        yield chunk({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
    yield chunk({}, finish)
    yield b"data: [DONE]\n\n"

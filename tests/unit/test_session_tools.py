"""Tool round trips in one Session, in-process: a client's function call and its output, and gateway tools
that run in place (the client never sees them) and may move the call once the reply has been said."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from tests.session_harness import Call, ScriptedEngine, Step, TestCaller, speech, types
from voxgate.agents import AgentConfig, ToolDefinition
from voxgate.engines.base import HistoryEntry, ResponseRequest, TextDelta, ToolCall

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ORDER_PARAMETERS = {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{4}$"}},
                    "required": ["order_id"], "additionalProperties": False}


async def order_status(order_id: str) -> dict[str, str]:
    """The gateway tool of these tests (an agent's python handler)."""
    return {"order_id": order_id, "status": "shipped"}


def tool_output(request: ResponseRequest) -> dict[str, Any]:
    entry = request.history[-1]
    assert entry.kind == "function_call_output"
    output: dict[str, Any] = json.loads(entry.output)
    return output


async def test_a_client_tool_round_trip(ga_server_events: TypeAdapter[Any]) -> None:
    def answer(request: ResponseRequest) -> list[Step]:
        return speech(f"It is {tool_output(request)['sky']} in Paris.", 400)

    engine = ScriptedEngine()
    engine.script([TextDelta("Let me check."), ToolCall("get_weather", '{"city": "Paris"}', "call_w1")], answer)
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.send({"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}})
        await call.next("session.updated")
        await call.send({"type": "response.create"})
        arguments = await call.next("response.function_call_arguments.done")
        assert (arguments["name"], arguments["call_id"], json.loads(arguments["arguments"])) == (
            "get_weather", "call_w1", {"city": "Paris"})
        done = await call.response()
        assert done["response"]["status"] == "completed"
        assert [o["type"] for o in done["response"]["output"]] == ["message", "function_call"]
        [spec] = engine.requests[0].tools
        assert (spec.name, spec.server) == ("get_weather", False)

        await call.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_w1", "output": json.dumps({"sky": "sunny"})}})
        await call.next("conversation.item.added")
        await call.send({"type": "response.create"})
        done = await call.response()
        assert done["response"]["output"][0]["content"][0]["transcript"] == "It is sunny in Paris."
        history = engine.requests[1].history
        assert [e.kind for e in history] == ["assistant", "function_call", "function_call_output"]
        assert (history[1].name, history[1].call_id) == ("get_weather", "call_w1")


async def test_a_gateway_tool_runs_in_place(ga_server_events: TypeAdapter[Any]) -> None:
    agent = AgentConfig(name="orders", tools=[ToolDefinition(
        name="order_status", parameters=ORDER_PARAMETERS, handler=f"{__name__}:order_status")])

    def answer(request: ResponseRequest) -> list[Step]:
        return speech(f"Order 4567 has {tool_output(request)['status']}.", 400)

    def refused(request: ResponseRequest) -> list[Step]:
        return speech(f"Sorry: {tool_output(request)['error']['type']}.", 200)

    engine = ScriptedEngine()
    engine.script([ToolCall("order_status", '{"order_id": "4567"}', "call_o1")], answer,
                  [ToolCall("order_status", '{"order_id": "next week"}', "call_o2")], refused)
    async with Call(agent, engine=engine, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()
        assert done["response"]["status"] == "completed"
        assert [o["type"] for o in done["response"]["output"]] == ["message"]
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Order 4567 has shipped."
        assert not any(t.startswith("response.function_call") for t in types(call.seen))
        assert [(t.name, t.server) for t in engine.requests[0].tools] == [("order_status", True)]
        assert engine.requests[1].history[-2] == HistoryEntry(
            "function_call", name="order_status", call_id="call_o1", arguments='{"order_id": "4567"}')

        await call.send({"type": "response.create"})  # arguments that break the schema: the model hears why
        done = await call.response()
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Sorry: invalid_arguments."


async def test_end_call_hangs_up_once_the_goodbye_is_said(ga_server_events: TypeAdapter[Any]) -> None:
    agent = AgentConfig(name="closer", tools=[ToolDefinition(name="end_call", builtin="end_call")])
    engine = ScriptedEngine()
    engine.script([ToolCall("end_call", '{"reason": "the caller said goodbye"}', "call_e1")],
                  speech("Goodbye!", 400))
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(agent, engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        assert not caller.hung_up
        done = await call.response()
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Goodbye!"
        await caller.wait_moved()
        assert caller.hung_up == ["the caller said goodbye"]
        assert call.session.end_reason == "the caller said goodbye"

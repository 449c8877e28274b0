"""A text conversation through the official openai SDK (GA) and a plain WebSocket client (beta).

The model (the local flow brain) calls a gateway tool (lookup_order, answered inside the gateway)
and a client-declared tool (get_weather, answered by the test); every server event is validated
strictly against the SDK's own models.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from pydantic import TypeAdapter

from tests.conftest import LiveServer, finished_call

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]},
}


class StrictReader:
    """Reads raw server events and validates each against the SDK's discriminated union."""

    def __init__(self, recv: Any, adapter: TypeAdapter[Any]) -> None:
        self._recv = recv
        self.adapter = adapter
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        raw = await self._recv()
        event = json.loads(raw)
        self.adapter.validate_python(event)  # raises on a missing required field or an unknown type
        self.seen.append(event)
        return event

    async def through(self, kind: str) -> list[dict[str, Any]]:
        """Every event up to and including the next `kind`, error events too (for a test that expects one)."""
        events = [await self.next()]
        while events[-1]["type"] != kind:
            events.append(await self.next())
        return events

    async def until(self, kind: str) -> list[dict[str, Any]]:
        events = []
        while True:
            event = await self.next()
            assert event["type"] != "error", event
            events.append(event)
            if event["type"] == kind:
                return events


def text_of(events: list[dict[str, Any]], delta_type: str) -> str:
    return "".join(e["delta"] for e in events if e["type"] == delta_type)


async def test_ga_text_conversation_with_gateway_and_client_tools(
        live_server: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    client = AsyncOpenAI(api_key=live_server.api_key, base_url=f"{live_server.base_url}/v1",
                         websocket_base_url=f"{live_server.ws_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        reader = StrictReader(conn.recv_bytes, ga_server_events)
        created = await reader.next()
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "realtime"
        session_id = created["session"]["id"]

        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": [WEATHER_TOOL], "tool_choice": "auto"})
        updated = await reader.until("session.updated")
        assert updated[-1]["session"]["tools"][0]["name"] == "get_weather"

        # 1. A gateway tool: the client never sees the call, only the answer built from its result.
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the status of order 4567?"}]})
        await conn.response.create()
        events = await reader.until("response.done")
        reply = text_of(events, "response.output_text.delta")
        assert "shipped" in reply.lower(), reply
        assert not any(e["type"].startswith("response.function_call") for e in events)
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["content"][0]["type"] == "output_text"

        # 2. A client tool: the call comes to us, we answer, and the agent speaks the answer.
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What's the weather like in Paris right now?"}]})
        await conn.response.create()
        events = await reader.until("response.done")
        call_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call_done["name"] == "get_weather"
        assert json.loads(call_done["arguments"])["city"].lower() == "paris"
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": call_done["call_id"],
            "output": json.dumps({"city": "Paris", "temperature_c": 18, "conditions": "sunny"})})
        await conn.response.create()
        events = await reader.until("response.done")
        reply = text_of(events, "response.output_text.delta")
        assert "sunny" in reply.lower() or "18" in reply, reply

        # 3. Bad input gets an error event and the session carries on.
        await conn.send({"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0,
                         "audio_end_ms": 10, "event_id": "evt_bad"})  # type: ignore[arg-type]
        error = await reader.next()
        assert error["type"] == "error"
        assert error["error"]["event_id"] == "evt_bad"
        assert error["error"]["code"] == "item_not_found"

    call = await finished_call(live_server, session_id)
    tools = {(t["name"], t["side"]) for t in call["tool_calls"]}
    assert ("lookup_order", "server") in tools
    assert ("get_weather", "client") in tools
    lookup = next(t for t in call["tool_calls"] if t["name"] == "lookup_order")
    assert lookup["status"] == "completed"


async def test_beta_text_conversation_with_plain_websocket(
        live_server: LiveServer, beta_server_events: TypeAdapter[Any]) -> None:
    headers = {"Authorization": f"Bearer {live_server.api_key}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(f"{live_server.ws_url}/v1/realtime?model=gpt-4o-realtime-preview",
                                  additional_headers=headers) as ws:
        reader = StrictReader(ws.recv, beta_server_events)
        created = await reader.next()
        assert created["type"] == "session.created"
        assert created["session"]["input_audio_format"] == "pcm16"

        async def send(event: dict[str, Any]) -> None:
            await ws.send(json.dumps(event))

        await send({"type": "session.update", "session": {"modalities": ["text"], "tools": [WEATHER_TOOL]}})
        await reader.until("session.updated")

        await send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "where's order 1234"}]}})
        await send({"type": "response.create"})
        events = await reader.until("response.done")
        assert any(e["type"] == "conversation.item.created" for e in events)
        assert not any(e["type"] == "conversation.item.added" for e in events)
        reply = text_of(events, "response.text.delta")
        assert "1234" in reply and ("processing" in reply.lower() or "prepared" in reply.lower()), reply
        assert events[-1]["response"]["output"][0]["content"][0]["type"] == "text"

        await send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "what is the weather in Berlin"}]}})
        await send({"type": "response.create"})
        events = await reader.until("response.done")
        call_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call_done["name"] == "get_weather"
        assert json.loads(call_done["arguments"])["city"].lower() == "berlin"
        await send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call_done["call_id"],
            "output": json.dumps({"temperature_c": 7, "conditions": "rainy"})}})
        await send({"type": "response.create"})
        events = await reader.until("response.done")
        assert "rain" in text_of(events, "response.text.delta").lower() or "7" in text_of(
            events, "response.text.delta")


async def test_handshake_without_key_is_refused_with_401(live_server: LiveServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{live_server.ws_url}/v1/realtime?model=x",
                                      additional_headers={"Authorization": "Bearer wrong"}):
            pass
    assert info.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{live_server.ws_url}/v1/realtime?model=x"):
            pass
    assert info.value.response.status_code == 401


async def test_browser_subprotocol_auth_and_beta(live_server: LiveServer,
                                                 beta_server_events: TypeAdapter[Any]) -> None:
    protocols = ["realtime", f"openai-insecure-api-key.{live_server.api_key}", "openai-beta.realtime-v1"]
    async with websockets.connect(f"{live_server.ws_url}/v1/realtime?model=x",
                                  subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        beta_server_events.validate_python(created)
        assert "modalities" in created["session"]


ORDER_STATUS_TOOL = {
    "type": "function", "name": "get_order_status", "description": "Get the status of a customer's order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "The order id"}},
                   "required": ["order_id"]},
}


@pytest.mark.parametrize("order", ["777", "4567"])
async def test_a_client_order_tool_is_called_on_the_default_agent(
        live_server: LiveServer, ga_server_events: TypeAdapter[Any], order: str) -> None:
    """What code written for OpenAI does first: its own order tool, under its own name. The demo agent
    has an order lookup of its own (4567 is in its demo data); the client's tool is the one called."""
    client = AsyncOpenAI(api_key=live_server.api_key, base_url=f"{live_server.base_url}/v1",
                         websocket_base_url=f"{live_server.ws_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        reader = StrictReader(conn.recv_bytes, ga_server_events)
        await reader.until("session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": [ORDER_STATUS_TOOL]})
        await reader.until("session.updated")
        await conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Where is order {order}?"}]})
        await conn.response.create()
        events = await reader.until("response.done")
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == "get_order_status" and json.loads(call["arguments"]) == {"order_id": order}

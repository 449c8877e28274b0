"""The openai engine against a real Realtime server: a second voxgate (local engine) as its upstream.

Two gateways run in this process. The back one plays OpenAI: local engine, an agent with no tools of
its own, its own API key. The front one runs engine "openai" with `openai_base_url` pointed at the back
and holds the back's key. Clients talk to the front only, with the official SDK (GA) and a plain
beta WebSocket client: a spoken turn whose lookup_order call the FRONT answers (the back only ever
sees it as a client tool), a client-declared tool passed through both gateways, a barge-in, an
upstream refusing the key, and the upstream dying mid-response. A last test sweeps every log line,
stored row and client event of a full run for the upstream key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from pydantic import TypeAdapter

from tests.conftest import LiveServer, start_server
from tests.integration.test_text_conversation import WEATHER_TOOL, StrictReader, text_of
from tests.speech import silence, speak

BACK_KEY = f"back-key-{secrets.token_hex(8)}"  # the upstream key: must never show up anywhere
FRONT_KEY = "front-key"
REQUEST = "what is the status of order four five six seven"
WEATHER = "what's the weather like in paris right now"
RATE = 24000
FRAME = RATE // 50 * 2  # 20 ms of pcm16

LONG_REPLY = " ".join(f"This is line {n} of a long answer, so there is time to talk over it." for n in range(1, 25))
PLAIN_AGENT = f"""\
name: plain
description: The upstream's agent, with no gateway tools of its own.
instructions: Answer briefly.
voice: joe
fallback: "{LONG_REPLY}"
"""


@dataclass
class Pair:
    back: LiveServer
    front: LiveServer

    def client(self) -> AsyncOpenAI:
        return AsyncOpenAI(api_key=FRONT_KEY, base_url=f"{self.front.base_url}/v1",
                           websocket_base_url=f"{self.front.ws_url}/v1")


def start_pair(tmp: Path, **front_settings: Any) -> Pair:
    agents = tmp / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "plain.yaml").write_text(PLAIN_AGENT)
    (tmp / "back").mkdir(exist_ok=True)
    (tmp / "front").mkdir(exist_ok=True)
    back = start_server(tmp / "back", engine="local", api_keys=BACK_KEY, agents_dir=agents, default_agent="plain")
    front_settings.setdefault("openai_api_key", BACK_KEY)
    front = start_server(tmp / "front", engine="openai", api_keys=FRONT_KEY,
                         openai_base_url=f"{back.base_url}/v1", openai_response_timeout_s=15.0, **front_settings)
    return Pair(back, front)


UTTERANCES = (REQUEST, WEATHER, "wait, stop, I have another question")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # Render the caller's lines before any gateway speaks: Piper's phonemizer (espeak-ng) is not
    # thread-safe, and the test's synthesis racing a gateway's can hang that gateway's TTS thread.
    for text in UTTERANCES:
        pcm(text)
    tmp = tmp_path_factory.mktemp("openai_pair")
    os.environ["ACME_DB"] = str(tmp / "acme.db")
    p = start_pair(tmp)
    yield p
    p.front.embedded.stop()
    p.back.embedded.stop()


def pcm(text: str, tail_ms: int = 900) -> bytes:
    return np.concatenate([silence(200, RATE), speak(text, rate=RATE), silence(tail_ms, RATE)]).astype("<i2").tobytes()


async def stream(send: Any, audio: bytes, realtime: bool = False) -> None:
    for start in range(0, len(audio), FRAME * 5):
        await send(base64.b64encode(audio[start:start + FRAME * 5]).decode())
        if realtime:
            await asyncio.sleep(0.1)


async def call_record(live: LiveServer, session_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.base_url, headers={"Authorization": f"Bearer {live.api_key}"}) as http:
        for _ in range(100):
            call = (await http.get(f"/v1/calls/{session_id}")).json()
            if call.get("ended_at"):
                return dict(call)
            await asyncio.sleep(0.05)
    raise AssertionError(f"call {session_id} never ended")


def back_calls(pair: Pair) -> list[str]:
    return sorted(pair.back.gateway.sessions)


GA_SESSION = {"type": "realtime", "tools": [WEATHER_TOOL], "audio": {
    "input": {"format": {"type": "audio/pcm", "rate": RATE}, "transcription": {"model": "whisper-1"},
              "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
    "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "marin"}}}


async def test_ga_sdk_spoken_turn_tools_and_barge_in(pair: Pair, ga_server_events: TypeAdapter[Any]) -> None:
    async with pair.client().realtime.connect(model="gpt-realtime") as conn:
        reader = StrictReader(conn.recv_bytes, ga_server_events)
        session_id = (await reader.next())["session"]["id"]
        await conn.session.update(session=GA_SESSION)  # type: ignore[arg-type]
        await reader.until("session.updated")

        async def append(audio: str) -> None:
            await conn.input_audio_buffer.append(audio=audio)

        # 1. Spoken turn; the upstream asks for lookup_order, the front gateway answers it.
        await stream(append, pcm(REQUEST))
        events = await reader.until("response.done")
        done = events[-1]["response"]
        assert done["status"] == "completed", done
        assert not any(e["type"].startswith("response.function_call") for e in events)
        assert any(e["type"] == "response.output_audio.delta" for e in events)
        transcript = done["output"][0]["content"][0]["transcript"]
        assert "shipped" in transcript.lower(), transcript
        assert done["usage"]["total_tokens"] > 0
        heard = next(e for e in reader.seen if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert "4567" in heard["transcript"].replace(" ", "") or "four five six seven" in heard["transcript"].lower()

        # 2. A client tool: declared by this client, called by the upstream, passed through to us.
        await stream(append, pcm(WEATHER))
        events = await reader.until("response.done")
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"].lower() == "paris"
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call["call_id"],
                                                  "output": json.dumps({"temperature_c": 18, "conditions": "sunny"})})
        await conn.response.create()
        events = await reader.until("response.done")
        reply = text_of(events, "response.output_audio_transcript.delta").lower()
        assert "sunny" in reply or "18" in reply, reply

        # 3. Barge-in over a long reply (the upstream agent's fallback), then the client's truncate.
        # Turns no longer answer themselves, so the truncate lands before the next response.
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "silence_duration_ms": 300, "create_response": False}}}})
        await reader.until("session.updated")
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "sing me a song about the sea"}]})
        await conn.response.create()
        while (first := await reader.next())["type"] != "response.output_audio.delta":
            pass
        # Keep reading while talking, as a real client does: a reader that stops while the agent
        # floods it with audio stalls both directions of the socket.
        talking = asyncio.create_task(stream(append, pcm("wait, stop, I have another question")))
        events = await reader.until("response.done")
        await talking
        assert events[-1]["response"]["status"] == "cancelled"
        assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
        received_ms = sum(len(base64.b64decode(e["delta"])) for e in [first, *events]
                          if e["type"] == "response.output_audio.delta" and e["item_id"] == first["item_id"]) // 48
        await reader.until("input_audio_buffer.committed")
        # The client heard half of what it received before it stopped its player.
        await conn.conversation.item.truncate(item_id=first["item_id"], content_index=0,
                                              audio_end_ms=received_ms // 2)
        await reader.until("conversation.item.truncated")
        await conn.conversation.item.retrieve(item_id=first["item_id"])
        heard = (await reader.until("conversation.item.retrieved"))[-1]["item"]["content"][0]["transcript"]
        assert LONG_REPLY.startswith(heard) and len(heard) < len(LONG_REPLY), heard
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "And order 4567?"}]})
        await conn.response.create()
        events = await reader.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        upstream_ids = back_calls(pair)
        assert len(upstream_ids) == 1
        # The upstream keeps what the caller heard of the interrupted reply, not what it generated.
        upstream = pair.back.gateway.sessions[upstream_ids[0]].conversation.history()
        asked = next(i for i, e in enumerate(upstream) if e.text == "sing me a song about the sea")
        after = [e.text for e in upstream[asked + 1:] if e.kind == "assistant"]
        assert after[:-1] == ([heard] if heard else []), (heard, after)
        assert "shipped" in after[-1]

    call = await call_record(pair.front, session_id)
    assert call["engine"] == "openai"
    tools = {(t["name"], t["side"]) for t in call["tool_calls"]}
    assert ("lookup_order", "server") in tools and ("get_weather", "client") in tools
    lookup = next(t for t in call["tool_calls"] if t["name"] == "lookup_order")
    assert json.loads(lookup["arguments"]) == {"order_id": "4567"} and lookup["status"] == "completed"
    assert call["interruptions"] >= 1
    assert call["usage"]["total_tokens"] > 0 and call["cost_usd"] > 0  # upstream tokens, at OpenAI prices
    # The upstream saw lookup_order only as a tool of its client: it never ran it itself.
    upstream = await call_record(pair.back, upstream_ids[0])
    upstream_tools = {(t["name"], t["side"]) for t in upstream["tool_calls"]}
    assert ("lookup_order", "client") in upstream_tools and ("lookup_order", "server") not in upstream_tools


async def test_beta_client_spoken_gateway_tool_and_client_tool(pair: Pair,
                                                               beta_server_events: TypeAdapter[Any]) -> None:
    headers = {"Authorization": f"Bearer {FRONT_KEY}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(f"{pair.front.ws_url}/v1/realtime?model=gpt-4o-realtime-preview",
                                  additional_headers=headers) as ws:
        reader = StrictReader(ws.recv, beta_server_events)
        assert (await reader.next())["type"] == "session.created"

        async def send(event: dict[str, Any]) -> None:
            await ws.send(json.dumps(event))

        async def append(audio: str) -> None:
            await send({"type": "input_audio_buffer.append", "audio": audio})

        await send({"type": "session.update", "session": {
            "modalities": ["text", "audio"], "voice": "alloy", "tools": [WEATHER_TOOL],
            "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}})
        await reader.until("session.updated")

        await stream(append, pcm(REQUEST))
        events = await reader.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        kinds = {e["type"] for e in events}
        assert "response.audio.delta" in kinds and "response.output_audio.delta" not in kinds
        assert "conversation.item.added" not in kinds
        assert not any(k.startswith("response.function_call") for k in kinds)
        assert "shipped" in text_of(events, "response.audio_transcript.delta").lower()
        assert events[-1]["response"]["output"][0]["content"][0]["type"] == "audio"

        await send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather in Berlin?"}]}})
        await send({"type": "response.create", "response": {"modalities": ["text"]}})
        events = await reader.until("response.done")
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"].lower() == "berlin"
        await send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"],
            "output": json.dumps({"temperature_c": 7, "conditions": "rainy"})}})
        await send({"type": "response.create", "response": {"modalities": ["text"]}})
        events = await reader.until("response.done")
        assert "rain" in text_of(events, "response.text.delta").lower()


async def test_upstream_refusing_the_key_is_an_error_event_and_opens_the_circuit(
        pair: Pair, tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    front = start_server(tmp_path, engine="openai", api_keys=FRONT_KEY, openai_api_key="sk-wrong-key",
                         openai_base_url=f"{pair.back.base_url}/v1", openai_max_retries=0)
    try:
        client = AsyncOpenAI(api_key=FRONT_KEY, base_url=f"{front.base_url}/v1",
                             websocket_base_url=f"{front.ws_url}/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            reader = StrictReader(conn.recv_bytes, ga_server_events)
            session_id = (await reader.next())["session"]["id"]
            messages = []
            for _ in range(4):
                await conn.conversation.item.create(item={
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]})
                await conn.response.create()
                error = None
                while True:
                    event = await reader.next()
                    if event["type"] == "error":
                        error = event["error"]
                    if event["type"] == "response.done":
                        break
                assert event["response"]["status"] == "failed"
                assert error is not None and error["code"] == "engine_error" and error["type"] == "server_error"
                messages.append(error["message"])
        assert "HTTP 401 (invalid_api_key)" in messages[0] and "API key" in messages[0]
        assert "unavailable after repeated failures" in messages[3]  # the circuit is open: no 4th handshake
        assert not any("sk-wrong-key" in m for m in messages)
        call = await call_record(front, session_id)
        assert "HTTP 401" in call["end_reason"]
    finally:
        front.embedded.stop()


async def test_upstream_killed_mid_response(tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    own = start_pair(tmp_path)  # its own upstream, since this one dies
    try:
        async with own.client().realtime.connect(model="gpt-realtime") as conn:
            reader = StrictReader(conn.recv_bytes, ga_server_events)
            session_id = (await reader.next())["session"]["id"]
            # Unroutable words get the back agent's long fallback: seconds of audio to die in the middle of.
            await conn.conversation.item.create(item={
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "blorp zindle"}]})
            await conn.response.create()
            while (await reader.next())["type"] != "response.output_audio.delta":
                pass
            await asyncio.to_thread(own.back.embedded.stop)
            error = None
            while True:
                event = await reader.next()
                if event["type"] == "error":
                    error = event["error"]
                if event["type"] == "response.done":
                    break
            assert event["response"]["status"] == "failed", event
            assert error is not None and error["code"] == "engine_error"
            assert "lost mid-response" in error["message"], error
            # The session is still up: the next response gets a clear error too (nothing to reconnect to).
            await conn.response.create()
            events = await reader.through("response.done")
            assert events[-1]["response"]["status"] == "failed"
            assert any(e["type"] == "error" and "could not connect" in e["error"]["message"] for e in events)
        call = await call_record(own.front, session_id)
        assert "lost mid-response" in call["end_reason"], call["end_reason"]
    finally:
        own.front.embedded.stop()


async def test_the_upstream_key_appears_nowhere(pair: Pair, ga_server_events: TypeAdapter[Any],
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with pair.client().realtime.connect(model="gpt-realtime") as conn:
        reader = StrictReader(conn.recv_bytes, ga_server_events)
        session_id = (await reader.next())["session"]["id"]
        await conn.session.update(session=GA_SESSION)  # type: ignore[arg-type]
        await reader.until("session.updated")

        async def append(audio: str) -> None:
            await conn.input_audio_buffer.append(audio=audio)

        await stream(append, pcm(REQUEST))
        await reader.until("response.done")
    await call_record(pair.front, session_id)

    assert caplog.records, "nothing was logged: the sweep would prove nothing"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert BACK_KEY not in text, f"key in a log line from {record.name}"
    assert not any(BACK_KEY in json.dumps(e) for e in reader.seen)
    for live in (pair.front, pair.back):
        url = live.embedded.settings.database_url
        db = Path(url.split("///", 1)[1])
        with sqlite3.connect(db) as sql:
            tables = [r[0] for r in sql.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = [row for t in tables for row in sql.execute(f'SELECT * FROM "{t}"')]
        assert rows, "no stored rows: the sweep would prove nothing"
        assert not any(BACK_KEY in str(v) for row in rows for v in row), f"key stored in {db}"
    async with httpx.AsyncClient(base_url=pair.front.base_url, headers=pair.front.auth) as http:
        for path in ("/metrics", "/readyz"):
            reply = await http.get(path)
            assert reply.status_code == 200 and BACK_KEY not in reply.text

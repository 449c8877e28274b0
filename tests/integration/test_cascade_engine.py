"""The cascade engine against real OpenAI-compatible services: another voxgate serves them all here
(`/v1/audio/transcriptions`, `/v1/chat/completions` from its flow brain, `/v1/audio/speech`), so a spoken
turn crosses STT, a streamed LLM answer with a tool call, and TTS over HTTP; a service that is gone is an
error the session reports, and the call goes on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI, BadRequestError
from pydantic import TypeAdapter

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_spoken_conversation import decode_to_16k, stream
from tests.integration.test_text_conversation import ORDER_STATUS_TOOL, StrictReader
from tests.speech import silence, speak
from voxgate.embedded import free_port
from voxgate.engines.local.stt import WhisperTranscriber


@pytest.fixture(scope="module")
def cascade(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A gateway whose engine is the cascade, every service of it the live gateway's over HTTP."""
    services = f"{live_server.base_url}/v1"
    live = start_server(tmp_path_factory.mktemp("cascade"), engine="cascade", default_agent="acme",
                        cascade_llm_base_url=services, cascade_llm_model="acme",
                        cascade_llm_api_key=live_server.api_key, cascade_stt_base_url=services,
                        cascade_stt_api_key=live_server.api_key, cascade_tts_base_url=services,
                        cascade_tts_api_key=live_server.api_key)
    yield live
    live.embedded.stop()


def client_for(live: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=live.api_key, base_url=f"{live.base_url}/v1", websocket_base_url=f"{live.ws_url}/v1",
                       max_retries=0)


SPOKEN = {"type": "realtime", "audio": {"input": {
    "transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}
TEXT = {"type": "realtime", "output_modalities": ["text"]}


async def configured(conn: Any, adapter: TypeAdapter[Any], session: dict[str, Any]) -> tuple[StrictReader, str]:
    """The session created and updated with `session`; its reader and id."""
    reader = StrictReader(conn.recv_bytes, adapter)
    session_id = (await reader.until("session.created"))[-1]["session"]["id"]
    await conn.session.update(session=session)
    await reader.until("session.updated")
    return reader, session_id


async def test_the_flow_brain_answers_as_a_chat_model(live_server: LiveServer) -> None:
    client = client_for(live_server)
    called = await client.chat.completions.create(
        model="acme", messages=[{"role": "user", "content": "Where is order 777?"}],
        tools=[{"type": "function", "function": {k: v for k, v in ORDER_STATUS_TOOL.items() if k != "type"}}])
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert called.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_order_status" and json.loads(call.function.arguments) == {"order_id": "777"}
    chunks = [c async for c in await client.chat.completions.create(
        model="acme", stream=True, messages=[{"role": "user", "content": "hello there"}])]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(BadRequestError) as refused:
        await client.chat.completions.create(model="acme", messages=[])
    assert refused.value.body["param"] == "messages"  # type: ignore[index]


async def test_a_text_turn_calls_a_gateway_tool_through_the_llm_service(
        cascade: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    async with client_for(cascade).realtime.connect(model="gpt-realtime") as conn:
        reader, session_id = await configured(conn, ga_server_events, TEXT)
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is the status of order 4567?"}]})
        await conn.response.create()
        events = await reader.until("response.done")
        reply = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert "shipped" in reply.lower(), reply
    call = await finished_call(cascade, session_id)
    assert call["engine"] == "cascade"
    assert [(t["name"], t["status"]) for t in call["tool_calls"]] == [("lookup_order", "completed")]


async def test_a_spoken_turn_crosses_stt_the_llm_and_tts_over_http(
        cascade: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    request = np.concatenate([silence(300, 24000), speak("where is order four five six seven", rate=24000),
                              silence(900, 24000)])
    async with client_for(cascade).realtime.connect(model="gpt-realtime") as conn:
        reader, _ = await configured(conn, ga_server_events, SPOKEN)
        await stream(conn, request.astype("<i2").tobytes(), 960, realtime=True)
        events = await reader.until("response.done")
        done = events[-1]["response"]
        assert done["status"] == "completed", done
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert len(audio) > 24000  # half a second and more
    heard = (await WhisperTranscriber.shared().transcribe(decode_to_16k(audio, "pcm16"))).text
    assert "ship" in heard.lower(), heard


async def test_an_llm_service_that_is_gone_is_an_error_and_the_session_goes_on(
        live_server: LiveServer, tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    gone = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    live = start_server(tmp_path, engine="cascade", default_agent="acme", cascade_llm_base_url=gone,
                        cascade_max_retries=1, cascade_connect_timeout_s=2)
    try:
        async with client_for(live).realtime.connect(model="gpt-realtime") as conn:
            reader, _ = await configured(conn, ga_server_events, TEXT)
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "hello"}]})
            await conn.response.create()
            events = await reader.through("response.done")
            error = next(e for e in events if e["type"] == "error")
            assert error["error"]["code"] == "engine_error" and "LLM service failed" in error["error"]["message"]
            assert events[-1]["response"]["status"] == "failed"
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "still there?"}]})
            assert (await reader.until("conversation.item.done"))[-1]["type"] == "conversation.item.done"
    finally:
        live.embedded.stop()


async def test_an_llm_service_that_dies_mid_reply_keeps_what_was_said_and_fails_the_rest(
        tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    """An LLM server that streams one sentence and then dies (its socket closes mid-stream): the caller has
    the sentence that came, the response fails with an engine_error, and the session takes the next turn."""
    import asyncio

    async def dying_llm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request head; the body is not needed to die
        chunk = json.dumps({"choices": [{"index": 0, "delta": {"content": "Let me check that for you. "}}]})
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = f"data: {chunk}\n\n".encode()
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        await writer.drain()
        writer.transport.abort()  # the process behind it is gone

    server = await asyncio.start_server(dying_llm, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    live = start_server(tmp_path, engine="cascade", default_agent="acme",
                        cascade_llm_base_url=f"http://127.0.0.1:{port}/v1")
    try:
        async with client_for(live).realtime.connect(model="gpt-realtime") as conn:
            reader, _ = await configured(conn, ga_server_events, TEXT)
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "where is my order"}]})
            await conn.response.create()
            events = await reader.through("response.done")
            said = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
            assert said.startswith("Let me check that for you")
            error = next(e for e in events if e["type"] == "error")
            assert error["error"]["code"] == "engine_error"
            assert events[-1]["response"]["status"] == "failed"
    finally:
        live.embedded.stop()
        server.close()


async def test_a_caller_who_talks_over_a_cascade_reply_cancels_it(
        cascade: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    """Barge-in on the cascade: the caller speaks while the reply is being generated and spoken; the
    response is cancelled (its HTTP streams closed), no audio follows the caller's speech, and the next
    turn is answered."""
    question = np.concatenate([silence(300, 24000), speak("what can you do", rate=24000), silence(900, 24000)])
    interruption = np.concatenate([speak("wait, where is order four five six seven", rate=24000),
                                   silence(900, 24000)])
    async with client_for(cascade).realtime.connect(model="gpt-realtime") as conn:
        reader, _ = await configured(conn, ga_server_events, SPOKEN)
        await stream(conn, question.astype("<i2").tobytes(), 960, realtime=True)
        await reader.until("response.output_audio.delta")  # the reply has begun: talk over it
        talking = asyncio.create_task(stream(conn, interruption.astype("<i2").tobytes(), 960, realtime=True))
        events = await reader.until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        started = next(n for n, e in enumerate(events) if e["type"] == "input_audio_buffer.speech_started")
        assert not any(e["type"] == "response.output_audio.delta" for e in events[started + 1:])
        await talking
        for _ in range(4):  # "wait," then a pause: the caller may take more than one turn to finish
            answer = await reader.until("response.done")
            if answer[-1]["response"]["status"] == "completed":
                break
        transcript = "".join(e["delta"] for e in answer if e["type"] == "response.output_audio_transcript.delta")
        assert "shipped" in transcript.lower(), transcript


@contextlib.asynccontextmanager
async def recording_llm() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible chat service on loopback that answers "Okay." to every request and keeps each
    request's body, as received: its base URL and that list."""
    received: list[dict[str, Any]] = []

    async def llm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        received.append(json.loads(await reader.readexactly(length)))
        body = (b'data: {"choices":[{"index":0,"delta":{"content":"Okay."},"finish_reason":"stop"}]}\n\n'
                b"data: [DONE]\n\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(llm, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", received
    finally:
        server.close()


@pytest.mark.parametrize("zero_retention", [False, True])
async def test_the_llm_gets_the_sessions_instructions_conversation_tools_and_sampling(
        tmp_path: Path, ga_server_events: TypeAdapter[Any], zero_retention: bool) -> None:
    """What an LLM server receives from the cascade: the session's instructions as the system message, the
    conversation, the session's tools as chat tools, its temperature and output-token cap, and the seed set;
    under zero retention, `store: false` too (OpenAI's Chat Completions keep nothing)."""
    async with recording_llm() as (llm_url, received):
        live = start_server(tmp_path, engine="cascade", default_agent="acme", cascade_llm_base_url=llm_url,
                            cascade_llm_model="my-model", cascade_llm_seed=7, zero_retention=zero_retention)
        try:
            async with client_for(live).realtime.connect(model="gpt-realtime") as conn:
                reader, _ = await configured(conn, ga_server_events, {
                    **TEXT, "instructions": "Answer in one word.", "max_output_tokens": 40,
                    "tools": [ORDER_STATUS_TOOL]})
                await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "hello"}]})
                await conn.response.create()
                done = await reader.until("response.done")
                assert done[-1]["response"]["status"] == "completed"
        finally:
            live.embedded.stop()
    [body] = received
    assert body["model"] == "my-model" and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "Answer in one word."},
                                {"role": "user", "content": "hello"}]
    assert body["tools"][0]["function"]["name"] == "get_order_status"  # the client's, before the agent's
    assert body["tool_choice"] == "auto" and body["max_tokens"] == 40 and body["temperature"] == pytest.approx(0.8)
    assert body["seed"] == 7
    assert body.get("store") is (False if zero_retention else None)


async def test_an_agent_with_its_own_services_uses_them_and_the_others_the_gateways(
        live_server: LiveServer, tmp_path: Path, ga_server_events: TypeAdapter[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`cascade:` in an agent's file: that agent's calls go to its own LLM (its key read from the environment
    variable the file names); an agent without one uses the gateway's cascade_* services (here, nobody)."""
    monkeypatch.setenv("OWN_LLM_KEY", live_server.api_key)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "own.yaml").write_text(
        "name: own\ninstructions: Be brief.\n"
        f"cascade:\n  llm_base_url: {live_server.base_url}/v1\n  llm_model: acme\n  llm_api_key_env: OWN_LLM_KEY\n")
    (agents / "plain.yaml").write_text("name: plain\ninstructions: Be brief.\n")
    gone = f"http://127.0.0.1:{free_port()}/v1"
    live = start_server(tmp_path, engine="cascade", agents_dir=agents, default_agent="plain",
                        cascade_llm_base_url=gone, cascade_max_retries=0, cascade_connect_timeout_s=2)
    try:
        for agent, answered in (("own", True), ("plain", False)):
            async with client_for(live).realtime.connect(model="gpt-realtime", extra_query={"agent": agent}) as conn:
                reader, _ = await configured(conn, ga_server_events, TEXT)
                await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "hello there"}]})
                await conn.response.create()
                events = await reader.through("response.done")
                status = events[-1]["response"]["status"]
                assert status == ("completed" if answered else "failed"), (agent, events)
    finally:
        live.embedded.stop()


def test_an_agent_file_naming_a_key_variable_that_is_not_set_is_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from voxgate.agents import load_agent

    path = tmp_path / "own.yaml"
    path.write_text("name: own\ncascade:\n  llm_api_key_env: VOXGATE_NO_SUCH_VARIABLE\n")
    with pytest.raises(ValidationError, match="VOXGATE_NO_SUCH_VARIABLE"):
        load_agent(path)

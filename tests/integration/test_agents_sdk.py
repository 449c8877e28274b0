"""What a new user tries first: the OpenAI Agents SDK's RealtimeAgent with its own tool, pointed at
voxgate by `url`. The tool is named as their app names it (`get_order_status`, not the demo agent's
`lookup_order`), and the agent's answer comes from the tool's output, by text and by voice, on the local
engine and on the cascade engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from tests.conftest import LiveServer, start_server
from tests.speech import silence, speak

CALLED: list[str] = []


@function_tool
def get_order_status(order_id: str) -> str:
    """Get the status of a customer's order.

    Args:
        order_id: The order id.
    """
    CALLED.append(order_id)
    return json.dumps({"order_id": order_id, "status": "out for delivery"})


@pytest.fixture(scope="module")
def cascade_gateway(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    services = f"{live_server.base_url}/v1"
    live = start_server(tmp_path_factory.mktemp("agents-cascade"), engine="cascade", default_agent="acme",
                        cascade_llm_base_url=services, cascade_llm_model="acme",
                        cascade_llm_api_key=live_server.api_key,
                        cascade_stt_base_url=services, cascade_stt_api_key=live_server.api_key,
                        cascade_tts_base_url=services, cascade_tts_api_key=live_server.api_key)
    yield live
    live.embedded.stop()


async def converse(gateway: LiveServer, by_voice: bool) -> tuple[list[str], str]:
    """One request to a RealtimeAgent session on `gateway`; the tool calls it ran and the agent's reply."""
    CALLED.clear()
    agent = RealtimeAgent(name="Support", instructions="You help customers with their orders.",
                          tools=[get_order_status])
    settings = {"model_name": "gpt-realtime", "output_modalities": ["audio" if by_voice else "text"]}
    if by_voice:
        settings["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 300}
        settings["input_audio_transcription"] = {"model": "whisper-1"}
    runner = RealtimeRunner(starting_agent=agent, config={"model_settings": settings})  # type: ignore[arg-type,typeddict-item]
    reply: list[str] = []
    async with await runner.run(model_config={"url": f"{gateway.ws_url}/v1/realtime?model=gpt-realtime",
                                              "api_key": gateway.api_key}) as session:
        if by_voice:
            audio = np.concatenate([silence(300, 24000), speak("where is order seven seven seven", rate=24000),
                                    silence(900, 24000)]).astype("<i2").tobytes()
            for at in range(0, len(audio), 960):  # 20 ms chunks in real time, as a microphone
                await session.send_audio(audio[at:at + 960])
                await asyncio.sleep(0.02)
        else:
            await session.send_message("Where is order 777?")
        tool_ended = False
        async with asyncio.timeout(60):
            async for event in session:
                if event.type == "error":
                    raise AssertionError(f"the session reported an error: {event.error}")
                if event.type == "tool_end":
                    tool_ended = True
                if event.type == "raw_model_event" and tool_ended:
                    data = event.data
                    if data.type in ("transcript_delta", "output_text_delta"):
                        reply.append(data.delta)
                    elif data.type == "turn_ended" and reply:
                        break
    return CALLED, "".join(reply)


@pytest.mark.parametrize("by_voice", [False, True], ids=["text", "voice"])
async def test_an_agents_sdk_tool_is_called_on_the_local_engine(live_server: LiveServer, by_voice: bool) -> None:
    called, reply = await converse(live_server, by_voice)
    assert called == ["777"]
    assert "delivery" in reply.lower(), reply


@pytest.mark.parametrize("by_voice", [False, True], ids=["text", "voice"])
async def test_an_agents_sdk_tool_is_called_on_the_cascade_engine(cascade_gateway: LiveServer, by_voice: bool) -> None:
    called, reply = await converse(cascade_gateway, by_voice)
    assert called == ["777"]
    assert "delivery" in reply.lower(), reply

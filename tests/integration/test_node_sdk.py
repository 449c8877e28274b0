"""The official openai Node SDK as a client: its Realtime WebSocket classes (GA, and the retired beta's that old
JavaScript servers still import), unmodified, pointed at voxgate by `baseURL` (tests/node, installed from its
lock by `make test`). A client function tool's round trip by text, and a spoken request answered by voice,
in both dialects, on the local engine.

The SDK always connects with wss:// (it sets the scheme itself), so the gateway serves TLS with a self-signed
certificate that Node is told to trust (NODE_EXTRA_CA_CERTS): a JavaScript server reaches voxgate the way it
reaches OpenAI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import LiveServer, start_server
from tests.speech import silence, speak, wer

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENT = NODE_DIR / "realtime_client.mjs"


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("node-sdk")
    os.environ.setdefault("ACME_DB", str(tmp / "acme.db"))
    live = start_server(tmp, engine="local", tls_self_signed=True)
    yield live
    live.embedded.stop()


async def node_client(gateway: LiveServer, dialect: str, scenario: str, *extra: str) -> dict[str, Any]:
    """Run the SDK's client for one scenario; what it printed."""
    node = shutil.which("node")
    assert node is not None, "Node.js is a test dependency (make system-deps)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "the Node SDK is installed by make test (npm ci)"
    cert = gateway.embedded.tls_cert
    assert cert is not None
    base = gateway.base_url.replace("127.0.0.1", "localhost")  # the name the certificate is for
    process = await asyncio.create_subprocess_exec(
        node, str(CLIENT), base, gateway.api_key, dialect, scenario, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(cert)})
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, (out + err).decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert result["errors"] == [], result
    return result


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_client_tool_round_trip_through_the_node_sdk(tls_gateway: LiveServer, dialect: str) -> None:
    result = await node_client(tls_gateway, dialect, "tool")
    assert result["call"] == {"name": "get_weather", "arguments": {"city": "Paris"}, "status": "completed"}
    assert result["status"] == "completed"
    reply = result["reply"].lower()
    assert "paris" in reply and "18" in reply and "sunny" in reply, reply
    created = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
    assert result["events"][:2] == ["session.created", "session.updated"] and created in result["events"]
    assert "response.function_call_arguments.done" in result["events"]


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_spoken_request_answered_by_voice_through_the_node_sdk(tls_gateway: LiveServer, dialect: str,
                                                                        tmp_path: Path) -> None:
    said = "what can you do"
    pcm = np.concatenate([silence(300, 24000), speak(said, rate=24000), silence(1200, 24000)])
    (tmp_path / "request.pcm").write_bytes(pcm.astype("<i2").tobytes())
    result = await node_client(tls_gateway, dialect, "audio", str(tmp_path / "request.pcm"))
    assert wer(said, result["heard"]) == 0, result["heard"]
    assert result["status"] == "completed"
    assert "check the status of an order" in result["said"], result["said"]
    assert result["audio_bytes"] > 24000 * 2, "at least a second of the reply's audio"
    started = "input_audio_buffer.speech_started"
    assert started in result["events"] and "input_audio_buffer.committed" in result["events"]

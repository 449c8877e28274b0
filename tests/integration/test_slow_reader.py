"""A client that stops reading: the server's memory stays bounded and the session is dropped, counted,
and recorded, while other sessions carry on."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import websockets

from tests.conftest import LiveServer


async def test_client_that_never_reads_is_dropped_and_others_carry_on(live_server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    audio = base64.b64encode(b"\x00\x01" * 10000).decode()  # 20 kB of PCM16: each retrieve echoes it back
    # max_queue=1: the client library stops reading the socket as soon as one frame is waiting.
    ws = await websockets.connect(f"{live_server.ws_url}/v1/realtime?model=x", additional_headers=headers,
                                  max_queue=1, max_size=None)
    created = json.loads(await ws.recv())
    session_id = created["session"]["id"]
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "id": "item_big", "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}}))
    retrieve = json.dumps({"type": "conversation.item.retrieve", "item_id": "item_big"})
    try:
        for _ in range(3000):
            await ws.send(retrieve)
    except websockets.ConnectionClosed:
        pass  # the server may already have dropped us

    # The server dropped the session; another caller is unaffected.
    async with websockets.connect(f"{live_server.ws_url}/v1/realtime?model=x", additional_headers=headers) as ok:
        assert json.loads(await ok.recv())["type"] == "session.created"

    async with httpx.AsyncClient(base_url=live_server.base_url, headers=headers) as http:
        for _ in range(100):
            call = (await http.get(f"/v1/calls/{session_id}")).json()
            if call.get("ended_at"):
                break
            await asyncio.sleep(0.1)
        assert call["status"] == "dropped", call["status"]
        metrics = (await http.get("/metrics")).text
    overflows = [line for line in metrics.splitlines() if line.startswith("voxgate_buffer_overflows_total ")]
    assert overflows and float(overflows[0].split()[1]) >= 1
    assert session_id not in live_server.gateway.sessions
    ws.transport.abort()

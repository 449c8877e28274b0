"""Connection caps and timeouts on a live gateway: idle sockets beyond the cap cannot lock real clients
out, slowloris is closed after the request timeout, a full house of busy connections gets a clean 503,
and a Realtime WebSocket that never says anything is closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, start_server

KEY = "sk-connections"


@pytest.fixture
def small_gateway(tmp_path: Path) -> Iterator[LiveServer]:
    """Eight connections at most; a request must arrive within half a second."""
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=KEY, max_connections=8,
                        http_request_timeout_s=0.5, ws_idle_timeout_s=0.5)
    yield live
    live.embedded.stop()


def port_of(live: LiveServer) -> int:
    return int(live.base_url.rsplit(":", 1)[1])


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := await reader.read(4096):
        data += chunk
    return data


async def test_idle_sockets_beyond_the_cap_cannot_lock_a_real_client_out(tmp_path: Path) -> None:
    # A long request timeout: what frees room here is eviction, not the timer.
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=KEY, max_connections=8,
                        http_request_timeout_s=60)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port_of(live)) for _ in range(24)]
        async with httpx.AsyncClient(base_url=live.base_url) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert (await http.get("/healthz")).json() == {"status": "ok"}  # the same connection, kept alive
        # The oldest idle sockets made room, each answered 408 and closed: 24 + 1 sockets for 8 slots.
        for reader, _ in idle[:17]:
            assert (await read_to_close(reader)).startswith(b"HTTP/1.1 408 ")
        async with httpx.AsyncClient(base_url=live.base_url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            metrics = (await http.get("/metrics")).text
        assert 'voxgate_connections_closed_total{reason="evicted"}' in metrics
        for _, writer in idle:
            writer.close()
    finally:
        live.embedded.stop()


async def test_when_every_slot_is_a_live_call_a_new_connection_gets_a_clean_503(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=KEY, max_connections=3)
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        calls = [await websockets.connect(f"{live.ws_url}/v1/realtime?model=x", additional_headers=headers)
                 for _ in range(3)]
        for ws in calls:
            assert json.loads(await ws.recv())["type"] == "session.created"
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(live))
        answer = await read_to_close(reader)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 5" in head.lower()
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        # A call that ends gives its connection back.
        await calls.pop().close()
        async with httpx.AsyncClient(base_url=live.base_url) as http:
            assert (await http.get("/readyz")).status_code == 200
        for ws in calls:
            await ws.close()
    finally:
        live.embedded.stop()


async def test_slowloris_is_closed_after_the_request_timeout(small_gateway: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(small_gateway))
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    closed = asyncio.create_task(read_to_close(reader))
    trickled = 0
    while not closed.done() and trickled < 5000:  # a byte every 20 ms, forever unless the server hangs up
        try:
            writer.write(b"a")
            await writer.drain()
        except ConnectionError:
            break
        trickled += 1
        await asyncio.wait({closed}, timeout=0.02)
    answer = await closed
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    writer.close()
    # Meanwhile real clients are served, and a socket that never sends a byte is closed the same way.
    async with httpx.AsyncClient(base_url=small_gateway.base_url) as http:
        assert (await http.get("/readyz")).status_code == 200
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port_of(small_gateway))
    assert (await read_to_close(silent_reader)).startswith(b"HTTP/1.1 408 ")
    silent_writer.close()


async def test_a_second_request_trickled_on_a_kept_alive_connection_is_closed_too(small_gateway: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(small_gateway))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # ...and the rest never comes
    assert await read_to_close(reader) == b""  # closed without a second answer: one was sent already
    writer.close()


async def test_a_realtime_session_that_never_sends_anything_is_closed(small_gateway: LiveServer) -> None:
    async with websockets.connect(f"{small_gateway.ws_url}/v1/realtime?model=x",
                                  additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        error = json.loads(await ws.recv())
        assert (error["type"], error["error"]["code"]) == ("error", "session_idle_timeout")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    close = closed.value.rcvd
    assert close is not None and (close.code, close.reason) == (1000, "idle timeout")

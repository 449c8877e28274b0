"""Rate limits on a live gateway: per source address and per key, on the routes that open calls and mint
keys, answered 429 with Retry-After and counted; other addresses and keys are not held back."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import start_server

KEY, OTHER_KEY = "sk-rate-1", "sk-rate-2"
SLOW = 0.01  # a token every 100 s: nothing refills while the test runs, however slow the machine


def client(base_url: str, source: str, key: str) -> httpx.AsyncClient:
    """A client on its own loopback address (127.0.0.0/8 is all ours)."""
    return httpx.AsyncClient(base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address=source),
                             headers={"Authorization": f"Bearer {key}"})


async def test_one_address_gets_its_burst_then_429_while_others_carry_on(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=f"{KEY},{OTHER_KEY}",
                        rate_limit_per_source=SLOW, rate_limit_per_source_burst=3, rate_limit_per_key=0)
    try:
        async with client(live.base_url, "127.0.0.2", KEY) as noisy:
            minted = [await noisy.post("/v1/realtime/client_secrets", json={}) for _ in range(3)]
            assert [r.status_code for r in minted] == [200, 200, 200]
            limited = await noisy.post("/v1/realtime/client_secrets", json={})
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 90
            assert limited.json()["error"]["code"] == "rate_limit_exceeded"
            # Another key from the same address is the same address.
            noisy.headers["Authorization"] = f"Bearer {OTHER_KEY}"
            assert (await noisy.post("/v1/realtime/calls", content="v=0\r\n")).status_code == 429
            assert (await noisy.get("/v1/calls")).status_code == 200  # reading is not limited
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{live.ws_url}/v1/realtime?model=x", local_addr=("127.0.0.2", 0),
                                     additional_headers={"Authorization": f"Bearer {KEY}"})
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"]

        async with client(live.base_url, "127.0.0.3", KEY) as quiet:
            assert (await quiet.post("/v1/realtime/client_secrets", json={})).status_code == 200
            metrics = (await quiet.get("/metrics")).text
        limited_lines = [line for line in metrics.splitlines() if line.startswith("voxgate_rate_limited_total{")]
        assert any('route="client_secrets"' in line and 'scope="source"' in line for line in limited_lines)
        assert any('route="realtime_ws"' in line for line in limited_lines)
    finally:
        live.embedded.stop()


async def test_one_key_gets_its_burst_from_any_address(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=f"{KEY},{OTHER_KEY}",
                        rate_limit_per_key=SLOW, rate_limit_per_key_burst=2, rate_limit_per_source=0)
    try:
        for source in ("127.0.0.4", "127.0.0.5"):
            async with websockets.connect(f"{live.ws_url}/v1/realtime?model=x", local_addr=(source, 0),
                                          additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
        async with client(live.base_url, "127.0.0.6", KEY) as third:
            limited = await third.post("/v1/realtime/client_secrets", json={})
            assert limited.status_code == 429 and limited.headers["retry-after"]
        async with client(live.base_url, "127.0.0.6", OTHER_KEY) as other:
            assert (await other.post("/v1/realtime/client_secrets", json={})).status_code == 200
    finally:
        live.embedded.stop()

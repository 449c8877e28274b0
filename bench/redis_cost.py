"""What Redis adds per call set-up and per control action when gateways form a cluster (redis_url).

Two gateways in this process (echo engine, one shared SQLite file) on a local redis-server, and one
gateway without Redis as the baseline. Each figure is the same request timed many times, sequentially,
from a client in this process (so it is latency on an idle machine, not throughput):

- call set-up: a WebSocket session opened and closed (handshake, rate limits, admission, session.created)
  on the single node and on a cluster node; the difference is what the registry and shared rate limits
  add to each call (one rate-limit script for both buckets, one SET on open, one DEL on close);
- control action: `POST /v1/realtime/calls/{id}/hangup` for a call the node holds (answered in place)
  and for one held by the other node (registry look-up, PUBLISH, the holder runs the route, PUBLISH
  back). The call id is registered in Redis without a live call, so both answer 404 from the holder's
  route: this times the carrying, not the hang-up itself;
- sideband frames: a client event on a browser call's sideband and the event it brings back
  (`session.update` -> `session.updated`), on a sideband attached to the node holding the call and on
  one carried from the other node through Redis (each frame a PUBLISH to the other node, both ways);
  half the difference is what the tunnel adds to each frame;
- the bare Redis operations behind them: hold (SET), holder (a script), a shared rate-limit check.

    .venv/bin/python bench/redis_cost.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.redis_server import RedisServer
from tests.webrtc_client import WebRtcCaller

from voxgate.control.rate_limit import RateLimits, SharedRateLimits
from voxgate.embedded import EmbeddedGateway

KEY = "sk-bench"
API = {"Authorization": f"Bearer {KEY}"}


def gateway(tmp: Path, name: str, redis_url: str = "") -> EmbeddedGateway:
    (tmp / name).mkdir()
    return EmbeddedGateway(tmp / name, api_keys=KEY, engine="echo", max_calls=64, redis_url=redis_url,
                           node_id=name, database_url=f"sqlite+aiosqlite:///{tmp / f'{name}.db'}"
                           if not redis_url else f"sqlite+aiosqlite:///{tmp / 'cluster.db'}",
                           rate_limit_per_key=1e6, rate_limit_per_source=1e6).start()


async def timed(step: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    return (await paired(step, None, rounds))[0]


async def paired(first: Callable[[], Awaitable[object]], second: Callable[[], Awaitable[object]] | None,
                 rounds: int) -> tuple[list[float], list[float]]:
    """Each step timed `rounds` times, the two alternating, so that a change in the machine's load
    (this one is shared) falls on both alike."""
    steps = [s for s in (first, second) if s is not None]
    for _ in range(min(20, rounds)):  # warm: connections, caches, scripts loaded
        for step in steps:
            await step()
    costs: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for step, into in zip(steps, costs, strict=False):
            start = time.perf_counter()
            await step()
            into.append((time.perf_counter() - start) * 1e6)
    return costs


def row(name: str, costs: list[float], baseline: list[float] | None = None) -> None:
    p50, p95 = statistics.median(costs), statistics.quantiles(costs, n=20)[18]
    extra = f"   +{p50 - statistics.median(baseline):7.0f} µs on the baseline's p50" if baseline else ""
    print(f"  {name:<52} p50 {p50:7.0f} µs   p95 {p95:7.0f} µs{extra}")


async def measure(single: EmbeddedGateway, a: EmbeddedGateway, b: EmbeddedGateway, rounds: int) -> None:
    def session_on(node: EmbeddedGateway) -> Callable[[], Awaitable[None]]:
        async def open_and_close() -> None:
            async with websockets.connect(f"{node.ws_url}/v1/realtime?model=x&agent=echo",
                                          additional_headers=API) as ws:
                await ws.recv()  # session.created
        return open_and_close

    print("call set-up (WebSocket session opened, session.created, closed):")
    alone, clustered = await paired(session_on(single), session_on(a), rounds)
    row("single node, no Redis", alone)
    row("cluster node (registry + shared rate limits)", clustered, alone)

    assert a.gateway.cluster is not None and b.gateway.cluster is not None
    a.run(a.gateway.cluster.hold("rtc_bench"))
    async with httpx.AsyncClient(base_url=a.base_url, headers=API) as on_a, \
            httpx.AsyncClient(base_url=b.base_url, headers=API) as on_b:
        def hangup(http: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
            async def post() -> None:
                assert (await http.post("/v1/realtime/calls/rtc_bench/hangup")).status_code == 404
            return post

        print("control action (POST .../hangup, answered by the holder's route):")
        here, relayed = await paired(hangup(on_a), hangup(on_b), rounds)
        row("on the node holding the call", here)
        row("on the other node (relayed through Redis)", relayed, here)

    print("sideband frame round trip (session.update -> session.updated), two browser calls on node-a:")
    callers = [WebRtcCaller(), WebRtcCaller()]
    try:
        async with httpx.AsyncClient(base_url=a.base_url) as on_a:
            for caller in callers:
                await caller.connect(on_a, "/v1/realtime/calls?agent=echo", KEY)
                await caller.wait_for("session.created", 30)
        update = json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Bench."}})

        def round_trip(ws: websockets.ClientConnection) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                await ws.send(update)
                while json.loads(await ws.recv())["type"] != "session.updated":
                    pass
            return step

        async with websockets.connect(f"{a.ws_url}/v1/realtime?call_id={callers[0].call_id}",
                                      additional_headers=API) as direct, \
                websockets.connect(f"{b.ws_url}/v1/realtime?call_id={callers[1].call_id}",
                                   additional_headers=API) as carried:
            await direct.recv()
            await carried.recv()  # session.created
            here, there = await paired(round_trip(direct), round_trip(carried), rounds)
        row("attached on the node holding the call", here)
        row("attached on the other node (carried through Redis)", there, here)
        print(f"  {'per frame, one way (half the difference)':<52} "
              f"+{(statistics.median(there) - statistics.median(here)) / 2:7.0f} µs")
    finally:
        for caller in callers:
            await caller.close()

    print("Redis operations (from this process, one client):")
    cluster = b.gateway.cluster
    redis = cluster.redis
    shared = SharedRateLimits(redis, RateLimits(key_rate=1e6, key_burst=10**6, source_rate=1e6,
                                                source_burst=10**6))
    for name, step in (("hold (SET call -> node)", lambda: cluster.hold("rtc_bench_b")),
                       ("holder (GET + node alive, one script)", lambda: cluster.holder("rtc_bench")),
                       ("shared rate limits (both buckets, one script)", lambda: shared.wait_s("127.0.0.1", KEY, "x"))):
        costs = b.run(timed(step, rounds * 5), timeout_s=600)
        row(name, costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with RedisServer(tmp) as redis:
            single = gateway(tmp, "single")
            a = gateway(tmp, "node-a", redis.url)
            b = gateway(tmp, "node-b", redis.url)
            try:
                asyncio.run(measure(single, a, b, args.rounds))
            finally:
                for node in (single, a, b):
                    node.stop()


if __name__ == "__main__":
    main()

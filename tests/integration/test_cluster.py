"""Two gateways in this process sharing one database and a real redis-server: the registry of live calls,
call control carried to the node holding the call, ephemeral keys spent once across nodes, shared rate
limits and the load report. (Separate processes, PostgreSQL, Kamailio, kill -9 and SIGTERM:
test_scale_out.py.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from tests.integration.test_sip_call_control import until
from tests.phone_carrier import eventually_true
from tests.redis_server import RedisServer
from tests.serve_process import open_session
from tests.sipp_caller import free_port as free_udp_port
from tests.sipp_caller import invite, request, run_sipp, scenario
from tests.webrtc_client import WebRtcCaller
from voxgate.config import Settings
from voxgate.control.rate_limit import RateLimits, SharedRateLimits
from voxgate.embedded import EmbeddedGateway, free_port

KEY, OTHER = "sk-cluster", "sk-other"
HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
API = {"Authorization": f"Bearer {KEY}"}
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"the app behind the cluster").decode()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def start_node(tmp: Path, name: str, redis: RedisServer, **settings: Any) -> EmbeddedGateway:
    (tmp / name).mkdir(exist_ok=True)
    settings = {"api_keys": f"{KEY},{OTHER}", "engine": "echo", "max_calls": 16, "redis_url": redis.url,
                "database_url": f"sqlite+aiosqlite:///{tmp / 'shared.db'}", "cluster_heartbeat_s": 0.5,
                "cluster_relay_timeout_s": 2,
                "node_id": name, **settings}
    return EmbeddedGateway(tmp / name, **settings).start()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory,
          redis_server: RedisServer) -> Iterator[tuple[EmbeddedGateway, EmbeddedGateway]]:
    tmp = tmp_path_factory.mktemp("cluster")
    a = start_node(tmp, "node-a", redis_server, load_report_port=free_port())
    try:
        b = start_node(tmp, "node-b", redis_server, load_report_port=free_port())
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


@pytest.fixture
async def clients(nodes: tuple[EmbeddedGateway, EmbeddedGateway]) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    a, b = nodes
    async with httpx.AsyncClient(base_url=a.base_url) as http_a, httpx.AsyncClient(base_url=b.base_url) as http_b:
        yield http_a, http_b


async def test_a_call_is_hung_up_through_the_node_that_does_not_hold_it(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway], clients: tuple[httpx.AsyncClient, ...]) -> None:
    a, b = nodes
    http_a, http_b = clients
    caller = WebRtcCaller()
    try:
        assert (await caller.connect(http_a, "/v1/realtime/calls?agent=echo", KEY)).status_code == 201
        await caller.wait_for("session.created", 10)
        hangup = f"/v1/realtime/calls/{caller.call_id}/hangup"
        assert b.run(b.gateway.cluster.holder(caller.call_id)) == "node-a"  # type: ignore[union-attr]

        # B relays to A, where the route's own checks answer: no key, or another key's call, is refused
        # exactly as A refuses it, and the call carries on.
        assert (await http_b.post(hangup)).status_code == 401
        other = await http_b.post(hangup, headers={"Authorization": f"Bearer {OTHER}"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "call_id_not_found"
        assert len(a.gateway.sessions) == 1

        reply = await http_b.post(hangup, headers=API)
        assert (reply.status_code, reply.content) == (200, b"")
        await eventually_true(lambda: asyncio.sleep(0, not a.gateway.sessions), 10, "the call ended on A")
        await eventually_true(lambda: asyncio.sleep(0, caller.pc.connectionState == "closed"), 10,
                              "the browser's peer connection closed")
        assert b.run(b.gateway.cluster.holder(caller.call_id)) is None  # type: ignore[union-attr]
        # Over now: both nodes answer as for any unknown call.
        for http in (http_a, http_b):
            gone = await http.post(hangup, headers=API)
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "call_id_not_found"
    finally:
        await caller.close()
    calls = (await http_b.get("/v1/calls?limit=5", headers=API)).json()["data"]
    hung_up = next(c for c in calls if c["transport"] == "webrtc")
    assert (hung_up["status"], hung_up["end_reason"]) == ("completed", "hangup_requested")


@contextlib.asynccontextmanager
async def browser_call(http: httpx.AsyncClient) -> AsyncIterator[WebRtcCaller]:
    """A browser's call to the echo agent on the node `http` reaches, hung up at the end."""
    caller = WebRtcCaller()
    try:
        assert (await caller.connect(http, "/v1/realtime/calls?agent=echo", KEY)).status_code == 201
        await caller.wait_for("session.created", 10)
        yield caller
    finally:
        await caller.close()


def refusal(exc: pytest.ExceptionInfo[websockets.InvalidStatus]) -> tuple[int, str]:
    """A refused handshake's status and problem code."""
    body = json.loads(exc.value.response.body or b"{}")
    return exc.value.response.status_code, str(body.get("error", {}).get("code"))


async def test_a_sideband_opened_on_the_node_that_does_not_hold_the_call_is_carried_to_it(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway], clients: tuple[httpx.AsyncClient, ...]) -> None:
    """The official SDK's `realtime.connect(call_id=...)` on B joins a browser call held by A: the key is
    checked on B, the call's own rules on A; events and client events flow both ways; the call's end
    closes the sideband with A's code; a sideband that leaves is gone from A's call."""
    a, b = nodes
    http_a, http_b = clients
    async with browser_call(http_a) as caller:
        call = a.app.state.webrtc_calls.get(caller.call_id)
        sideband = f"{b.ws_url}/v1/realtime?call_id={caller.call_id}"
        # No key: refused by B, where the client connected. Another key, or a browser's key: refused by
        # A's route, as A refuses them (the call is not theirs; a sideband needs an API key).
        ephemeral = (await http_b.post("/v1/realtime/client_secrets?agent=echo", headers=API, json={})).json()["value"]
        for headers, refused in (({}, (401, "invalid_api_key")), ({"Authorization": f"Bearer {OTHER}"},
                                 (404, "call_id_not_found")),
                                 ({"Authorization": f"Bearer {ephemeral}"}, (403, "ephemeral_key_not_allowed"))):
            with pytest.raises(websockets.InvalidStatus) as exc:
                await websockets.connect(sideband, additional_headers=headers)
            assert refusal(exc) == refused
        assert not call.sidebands

        client = AsyncOpenAI(api_key=KEY, base_url=f"{b.base_url}/v1", max_retries=0)
        async with client.realtime.connect(call_id=caller.call_id) as conn:
            created = await until(conn, "session.created")
            assert created.session.id == call.session.id
            assert len(call.sidebands) == 1  # held by A, not B
            await conn.session.update(session={"type": "realtime", "instructions": "Carried across nodes."})
            await until(conn, "session.updated")
            assert call.session.config.instructions == "Carried across nodes."
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "over the tunnel"}]})
            added = await until(conn, "conversation.item.added")
            assert added.item.content[0].text == "over the tunnel"
            assert [i.text for i in call.session.conversation.visible() if i.type == "message"][-1:] == [
                "over the tunnel"]
        await eventually_true(lambda: asyncio.sleep(0, not call.sidebands), 10, "the SDK's sideband leaving A's call")
        assert not call.session.closed  # the call goes on without its sideband

        # A sideband is open through B when the call is hung up (also through B): A closes it, 1000, and B
        # passes the code on.
        async with websockets.connect(sideband, additional_headers=API, subprotocols=["realtime"]) as ws:
            assert ws.subprotocol == "realtime"  # A's accept, as A chose it
            assert json.loads(await ws.recv())["type"] == "session.created"
            assert (await http_b.post(f"/v1/realtime/calls/{caller.call_id}/hangup", headers=API)).status_code == 200
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1000
        # Over: neither node holds it, and both answer as for any unknown call.
        with pytest.raises(websockets.InvalidStatus) as exc:
            await websockets.connect(sideband, additional_headers=API)
        assert refusal(exc) == (404, "call_id_not_found")


async def test_a_carried_sideband_that_stops_reading_is_cut_off_by_the_holder_and_the_call_goes_on(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway], clients: tuple[httpx.AsyncClient, ...]) -> None:
    """Back-pressure end to end: a client on B that reads nothing stops B's sends to it, then the credit
    of the holder A, then A's writer; A's bounded queue overflows (outbound_queue_events) and A cuts the
    sideband off with 1008, as it would a local one, and B passes the code on. The call carries on."""
    a, b = nodes
    http_a, _ = clients
    async with browser_call(http_a) as caller:
        call = a.app.state.webrtc_calls.get(caller.call_id)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that soon stops taking frames
        slow.connect(("127.0.0.1", b.settings.port))
        async with websockets.connect(f"{b.ws_url}/v1/realtime?call_id={caller.call_id}", sock=slow,
                                      additional_headers=API, max_queue=1) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            item = json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x" * 200}]}})
            for _ in range(50_000):  # each is echoed back as events the client never reads
                if not call.sidebands:
                    break
                await ws.send(item)
                await asyncio.sleep(0)
            assert not call.sidebands, "A never cut the stalled sideband off"
            assert not call.session.closed
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1008


async def test_a_ringing_sip_call_an_app_controls_is_rejected_through_the_node_that_does_not_hold_it(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway], redis_server: RedisServer, tmp_path: Path) -> None:
    """The app's word on a ringing call (its webhook went out from D) may reach any node: the call is in
    the registry from its first ring, so B carries the reject to D, whose SIPp caller gets the code."""
    from redis.asyncio import Redis

    _, b = nodes
    sip = free_udp_port()
    d = start_node(tmp_path, "node-d", redis_server, sip_port=sip, sip_webhook_secret=WEBHOOK_SECRET,
                   sip_call_control={"*": {"url": f"http://127.0.0.1:{free_port()}/hook", "answer_timeout_s": 120}})
    redis = Redis.from_url(redis_server.url)
    try:
        xml = scenario("rejected through another node", invite(), '  <recv response="100" optional="true"/>\n'
                       '  <recv response="180"/>\n  <recv response="486"/>\n', request("ACK", 1, branch="[branch-4]"))
        caller = asyncio.create_task(run_sipp(tmp_path, xml, sip))

        async def ringing_on_d() -> str | None:
            assert not caller.done(), caller.result().messages[-3000:]
            for key in await redis.keys("voxgate:call:rtc_*"):
                if await redis.get(key) == b"node-d":
                    return key.decode().rsplit(":", 1)[1]
            return None

        await eventually_true(ringing_on_d, 30, "the ringing call in the registry")
        call_id = await ringing_on_d()
        async with httpx.AsyncClient(base_url=b.base_url) as http_b:
            reply = await http_b.post(f"/v1/realtime/calls/{call_id}/reject", headers=API, json={"status_code": 486})
        assert reply.status_code == 200, reply.text
        outcome = await caller
        assert outcome.returncode == 0, outcome.messages[-3000:]
        await eventually_true(lambda: asyncio.sleep(0, not b.run(b.gateway.cluster.holder(str(call_id)))),  # type: ignore[union-attr]
                              10, "the rejected call leaving the registry")
    finally:
        await redis.aclose()
        d.stop()


async def test_a_holder_that_does_not_answer_is_a_503_and_one_that_is_gone_is_the_routes_own_404(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway], clients: tuple[httpx.AsyncClient, ...],
        redis_server: RedisServer) -> None:
    from redis.asyncio import Redis

    http_a, _ = clients
    hangup = "/v1/realtime/calls/rtc_ghost/hangup"
    redis = Redis.from_url(redis_server.url)
    listener = redis.pubsub()
    try:
        # A node alive in Redis, holding a call, listening for requests, answering none.
        await redis.set("voxgate:node:ghost", "{}", px=60_000)
        await redis.set("voxgate:call:rtc_ghost", "ghost")
        await listener.subscribe("voxgate:relay:ghost")
        stuck = await http_a.post(hangup, headers=API)
        assert stuck.status_code == 503 and stuck.headers["retry-after"] == "1"
        assert stuck.json()["error"]["code"] == "call_node_unreachable"  # never a false "no such call"

        async def not_found() -> bool:
            gone = await http_a.post(hangup, headers=API)
            return gone.status_code == 404 and gone.json()["error"]["code"] == "call_id_not_found"

        await listener.aclose()  # nobody listens for it any more: the call is nowhere
        await eventually_true(not_found, 10, "the route's own 404 once nobody listens")
        await redis.delete("voxgate:node:ghost")  # its heartbeat lapsed: its calls resolve to no node
        assert await not_found()
    finally:
        await redis.delete("voxgate:node:ghost", "voxgate:call:rtc_ghost")
        await redis.aclose()


async def test_the_registry_names_the_node_of_every_live_session_until_it_ends(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway]) -> None:
    a, b = nodes
    ws_a, on_a = await open_session(a.ws_url, KEY)
    ws_b, on_b = await open_session(b.ws_url, KEY)
    try:
        for node in (a, b):
            cluster = node.gateway.cluster
            assert cluster is not None
            assert node.run(cluster.holder(on_a)) == "node-a" and node.run(cluster.holder(on_b)) == "node-b"

        async def loads_reported() -> bool:  # each node's next heartbeat carries its load
            seen = b.run(b.gateway.cluster.nodes())  # type: ignore[union-attr]
            return {name: load["active"] for name, load in seen.items()} == {"node-a": 1, "node-b": 1}

        await eventually_true(loads_reported, 10, "both nodes reporting one call")
        seen = b.run(b.gateway.cluster.nodes())  # type: ignore[union-attr]
        assert seen["node-a"]["draining"] is False and seen["node-a"]["limit"] == 16
    finally:
        await ws_a.close()
        await ws_b.close()

    async def released() -> bool:
        cluster = b.gateway.cluster
        assert cluster is not None
        return b.run(cluster.holder(on_a)) is None and b.run(cluster.holder(on_b)) is None

    await eventually_true(released, 10, "both sessions leaving the registry")


async def test_an_ephemeral_key_minted_on_one_node_opens_one_session_on_any_node(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway], clients: tuple[httpx.AsyncClient, ...]) -> None:
    a, b = nodes
    http_a, _ = clients
    minted = await http_a.post("/v1/realtime/client_secrets?agent=echo", headers=API, json={})
    secret = minted.json()["value"]
    ws, _ = await open_session(b.ws_url, secret)
    await ws.close()
    for node in (a, b):  # spent: neither node opens another session with it
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_session(node.ws_url, secret)
        assert refused.value.response.status_code == 401


async def test_the_load_report_tells_haproxy_how_idle_the_node_is(
        nodes: tuple[EmbeddedGateway, EmbeddedGateway]) -> None:
    a, _ = nodes

    async def report() -> str:
        assert a.gateway.load_report is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", a.gateway.load_report.port)
        line = await reader.read()
        writer.close()
        return line.decode()

    assert await report() == "up 100%\n"
    ws, _ = await open_session(a.ws_url, KEY)
    try:
        assert await report() == "up 93%\n"  # 15 of 16 free
    finally:
        await ws.close()


async def test_rate_limits_are_shared_by_the_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    limits = {"rate_limit_per_key": 0.01, "rate_limit_per_key_burst": 2, "rate_limit_per_source": 0}
    a = start_node(tmp_path, "limited-a", redis_server, **limits)
    try:
        b = start_node(tmp_path, "limited-b", redis_server, **limits)
        try:
            async with httpx.AsyncClient() as http:
                mint = "/v1/realtime/client_secrets?agent=echo"
                assert (await http.post(a.base_url + mint, headers=API, json={})).status_code == 200
                assert (await http.post(b.base_url + mint, headers=API, json={})).status_code == 200
                # The key's burst of 2 is spent across both nodes: the third request is refused on either.
                for node in (a, b):
                    refused = await http.post(node.base_url + mint, headers=API, json={})
                    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
                # Another key has its own bucket.
                other = await http.post(b.base_url + mint, headers={"Authorization": f"Bearer {OTHER}"}, json={})
                assert other.status_code == 200
        finally:
            b.stop()
    finally:
        a.stop()


class HAProxy:
    """HAProxy with the shipped config in front of `nodes`, plus an admin socket to read its tables."""

    def __init__(self, tmp: Path, nodes: tuple[EmbeddedGateway, ...]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            pytest.fail("haproxy not found: `apt-get install haproxy` (the Makefile's system-deps)", pytrace=False)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.socket = tmp / "admin.sock"
        (tmp / "admin.cfg").write_text(f"global\n    stats socket {self.socket} mode 600 level admin\n")
        env = {**os.environ, "LISTEN": f"127.0.0.1:{self.port}"}
        for number, node in enumerate(nodes, 1):
            assert node.gateway.load_report is not None
            env[f"GATEWAY_{number}"] = node.base_url.removeprefix("http://")
            env[f"GATEWAY_{number}_AGENT"] = str(node.gateway.load_report.port)
        self.log = (tmp / "haproxy.log").open("w")
        self.process = subprocess.Popen([binary, "-db", "-f", str(HAPROXY_CFG), "-f", str(tmp / "admin.cfg")],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def weights(self) -> dict[str, int]:
        """Each gateway's current weight, as the agent checks set it."""
        rows = csv.DictReader(self.ask("show stat").lstrip("# ").splitlines())
        return {row["svname"]: int(row["weight"]) for row in rows if row["pxname"] == "gateways"
                and row["svname"] not in ("FRONTEND", "BACKEND")}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.log.close()


async def test_behind_haproxy_a_call_sticks_to_its_node_and_the_idlest_node_weighs_most(
        tmp_path: Path, nodes: tuple[EmbeddedGateway, EmbeddedGateway]) -> None:
    a, _ = nodes
    proxy = HAProxy(tmp_path, nodes)
    caller = WebRtcCaller()
    try:
        async with httpx.AsyncClient(base_url=proxy.base_url) as http:
            async def up() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200 and proxy.weights() == {
                        "gw1": 100, "gw2": 100}
                except (httpx.TransportError, OSError):
                    return False

            await eventually_true(up, 30, "HAProxy up with both gateways at full weight")
            assert (await caller.connect(http, "/v1/realtime/calls?agent=echo", KEY)).status_code == 201
            await caller.wait_for("session.created", 10)
            holder = "gw1" if caller.call_id in a.gateway.cluster.held else "gw2"  # type: ignore[union-attr]
            # The call's id was learnt from the answer's Location: requests naming it go to its node.
            table = proxy.ask("show table gateways")
            assert caller.call_id in table and f"server_id={1 if holder == 'gw1' else 2}" in table

            # The node holding the call reports 15 of 16 calls free: HAProxy weighs it 93, the other 100.
            async def weighed() -> bool:
                return proxy.weights() == {"gw1": 93, "gw2": 100} if holder == "gw1" else \
                    proxy.weights() == {"gw1": 100, "gw2": 93}

            await eventually_true(weighed, 30, "the agent checks weighing the busier node less")
            ws = await websockets.connect(f"{proxy.base_url.replace('http', 'ws')}/v1/realtime?model=x&agent=echo",
                                          additional_headers=API)
            assert json.loads(await ws.recv())["type"] == "session.created"  # WebSockets pass through
            await ws.close()
            reply = await http.post(f"/v1/realtime/calls/{caller.call_id}/hangup", headers=API)
            assert (reply.status_code, reply.content) == (200, b"")
            await eventually_true(lambda: asyncio.sleep(0, caller.pc.connectionState == "closed"), 10,
                                  "the hang-up through HAProxy")
    finally:
        await caller.close()
        proxy.stop()


async def test_with_redis_unreachable_each_node_falls_back_to_its_own_rate_limits() -> None:
    from redis.asyncio import Redis

    nobody = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        limits = SharedRateLimits(nobody, RateLimits(key_rate=0.01, key_burst=2, source_rate=0, source_burst=1))
        waits = [await limits.wait_s("127.0.0.1", KEY, "client_secrets") for _ in range(3)]
        assert waits[:2] == [0.0, 0.0] and waits[2] > 1  # the node's own bucket: a burst of 2, then wait
    finally:
        await nobody.aclose()


def test_config_show_has_the_cluster_settings_with_the_redis_password_masked() -> None:
    shown = Settings(redis_url="redis://:hunter2@redis.internal:6379/0").shown()  # what `voxgate config show` prints
    assert shown["redis_url"] == "redis://****@redis.internal:6379/0" and "hunter2" not in json.dumps(shown)
    assert (shown["cluster_heartbeat_s"], shown["cluster_relay_timeout_s"], shown["load_report_port"]) == (2.0, 5.0, 0)
    assert Settings().shown()["redis_url"] == ""  # no Redis: one node, as before

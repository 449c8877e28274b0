"""Two `voxgate serve` processes behind Kamailio (deploy/kamailio/kamailio.cfg, as shipped), sharing a
PostgreSQL store and a Redis, all from Debian packages on loopback ports.

One run, in the order an operator lives it: SIPp calls through Kamailio land on both gateways and
WebSocket calls are opened on both; an ephemeral key minted on one opens a session on the other, once;
a browser call on one is steered by its app's sideband (the official SDK's `realtime.connect(call_id=)`)
through the other, and hung up through the other too; one gateway is killed (kill -9) with calls up: the
survivor closes its records as dropped and new calls through Kamailio go to the survivor; then the
survivor drains on SIGTERM: OPTIONS and INVITE get 503, Kamailio takes it out, HAProxy's agent hears
"drain", its live calls finish, every record is written, and it exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from tests.integration.test_sip_call_control import until as until_event
from tests.phone_carrier import eventually_true
from tests.postgres_server import fresh_database, postgres_cluster
from tests.redis_server import RedisServer
from tests.serve_process import Serve, open_session
from tests.sipp_caller import OFFER, SIPP
from tests.sipp_caller import free_port as free_udp_port
from tests.webrtc_client import WebRtcCaller
from voxgate.embedded import free_port

KEY = "sk-scale"
API = {"Authorization": f"Bearer {KEY}"}
KAMAILIO_CFG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio" / "kamailio.cfg"


class Kamailio:
    """Kamailio in the foreground with the shipped config, its dispatcher set to `gateways`."""

    def __init__(self, tmp: Path, gateways: list[int]) -> None:
        binary = shutil.which("kamailio")
        if binary is None:
            pytest.fail("kamailio not found: `apt-get install kamailio` (the Makefile's system-deps)", pytrace=False)
        self.port = free_udp_port()
        (tmp / "dispatcher.list").write_text("".join(f"1 sip:127.0.0.1:{port}\n" for port in gateways))
        self.log = (tmp / "kamailio.log").open("w")
        self.process = subprocess.Popen(
            [binary, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-Y", str(tmp), "-m", "32", "-M", "4",
             "-A", f'DISPATCHER_LIST="{tmp / "dispatcher.list"}"', "-A", f"LISTEN=udp:127.0.0.1:{self.port}",
             "-A", "PING_INTERVAL=1"], stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.log.close()


class SipProbe(asyncio.DatagramProtocol):
    """A bare SIP user agent on a UDP socket: one request out, its responses in (ACKing a failed INVITE)."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[str] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.responses.put_nowait(data.decode(errors="replace"))


async def sip_final(port: int, method: str) -> str:
    """Send `method` to 127.0.0.1:`port`; the final response's status line ("503 No gateway available")."""
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(SipProbe, local_addr=("127.0.0.1", 0))
    try:
        local = transport.get_extra_info("sockname")[1]
        call_id, branch = secrets.token_hex(8), "z9hG4bK" + secrets.token_hex(6)
        head = (f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch}\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\n"
                "To: <sip:echo@127.0.0.1>{to_tag}\r\n"
                f"Call-ID: {call_id}\r\nMax-Forwards: 70\r\nContact: <sip:probe@127.0.0.1:{local}>\r\n")
        transport.sendto(f"{method} sip:echo@127.0.0.1:{port} SIP/2.0\r\n{head.format(to_tag='')}"
                         f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n".encode(), ("127.0.0.1", port))
        async with asyncio.timeout(30):
            while True:
                response = await probe.responses.get()
                status = response.split("\r\n", 1)[0].split(" ", 1)[1]
                if int(status[:3]) >= 200:
                    break
        if method == "INVITE":  # a failed INVITE is ACKed hop by hop, on its own branch
            to_tag = next(line for line in response.split("\r\n") if line.lower().startswith("to:")).split(">", 1)[1]
            transport.sendto(f"ACK sip:echo@127.0.0.1:{port} SIP/2.0\r\n{head.format(to_tag=to_tag)}"
                             "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n".encode(), ("127.0.0.1", port))
        return status
    finally:
        transport.close()


# A caller as RFC 3261 has it: in-dialog requests go to the remote target, through the Record-Route set
# (Kamailio stays on the path). SIPp's built-in `uac` sends them to the proxy without a Route.
_DIALOG = """From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq}
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70"""
CALL = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call through a proxy">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_DIALOG.format(to_tag="", cseq="1 INVITE")}
Content-Type: application/sdp
Content-Length: [len]

{OFFER.format(version=1, direction="sendrecv")}]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_DIALOG.format(to_tag="[peer_tag_param]", cseq="1 ACK")}
[routes]
Content-Length: 0

]]></send>
  <pause/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_DIALOG.format(to_tag="[peer_tag_param]", cseq="2 BYE")}
[routes]
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


@dataclass
class Sipp:
    """SIPp placing `calls` calls (`CALL`) of `hold_ms` each to 127.0.0.1:`port`."""

    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, directory: Path, port: int, calls: int, hold_ms: int) -> Sipp:
        await asyncio.to_thread(directory.mkdir, exist_ok=True)
        await asyncio.to_thread((directory / "call.xml").write_text, CALL)
        process = await asyncio.create_subprocess_exec(
            SIPP, f"127.0.0.1:{port}", "-sf", "call.xml", "-s", "echo", "-d", str(hold_ms), "-m", str(calls),
            "-r", "10",
            "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
            "-nostdin", "-timeout", "90s", "-timeout_error", "-trace_msg", "-message_file", "messages.log",
            cwd=directory, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        return cls(process)

    async def finished(self) -> tuple[int, str]:
        async with asyncio.timeout(120):
            output, _ = await self.process.communicate()
        return self.process.returncode or 0, output.decode(errors="replace")

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


class Store:
    """The shared PostgreSQL store, read the way an operator would: the calls table."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def calls(self) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(self.url)
        try:
            rows = await connection.fetch("SELECT id, transport, status, end_reason, metadata FROM calls")
        finally:
            await connection.close()
        return [{**dict(row), "node": _metadata(row["metadata"]).get("node")} for row in rows]


def _metadata(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value or {})


@contextlib.asynccontextmanager
async def shared_store(tmp: Path) -> AsyncIterator[tuple[str, RedisServer]]:
    with postgres_cluster() as (host, port):
        async with fresh_database(host, port) as url:
            with RedisServer(tmp) as redis:
                yield url, redis


def node(tmp: Path, name: str, database_url: str, redis: RedisServer, sip_port: int) -> Serve:
    return Serve(tmp, database_url, api_keys=KEY, node_id=name, redis_url=redis.url, sip_port=str(sip_port),
                 cluster_heartbeat_s="0.5", drain_timeout_s="120", load_report_port=str(free_port()))


async def active_calls(serve: Serve) -> int:
    async with httpx.AsyncClient(base_url=serve.base_url) as http:
        return int((await http.get("/readyz")).json()["calls"]["active"])


def where(calls: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [c for c in calls if all(c[k] == v for k, v in match.items())]


async def until(check: Callable[[], Any], what: str, within_s: float = 60) -> None:
    await eventually_true(check, within_s, what)


async def test_two_gateways_behind_kamailio_share_the_store_and_survive_losing_one(tmp_path: Path) -> None:
    async with shared_store(tmp_path) as (database_url, redis):
        store = Store(database_url)
        sip_a, sip_b = free_udp_port(), free_udp_port()
        a = node(tmp_path, "node-a", database_url, redis, sip_a)
        b = node(tmp_path, "node-b", database_url, redis, sip_b)
        kamailio = Kamailio(tmp_path, [sip_a, sip_b])
        doomed: Sipp | None = None
        try:
            await asyncio.gather(a.ready(), b.ready())
            async with httpx.AsyncClient(base_url=a.base_url) as http_a, \
                    httpx.AsyncClient(base_url=b.base_url) as http_b:
                # An ephemeral key minted on A opens a session on B, and nothing after that on either node.
                secret = (await http_a.post("/v1/realtime/client_secrets?agent=echo", headers=API, json={})
                          ).json()["value"]
                ws_b, _ = await open_session(b.ws_url, secret)
                for serve in (a, b):
                    with pytest.raises(websockets.InvalidStatus) as refused:
                        await open_session(serve.ws_url, secret)
                    assert refused.value.response.status_code == 401
                ws_a, on_a = await open_session(a.ws_url, KEY)

                # SIPp calls through Kamailio are spread over both gateways.
                spread = await Sipp.start(tmp_path / "spread", kamailio.port, calls=4, hold_ms=500)
                rc, output = await spread.finished()
                assert rc == 0, output
                sip = where(await store.calls(), transport="sip")
                assert len(sip) == 4 and {c["status"] for c in sip} == {"completed"}
                spread_on_b = len(where(sip, node="node-b"))  # round robin: two each, unless a probe raced
                assert len(where(sip, node="node-a")) >= 1 and spread_on_b >= 1

                # A browser call on A: its app's sideband lands on B (the balancer is not sticky for it) and
                # is carried to A, where it steers the call; the call is hung up through B, which ends the
                # sideband with A's close.
                browser = WebRtcCaller()
                try:
                    assert (await browser.connect(http_a, "/v1/realtime/calls?agent=echo", KEY)).status_code == 201
                    await browser.wait_for("session.created", 20)
                    app = AsyncOpenAI(api_key=KEY, base_url=f"{b.base_url}/v1", max_retries=0)
                    async with app.realtime.connect(call_id=browser.call_id) as sideband:
                        assert (await sideband.recv()).type == "session.created"
                        await sideband.session.update(session={"type": "realtime", "instructions": "Steered from B."})
                        updated = await until_event(sideband, "session.updated")
                        assert updated.session.instructions == "Steered from B."  # type: ignore[union-attr]
                        reply = await http_b.post(f"/v1/realtime/calls/{browser.call_id}/hangup", headers=API)
                        assert (reply.status_code, reply.content) == (200, b"")
                        with pytest.raises(websockets.ConnectionClosedOK):
                            while True:
                                await sideband.recv()
                    await until(lambda: asyncio.sleep(0, browser.pc.connectionState == "closed"), "the hang-up")
                finally:
                    await browser.close()

                # A call on A straight from SIPp, beside the WebSocket call; then A dies (kill -9).
                doomed = await Sipp.start(tmp_path / "doomed", sip_a, calls=1, hold_ms=600_000)
                # Killed only once both live records are in the store: records are written off the call's path
                # (grouped commits), and a call killed before its first write has nothing to mark dropped.
                async def a_recorded() -> bool:
                    return len(where(await store.calls(), node="node-a", status="active")) == 2

                await until(lambda: _equals(active_calls(a), 2), "A holding a SIP and a WebSocket call")
                await until(a_recorded, "A's two live calls recorded")
                a.process.kill()
                a.process.wait(timeout=30)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws_a.close()

            # B sees A's heartbeat stop and closes A's live records as dropped.
            async def a_reaped() -> bool:
                return len(where(await store.calls(), node="node-a", status="dropped")) == 2

            await until(a_reaped, "A's calls recorded as dropped")
            dropped = where(await store.calls(), node="node-a", status="dropped")
            assert {(c["transport"], c["end_reason"]) for c in dropped} == {("sip", "node lost"),
                                                                            ("realtime_ws", "node lost")}
            assert on_a in {c["id"] for c in dropped}

            # New calls through Kamailio go to the survivor (A times out or is already probed down).
            survivors = await Sipp.start(tmp_path / "survivors", kamailio.port, calls=2, hold_ms=8000)
            await until(lambda: _equals(active_calls(b), 3), "B holding both new calls and the WebSocket")

            # B drains: no new call anywhere, its live calls finish, every record is written.
            b.process.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(base_url=b.base_url) as http_b:
                await until(lambda: _equals(_status(http_b, "/readyz"), 503), "B's /readyz turning 503")
            assert (await sip_final(sip_b, "OPTIONS")).startswith("503")
            assert await _agent_line(b) == "drain\n"
            await until(lambda: _equals(sip_final(kamailio.port, "INVITE"), "503 No gateway available"),
                        "Kamailio taking B out of the set")
            # The drain cuts no live call: B's WebSocket session still answers its client.
            await ws_b.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                              "instructions": "Still here."}}))
            async with asyncio.timeout(30):
                while (event := json.loads(await ws_b.recv()))["type"] != "session.updated":
                    pass
            assert event["session"]["instructions"] == "Still here."
            await ws_b.close()  # the browser-key session ends on its own
            rc, output = await survivors.finished()
            assert rc == 0, output  # both calls ran their full length: none was cut
            deadline = time.monotonic() + 120
            while b.process.poll() is None:
                assert time.monotonic() < deadline, "B did not exit after its calls ended"
                await asyncio.sleep(0.1)
            assert b.process.returncode == 0

            calls = await store.calls()
            assert not where(calls, status="active")
            on_b = where(calls, node="node-b")
            assert len(where(on_b, transport="sip")) == spread_on_b + 2  # the spread ones, and both after A died
            assert len(where(on_b, transport="realtime_ws")) == 1
            assert {c["status"] for c in on_b} == {"completed"}
            webrtc = where(calls, transport="webrtc")
            assert [(c["node"], c["status"], c["end_reason"]) for c in webrtc] == [
                ("node-a", "completed", "hangup_requested")]
        finally:
            if doomed is not None:
                doomed.kill()
            kamailio.stop()
            a.stop()
            b.stop()


async def _equals(value: Any, expected: Any) -> bool:
    try:
        return bool(await value == expected)
    except (httpx.TransportError, OSError, TimeoutError):
        return False


async def _status(http: httpx.AsyncClient, path: str) -> int:
    return (await http.get(path)).status_code


async def _agent_line(serve: Serve) -> str:
    port = int(serve.settings["load_report_port"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = await reader.read()
    writer.close()
    return line.decode()


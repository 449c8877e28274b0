"""The open doors of issue 10, each attack replayed against a live gateway on loopback and shown refused.

A browser is played by an HTTP client sending exactly what a browser sends (its Origin, its Host, the
cookies it would hold); tests/e2e/test_browser_console.py replays the same attacks from real Chromium.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, start_server
from tests.webrtc_client import WebRtcCaller
from voxgate.app import create_app
from voxgate.config import Settings, UnsafeSettingsError

KEY_A, KEY_B = "sk-test-key-a", "sk-test-key-b"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Dev mode on loopback, as `make run` starts it, with two operators' keys and both demo agents."""
    live = start_server(tmp_path_factory.mktemp("doors"), engine="echo", api_keys=f"{KEY_A},{KEY_B}",
                        webrtc_host_addresses=["127.0.0.1"])
    yield live
    live.embedded.stop()


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Dev mode off, a configured app origin and an internal host name, metrics opened to scrapers."""
    live = start_server(tmp_path_factory.mktemp("doors-prod"), engine="echo", api_keys=KEY_A, dev_mode=False,
                        cors_origins=["https://app.example"], allowed_hosts=["voxgate.internal"],
                        metrics_public=True)
    yield live
    live.embedded.stop()


def own_origin(live: LiveServer) -> str:
    return live.base_url  # http://127.0.0.1:PORT, what the console page's requests carry


def ephemeral_keys(live: LiveServer) -> int:
    db = Path(live.embedded.settings.database_url.split("///", 1)[1])
    with sqlite3.connect(db) as sql:
        return int(sql.execute("SELECT count(*) FROM api_keys WHERE kind = 'ephemeral'").fetchone()[0])


async def mint(http: httpx.AsyncClient, headers: dict[str, str], agent: str | None = None) -> str:
    reply = await http.post("/v1/realtime/client_secrets", headers=headers, params={"agent": agent} if agent else {},
                            json={"expires_after": {"seconds": 60}})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["value"])


def refused_status(exc: pytest.ExceptionInfo[Exception]) -> tuple[int, dict[str, Any]]:
    assert isinstance(exc.value, websockets.InvalidStatus)
    response = exc.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def eventually(check: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


# -- H1: the console token route ---------------------------------------------------------------------


async def test_a_page_on_another_origin_cannot_mint_a_console_key(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    before = ephemeral_keys(gateway)
    # The attack as found: a page elsewhere posts to the token route (its browser adds its Origin, and
    # no cookie: the console's is SameSite=Strict).
    reply = await http.post("/console/token", headers={"Origin": EVIL})
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "cross_origin_refused"
    assert "access-control-allow-origin" not in reply.headers
    # A page on another port of this machine is the same *site*: the browser does send the cookie.
    page = await http.get("/")
    http.cookies.clear()  # each request below carries exactly the cookies its browser would
    cookie = page.cookies.get("voxgate_console")
    assert cookie and "httponly" in page.headers["set-cookie"].lower()
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    jar = {"Cookie": f"voxgate_console={cookie}"}
    for origin in ("http://127.0.0.1:9", "http://localhost:" + gateway.base_url.rsplit(":", 1)[1], EVIL):
        reply = await http.post("/console/token", headers={"Origin": origin, **jar})
        assert reply.status_code == 403, origin
    # No Origin at all: not a browser's POST, so not the console page.
    assert (await http.post("/console/token", headers=jar)).status_code == 403
    # The right Origin without the page's session (a forged request from a non-browser): refused too.
    reply = await http.post("/console/token",
                            headers={"Origin": own_origin(gateway), "Cookie": "voxgate_console=guessed"})
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "console_session_required"
    assert ephemeral_keys(gateway) == before, "a refused request minted a key"

    # The console page itself: its session and its own origin.
    reply = await http.post("/console/token", headers={"Origin": own_origin(gateway), **jar})
    assert reply.status_code == 200 and reply.json()["value"].startswith("ek_")
    # An app server with an API key mints from anywhere (CORS decides what a page may read).
    assert (await http.post("/console/token", headers={**A, "Origin": EVIL})).status_code == 200
    assert ephemeral_keys(gateway) == before + 2


async def test_console_token_needs_a_key_without_dev_mode(production: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=production.base_url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "voxgate_console" not in page.cookies
        reply = await http.post("/console/token", headers={"Origin": own_origin(production)})
        assert reply.status_code == 401 and "API key" in reply.json()["error"]["message"]
        assert (await http.post("/console/token", headers=A)).status_code == 200


# -- H1: CORS, WebSocket Origin, Host --------------------------------------------------------------


async def test_cors_answers_configured_and_loopback_origins_only(gateway: LiveServer, production: LiveServer) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with httpx.AsyncClient() as http:
        for live, origin, allowed in ((gateway, EVIL, False), (gateway, "http://localhost:5173", True),
                                      (production, "https://app.example", True),
                                      (production, "http://localhost:5173", False)):
            reply = await http.options(f"{live.base_url}/v1/realtime/calls", headers={**preflight, "Origin": origin})
            assert (reply.headers.get("access-control-allow-origin") == origin) is allowed, (origin, reply.headers)
            assert reply.headers.get("access-control-allow-origin") != "*"
            assert "access-control-allow-credentials" not in reply.headers
            plain = await http.get(f"{live.base_url}/healthz", headers={"Origin": origin})
            assert ("access-control-allow-origin" in plain.headers) is allowed


async def test_a_websocket_from_another_origin_is_refused(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    url = f"{gateway.ws_url}/v1/realtime?model=x"
    key = await mint(http, A)  # a page that got hold of a key still cannot use it from its own origin
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin=websockets.Origin(EVIL),
                                 subprotocols=[websockets.Subprotocol("realtime"),
                                               websockets.Subprotocol(f"openai-insecure-api-key.{key}")])
    status, body = refused_status(refused)
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    # Carriers' media sockets are WebSockets too: a page cannot open them either.
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{gateway.ws_url}/twilio/media", origin=websockets.Origin(EVIL))
    assert refused_status(refused)[0] == 403
    # The key was not spent: the gateway's own page (and a server, which sends no Origin) get through.
    async with websockets.connect(url, origin=websockets.Origin(own_origin(gateway)),
                                  additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    async with websockets.connect(url, additional_headers=A) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_production_websocket_origins_are_the_configured_ones(production: LiveServer) -> None:
    url = f"{production.ws_url}/v1/realtime?model=x"
    async with websockets.connect(url, origin=websockets.Origin("https://app.example"), additional_headers=A) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin=websockets.Origin("http://localhost:3000"), additional_headers=A)
    assert refused_status(refused)[0] == 403


async def test_dns_rebinding_host_is_refused(gateway: LiveServer, production: LiveServer,
                                             http: httpx.AsyncClient) -> None:
    port = gateway.base_url.rsplit(":", 1)[1]
    # evil.example now resolves to 127.0.0.1: the page is "same-origin" with the gateway in its browser's
    # eyes, and every request it makes names evil.example.
    for path in ("/", "/healthz", "/static/console.js"):
        reply = await http.get(path, headers={"Host": f"evil.example:{port}"})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_host", path
    reply = await http.post("/console/token", headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
    assert reply.status_code == 400
    with pytest.raises(websockets.InvalidStatus) as refused:  # the URL names evil.example, the socket goes home
        await websockets.connect(f"ws://evil.example:{port}/v1/realtime", host="127.0.0.1", port=int(port),
                                 additional_headers=A)
    assert refused_status(refused)[0] == 400
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert (await http.get("/healthz", headers={"Host": host})).status_code == 200, host
    async with httpx.AsyncClient(base_url=production.base_url) as prod:
        assert (await prod.get("/healthz", headers={"Host": "voxgate.internal:8000"})).status_code == 200
        assert (await prod.get("/healthz", headers={"Host": "evil.example"})).status_code == 400


# -- lows: calls belong to their key -----------------------------------------------------------------


async def test_another_key_cannot_read_a_call(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    counted_a, counted_b = [(await http.get("/v1/kpis", headers=k)).json()["calls"] for k in (A, B)]
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?model=x", additional_headers=A) as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]

    async def recorded() -> bool:
        return (await http.get(f"/v1/calls/{session_id}", headers=A)).status_code == 200

    assert await eventually(recorded)
    reply = await http.get(f"/v1/calls/{session_id}", headers=B)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "call_not_found"
    listed_a = [c["id"] for c in (await http.get("/v1/calls", headers=A)).json()["data"]]
    listed_b = [c["id"] for c in (await http.get("/v1/calls", headers=B)).json()["data"]]
    assert session_id in listed_a and session_id not in listed_b
    # Nor count it: another key's call volumes and outcomes are not this key's business either.
    assert (await http.get("/v1/kpis", headers=A)).json()["calls"] == counted_a + 1
    assert (await http.get("/v1/kpis", headers=B)).json()["calls"] == counted_b


async def test_another_key_cannot_hang_up_or_join_a_call(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    caller = WebRtcCaller()
    try:
        # Key A's app mints the browser's key: the call is key A's.
        assert (await caller.connect(http, "/v1/realtime/calls", await mint(http, A))).status_code == 201
        await caller.wait_for("session.created", 10)
        call_id = caller.call_id
        reply = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=B)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "call_id_not_found"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{gateway.ws_url}/v1/realtime?call_id={call_id}", additional_headers=B)
        assert refused_status(refused)[0] == 404
        # The console's view of the call: no credentials, another key, then the owner.
        assert (await http.get(f"/console/calls/{call_id}")).status_code == 401
        assert (await http.get(f"/console/calls/{call_id}", headers=B)).status_code == 404
        assert (await http.get(f"/console/calls/{call_id}", headers=A)).json()["status"] == "live"
        assert call_id in {c.id for c in gateway.app.state.webrtc_calls}, "key B's refused hang-up ended the call"
        async with websockets.connect(f"{gateway.ws_url}/v1/realtime?call_id={call_id}", additional_headers=A) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        session_id = gateway.app.state.webrtc_calls.get(call_id).session.id
        assert (await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=A)).status_code == 200
        # The audit log says who read the call and who hung it up (key A is static-0), and not key B.
        db = Path(gateway.embedded.settings.database_url.split("///", 1)[1])
        with sqlite3.connect(db) as sql:
            rows = sql.execute("SELECT actor, action FROM audit_events WHERE subject = ? ORDER BY id",
                               (session_id,)).fetchall()
        assert ("static-0", "tool_calls.read") in rows and rows[-1] == ("static-0", "call.hung_up")
        assert not [actor for actor, _ in rows if actor == "static-1"]
    finally:
        await caller.close()


async def test_console_calls_are_read_with_the_console_session(gateway: LiveServer,
                                                               http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    http.cookies.clear()
    jar = {"Cookie": f"voxgate_console={page.cookies['voxgate_console']}"}
    token = await http.post("/console/token", headers={"Origin": own_origin(gateway), **jar})
    caller = WebRtcCaller()
    try:
        assert (await caller.connect(http, "/v1/realtime/calls", token.json()["value"])).status_code == 201
        await caller.wait_for("session.created", 10)
        path = f"/console/calls/{caller.call_id}"
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers={"Origin": EVIL, **jar})).status_code == 403
        assert (await http.get(path, headers=jar)).json()["status"] == "live"
    finally:
        await caller.close()


# -- lows: metrics, ephemeral keys bound to an agent, purge ---------------------------------------


async def test_metrics_need_a_key_unless_opened(gateway: LiveServer, production: LiveServer,
                                                http: httpx.AsyncClient) -> None:
    reply = await http.get("/metrics")
    assert reply.status_code == 401 and "voxgate_sessions_total" not in reply.text
    assert (await http.get("/metrics", headers={"Authorization": f"Bearer {await mint(http, A)}"})).status_code == 403
    assert "voxgate_sessions_total" in (await http.get("/metrics", headers=A)).text
    async with httpx.AsyncClient() as plain:
        assert "voxgate_sessions_total" in (await plain.get(f"{production.base_url}/metrics")).text


async def test_an_ephemeral_key_opens_only_its_agent(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    url = f"{gateway.ws_url}/v1/realtime?model=x"
    echo_key = await mint(http, A, agent="echo")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url + "&agent=acme", additional_headers={"Authorization": f"Bearer {echo_key}"})
    status, body = refused_status(refused)
    assert status == 403 and body["error"]["code"] == "agent_mismatch"
    default_key = await mint(http, A)  # minted naming no agent: bound to the default one (acme)
    caller = WebRtcCaller()
    try:
        reply = await caller.connect(http, "/v1/realtime/calls?agent=echo", default_key)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "agent_mismatch"
    finally:
        await caller.close()
    bad = await http.post("/v1/realtime/client_secrets?agent=nobody", headers=A, json={})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "agent"
    # The refused key was not spent; with its own agent (named or not) it opens a session.
    echo_auth = {"Authorization": f"Bearer {echo_key}"}
    async with websockets.connect(url + "&agent=echo", additional_headers=echo_auth) as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]

    async def agent_of_call() -> str | None:
        reply = await http.get(f"/v1/calls/{session_id}", headers=A)
        return reply.json()["agent"] if reply.status_code == 200 else None

    assert await eventually(agent_of_call) == "echo"
    beta = await http.post("/v1/realtime/sessions?agent=echo", headers=A, json={})
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Bearer {beta.json()['client_secret']['value']}"}) as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
    assert await eventually(agent_of_call) == "echo"


async def test_expired_keys_are_purged(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", ephemeral_ttl_s=2, key_purge_interval_s=0.1)
    try:
        async with httpx.AsyncClient(base_url=live.base_url) as http:
            reply = await http.post("/v1/realtime/sessions", headers=live.auth, json={})
            assert reply.status_code == 200
        assert ephemeral_keys(live) == 1

        async def purged() -> bool:
            return ephemeral_keys(live) == 0

        assert await eventually(purged, within=20), "the expired key is still stored"
    finally:
        live.embedded.stop()


# -- H1: dev mode beyond loopback ------------------------------------------------------------------


def test_dev_mode_on_a_public_bind_refuses_to_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'vg.db'}"
    for exposed in ({"host": "0.0.0.0"}, {"public_url": "https://voice.example.com"}):
        with pytest.raises(UnsafeSettingsError, match="VOXGATE_DEV_MODE=false"):
            create_app(Settings(database_url=database, **exposed))
        create_app(Settings(database_url=database, dev_mode=False, **exposed))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="voxgate"):
        create_app(Settings(database_url=database, host="0.0.0.0", allow_dev_mode_beyond_loopback=True))
    assert any("DEV MODE IS ON BEYOND LOOPBACK" in r.getMessage() for r in caplog.records)

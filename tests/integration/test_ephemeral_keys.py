"""Ephemeral keys over real HTTP and WebSocket: minting (GA and beta), TTL, single use, revocation, scope, audit."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, start_server

API = {"Authorization": "Bearer sk-test-voxgate"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("keys")
    # A 1 s default TTL makes expiry testable without waiting; explicit TTLs are asked for elsewhere.
    live = start_server(tmp, engine="echo", ephemeral_ttl_s=1, ephemeral_max_ttl_s=600)
    yield live
    live.embedded.stop()


async def mint(http: httpx.AsyncClient, seconds: int = 60, session: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"expires_after": {"anchor": "created_at", "seconds": seconds}}
    if session is not None:
        body["session"] = session
    reply = await http.post("/v1/realtime/client_secrets", headers=API, json=body)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def open_ws(gateway: LiveServer, key: str) -> tuple[Any, dict[str, Any]]:
    ws = await websockets.connect(f"{gateway.ws_url}/v1/realtime?model=gpt-realtime",
                                  additional_headers={"Authorization": f"Bearer {key}"})
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 5))


def ws_status(exc: BaseException) -> int:
    assert isinstance(exc, websockets.InvalidStatus)
    return int(exc.response.status_code)


async def test_ga_client_secret_shape_and_default_ttl(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/realtime/client_secrets", headers=API, json={})
    assert reply.status_code == 200
    body = reply.json()
    assert body["value"].startswith("ek_")
    assert abs(body["expires_at"] - (time.time() + 1)) <= 2  # the configured default TTL
    session = body["session"]
    assert session["type"] == "realtime" and session["object"] == "realtime.session"
    assert session["id"].startswith("sess_") and "Acme" in session["instructions"]
    assert session["audio"]["output"]["voice"] == "joe"


async def test_ttl_is_asked_for_and_bounded(http: httpx.AsyncClient) -> None:
    body = await mint(http, seconds=300)
    assert abs(body["expires_at"] - (time.time() + 300)) <= 2
    for seconds, anchor in ((601, "created_at"), (5, "created_at"), ("60", "created_at"), (60, "now")):
        reply = await http.post("/v1/realtime/client_secrets", headers=API,
                                json={"expires_after": {"anchor": anchor, "seconds": seconds}})
        assert reply.status_code == 400, (seconds, anchor)
        assert reply.json()["error"]["param"].startswith("expires_after.")
    assert "600" in (await http.post("/v1/realtime/client_secrets", headers=API,
                                     json={"expires_after": {"seconds": 601}})).json()["error"]["message"]


async def test_beta_session_shape(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/realtime/sessions", headers=API, json={
        "model": "gpt-4o-realtime-preview", "voice": "joe", "instructions": "Be brief.",
        "input_audio_format": "g711_ulaw", "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["client_secret"]["value"].startswith("ek_")
    assert body["client_secret"]["expires_at"] == body["expires_at"]
    assert body["instructions"] == "Be brief." and body["input_audio_format"] == "g711_ulaw"
    assert body["modalities"] == ["text", "audio"] and body["turn_detection"]["silence_duration_ms"] == 400


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/realtime/client_secrets", {"session": {"type": "realtime", "audio": {"output": {"speed": 9}}}},
     "session.audio.output.speed"),
    ("/v1/realtime/client_secrets", {"session": {"type": "transcription"}}, "session.type"),
    ("/v1/realtime/client_secrets", {"session": {"type": "realtime", "bogus": 1}}, "session.bogus"),
    ("/v1/realtime/client_secrets", {"expires_after": {"seconds": 60}, "extra": True}, "extra"),
    ("/v1/realtime/sessions", {"temperature": 5}, "session.temperature"),
    ("/v1/realtime/sessions", {"input_audio_format": "mp3"}, "session.input_audio_format"),
])
async def test_bad_session_is_a_400_naming_the_field(http: httpx.AsyncClient, path: str, body: Any,
                                                     param: str) -> None:
    reply = await http.post(path, headers=API, json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


async def test_bad_json_and_missing_auth(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/realtime/client_secrets", headers={**API, "Content-Type": "application/json"},
                            content=b"{nope")
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"
    assert (await http.post("/v1/realtime/client_secrets", json={})).status_code == 401
    assert (await http.post("/v1/realtime/sessions", headers={"Authorization": "Bearer ek_forged"},
                            json={})).status_code == 401


async def test_an_ephemeral_key_only_opens_a_session(http: httpx.AsyncClient) -> None:
    key = {"Authorization": f"Bearer {(await mint(http))['value']}"}
    for method, path in (("POST", "/v1/realtime/client_secrets"), ("POST", "/v1/realtime/sessions"),
                         ("GET", "/v1/calls"), ("GET", "/v1/agents"), ("POST", "/v1/realtime/client_secrets/revoke")):
        reply = await http.request(method, path, headers=key, json={})
        assert reply.status_code == 403, path
        assert reply.json()["error"]["code"] == "ephemeral_key_not_allowed"


async def test_bound_config_and_single_use_over_websocket(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    body = await mint(http, session={"type": "realtime", "instructions": "Only talk about toasters.",
                                     "audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    ws, created = await open_ws(gateway, body["value"])
    try:
        session = created["session"]
        assert created["type"] == "session.created"
        assert session["instructions"] == "Only talk about toasters."  # the minted config is the start
        assert session["audio"]["input"]["format"]["type"] == "audio/pcmu"
    finally:
        await ws.close()
    with pytest.raises(websockets.InvalidStatus) as reused:
        await open_ws(gateway, body["value"])
    assert ws_status(reused.value) == 401


async def test_concurrent_opens_with_one_key_admit_one(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    key = (await mint(http))["value"]
    results = await asyncio.gather(*(open_ws(gateway, key) for _ in range(4)), return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(opened) == 1 and all(ws_status(r) == 401 for r in refused)
    for ws, _ in opened:
        await ws.close()


async def test_expired_and_forged_keys_are_refused(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    beta = await http.post("/v1/realtime/sessions", headers=API, json={})  # the 1 s default TTL
    key = beta.json()["client_secret"]["value"]
    await asyncio.sleep(1.3)
    for forged in (key, "ek_" + "A" * 43, key[:-1] + ("B" if key[-1] != "B" else "C")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_ws(gateway, forged)
        assert ws_status(refused.value) == 401


async def test_revocation(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    key = (await mint(http))["value"]
    reply = await http.post("/v1/realtime/client_secrets/revoke", headers=API, json={"value": key})
    assert reply.status_code == 200 and reply.json() == {"revoked": True}
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_ws(gateway, key)
    assert ws_status(refused.value) == 401
    again = await http.post("/v1/realtime/client_secrets/revoke", headers=API, json={"value": key})
    assert again.status_code == 404
    assert (await http.post("/v1/realtime/client_secrets/revoke", headers=API,
                            json={"value": "sk-not-ephemeral"})).status_code == 400


async def test_audit_trail_names_keys_never_secrets(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    secrets = []
    for _ in range(2):
        secrets.append((await mint(http))["value"])
    ws, _ = await open_ws(gateway, secrets[0])
    await ws.close()
    await http.post("/v1/realtime/client_secrets/revoke", headers=API, json={"value": secrets[1]})
    rows = await _audit_rows(Path(gateway.gateway.settings.database_url.split("///", 1)[1]))
    actions = {row[1] for row in rows}
    assert {"ephemeral_key.issued", "ephemeral_key.used", "ephemeral_key.revoked"} <= actions
    dump = json.dumps(rows)
    for secret in secrets:
        assert secret not in dump and secret[3:20] not in dump
    used = [row for row in rows if row[1] == "ephemeral_key.used"]
    assert all(row[0].startswith("key_") and json.loads(row[3])["transport"] for row in used)


async def _audit_rows(db: Path) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + 5
    while True:  # audit writes land asynchronously
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT actor, action, subject, detail FROM audit_events").fetchall()
        if any(r[1] == "ephemeral_key.revoked" for r in rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)

"""Roles on every route and in tool execution (issue 15): a table-driven test over the app's route list.

Every route must declare its roles in control/route_roles.py (or be declared public, saying who checks
the caller instead): a route added without a line there fails `test_every_route_declares_its_roles`.
Each declared route is then asked without a key (401), with a key holding none of its roles (403 problem,
audited) and with one that holds a role (neither). Ephemeral keys carry a subset of their minter's roles,
and a session's gateway tools run with the roles of the key that opened it: a tool that needs a role the
call lacks is an error the model can say, audited; a tool tagged PHI is audited when it runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml

from tests.conftest import LiveServer, start_server
from voxgate.control.route_roles import ROUTE_ROLES, Needs, Public, access_of, route_keys
from voxgate.roles import ALL_ROLES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The demo agent, its order lookup needing the operator role and tagged PHI; no rate limits (every
    route is asked several times)."""
    tmp = tmp_path_factory.mktemp("roles")
    shutil.copytree(EXAMPLES / "tools", tmp / "tools")
    (tmp / "agents").mkdir()
    acme = yaml.safe_load((EXAMPLES / "agents" / "acme.yaml").read_text())
    for tool in acme["tools"]:
        if tool["name"] == "lookup_order":
            tool.update(roles=["operator"], data=["phi"])
    (tmp / "agents" / "acme.yaml").write_text(yaml.safe_dump(acme))
    live = start_server(tmp, engine="local", agents_dir=str(tmp / "agents"), rate_limit_per_key=0,
                        rate_limit_per_source=0)
    yield live
    live.embedded.stop()


def key_with(live: LiveServer, *roles: str) -> str:
    """A stored API key holding `roles`."""
    return str(live.embedded.run(live.gateway.keys.create("test", kind="api", roles=list(roles)))[1])


def audit_rows(live: LiveServer, action: str) -> list[dict[str, Any]]:
    db = Path(live.embedded.settings.database_url.split("///", 1)[1])
    with sqlite3.connect(db) as sql:
        rows = sql.execute("SELECT actor, subject, detail FROM audit_events WHERE action = ? ORDER BY id",
                           (action,)).fetchall()
    return [{"actor": a, "subject": s, "detail": json.loads(d) if d else None} for a, s, d in rows]


async def tool_calls(live: LiveServer, session_id: str) -> list[tuple[str, str]]:
    """The tool calls of a call's record once it has ended (read off the database: another key's call is not
    the test key's to read)."""
    db = Path(live.embedded.settings.database_url.split("///", 1)[1])
    for _ in range(200):
        with sqlite3.connect(db) as sql:
            if sql.execute("SELECT 1 FROM calls WHERE id = ? AND ended_at IS NOT NULL", (session_id,)).fetchone():
                return sql.execute("SELECT name, status FROM tool_calls WHERE call_id = ? ORDER BY id",
                                   (session_id,)).fetchall()
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {session_id} was never ended")


def concrete(path: str) -> str:
    return path.replace("{call_id}", "sess_nobody")


def test_every_route_declares_its_roles(gateway: LiveServer) -> None:
    served = [key for route in gateway.app.routes for key in route_keys(route)]
    undeclared = [key for key in served if key not in ROUTE_ROLES]
    assert not undeclared, f"declare these routes' roles in control/route_roles.py (ROUTE_ROLES): {undeclared}"
    stale = sorted(set(ROUTE_ROLES) - set(served))
    assert not stale, f"ROUTE_ROLES names routes the app does not serve: {stale}"
    for key, entry in ROUTE_ROLES.items():
        if isinstance(entry, Public):
            assert entry.why, key  # a public route says who checks its callers instead
        else:
            access = access_of(key)
            assert isinstance(access, Needs) and access.roles and access.roles <= ALL_ROLES, key


GUARDED = [key for key in ROUTE_ROLES if isinstance(access_of(key), Needs)]


@pytest.mark.parametrize("route", GUARDED)
async def test_each_route_enforces_its_roles(gateway: LiveServer, route: str) -> None:
    access = access_of(route)
    assert isinstance(access, Needs)
    method, path = route.split(" ", 1)
    lacking = sorted(ALL_ROLES - access.roles)
    holding = key_with(gateway, sorted(access.roles)[0])
    without = key_with(gateway, *lacking) if lacking else None
    if method == "WS":
        url = f"{gateway.ws_url}{concrete(path)}"
        attempts: list[tuple[str | None, int | None]] = [(None, 401), ("sk-not-a-key", 401)]
        if without is not None:
            attempts.append((without, 403))
        for key, status in attempts:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == status, key
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {holding}"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
    else:
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            async def ask(key: str | None) -> httpx.Response:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                if path.startswith("/console"):
                    headers["Origin"] = gateway.base_url  # the console's own page, so only the key decides
                return await http.request(method, concrete(path), headers=headers, content=b"")

            if not (access.open_when and getattr(gateway.embedded.settings, access.open_when)):
                assert (await ask(None)).status_code == 401 or path.startswith("/console")
            assert (await ask("sk-not-a-key")).status_code == 401
            if without is not None:
                refused = await ask(without)
                assert refused.status_code == 403, refused.text
                assert refused.json()["error"]["code"] == "role_forbidden"
                assert route in refused.json()["error"]["message"]
            allowed = await ask(holding)
            assert allowed.status_code not in (401, 403), allowed.text
    if without is not None:
        denied = [row for row in audit_rows(gateway, "access.denied") if row["subject"] == route]
        assert denied and denied[-1]["detail"] == {"roles": lacking, "needs": sorted(access.roles)}


async def mint(live: LiveServer, key: str, roles: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        return await http.post("/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"},
                               params={"roles": roles} if roles else {}, json={})


async def ask_for_order(live: LiveServer, key: str) -> tuple[str, str]:
    """A text turn that makes the agent call lookup_order; returns (session id, the agent's reply)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(f"{live.ws_url}/v1/realtime", additional_headers=headers) as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
        await ws.send(json.dumps({"type": "session.update",
                                  "session": {"type": "realtime", "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the status of order 4567?"}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        reply = ""
        while True:
            event = json.loads(await ws.recv())
            assert event["type"] != "error", event
            if event["type"] == "response.output_text.delta":
                reply += event["delta"]
            if event["type"] == "response.done":
                return session_id, reply


async def test_ephemeral_keys_carry_a_subset_of_their_minters_roles(gateway: LiveServer) -> None:
    app = key_with(gateway, "app")
    beyond = await mint(gateway, app, "operator")
    assert beyond.status_code == 400 and beyond.json()["error"]["param"] == "roles"
    assert (await mint(gateway, app, "sorcerer")).status_code == 400
    operator = key_with(gateway, "operator", "app")
    narrowed = await mint(gateway, operator, "app")
    assert narrowed.status_code == 200
    issued = audit_rows(gateway, "ephemeral_key.issued")[-1]
    assert issued["detail"]["roles"] == ["app"]
    full = await mint(gateway, operator)
    assert audit_rows(gateway, "ephemeral_key.issued")[-1]["detail"]["roles"] == ["app", "operator"]
    # The narrowed key's call may not run the operator's tool; the full one's may.
    _, reply = await ask_for_order(gateway, narrowed.json()["value"])
    assert "not allowed" in reply and "shipped" not in reply.lower(), reply
    _, reply = await ask_for_order(gateway, full.json()["value"])
    assert "shipped" in reply.lower(), reply


async def test_a_tool_needing_a_role_the_call_lacks_is_refused_in_words_and_audited(gateway: LiveServer) -> None:
    app = key_with(gateway, "app")
    session_id, reply = await ask_for_order(gateway, app)
    assert "not allowed" in reply and "operator" in reply and "shipped" not in reply.lower(), reply
    assert await tool_calls(gateway, session_id) == [("lookup_order", "forbidden")]
    denied = [row for row in audit_rows(gateway, "access.denied") if row["subject"] == session_id]
    assert [row["detail"] for row in denied] == [{"tool": "lookup_order", "roles": ["app"]}]
    assert denied[0]["actor"] != "gateway"  # the key that opened the call

    operator = key_with(gateway, "operator")
    session_id, reply = await ask_for_order(gateway, operator)
    assert "shipped" in reply.lower(), reply
    assert await tool_calls(gateway, session_id) == [("lookup_order", "completed")]
    # The key's use and its read of the transcript are audited under the key's id.
    [opened] = [row for row in audit_rows(gateway, "session.opened") if row["subject"] == session_id]
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        record = await http.get(f"/v1/calls/{session_id}", headers={"Authorization": f"Bearer {operator}"})
    assert record.status_code == 200 and record.json()["tool_calls"][0]["name"] == "lookup_order"
    reads = [row["actor"] for row in audit_rows(gateway, "transcript.read") if row["subject"] == session_id]
    assert reads == [opened["actor"]] and opened["actor"].startswith("key_")
    called = [row for row in audit_rows(gateway, "tool.called") if row["subject"] == session_id]
    assert called and called[0]["detail"] == {"tool": "lookup_order", "data": ["phi"], "status": "ok"}
    assert "4567" not in json.dumps(called)  # who and which call, never the arguments

"""The README's contract: `voxgate serve` on a fresh database starts, prints its URLs and a one-time API
key that works, and the other commands do what they say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

from voxgate.embedded import free_port

VOXGATE = [sys.executable, "-m", "voxgate.cli"]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOXGATE, *args], env=env, capture_output=True, text=True, timeout=120, check=True)


def test_serve_prints_a_working_key_and_commands_work(tmp_path: Path) -> None:
    port, sip_port = free_port(), free_port()
    env = {**os.environ, "VOXGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vg.db'}",
           "ACME_DB": str(tmp_path / "acme.db"), "VOXGATE_API_KEYS": ""}
    server = subprocess.Popen([*VOXGATE, "serve", "--port", str(port), "--sip-port", str(sip_port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        key = None
        deadline = time.monotonic() + 120
        assert server.stdout is not None
        while key is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            lines.append(line)
            match = re.search(r"API key .*: (vg_\S+)", line)
            key = match.group(1) if match else None
        assert key, "".join(lines)
        assert any(f"ws://127.0.0.1:{port}/v1/realtime" in line for line in lines)
        assert any(f"sip:<agent>@127.0.0.1:{sip_port}" in line and "loopback only" in line for line in lines)
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/agents", headers={"Authorization": f"Bearer {key}"}
                         ).json()["data"][0]["name"] == "acme"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/agents").status_code == 401

        async def handshake() -> str:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime?model=x",
                                          additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                return str(json.loads(await ws.recv())["type"])

        import asyncio

        assert asyncio.run(handshake()) == "session.created"
    finally:
        server.terminate()
        server.wait(timeout=30)

    # Keys: only hashes are stored; a created key is listed by prefix and can be revoked.
    created = run_cli("keys", "create", "--name", "ci", env=env).stdout.strip()
    assert created.startswith("vg_")
    listed = [json.loads(line) for line in run_cli("keys", "list", env=env).stdout.splitlines()]
    assert created not in json.dumps(listed)
    ci_key = next(k for k in listed if k["name"] == "ci")
    assert ci_key["roles"] == ["app"]  # a key created without roles is an app key
    assert next(k for k in listed if k["name"] == "serve")["roles"] == ["admin"]
    run_cli("keys", "create", "--name", "audit", "--role", "read-only", "--role", "operator", env=env)
    listed = [json.loads(line) for line in run_cli("keys", "list", env=env).stdout.splitlines()]
    assert next(k for k in listed if k["name"] == "audit")["roles"] == ["operator", "read-only"]
    refused = subprocess.run([*VOXGATE, "keys", "create", "--role", "root"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "unknown role(s) root" in refused.stderr
    assert run_cli("keys", "revoke", ci_key["id"], env=env).returncode == 0
    # Each key's issuance is in the audit log, whose chain holds.
    exported = [json.loads(line) for line in run_cli("audit", "export", env=env).stdout.splitlines()]
    assert [row["detail"]["roles"] for row in exported if row["action"] == "key.created"][-2:] == [
        ["app"], ["operator", "read-only"]]
    assert "audit log holds" in run_cli("audit", "verify", env=env).stdout
    assert "acme (default)" in run_cli("agents", "list", env=env).stdout
    shown = json.loads(run_cli("config", "show", env={**env, "VOXGATE_API_KEYS": "secret-key",
                                                      "VOXGATE_SIP_DIGEST_PASSWORD": "sip-secret"}).stdout)
    assert shown["api_keys"] == "****" and shown["sip_digest_password"] == "****"
    assert shown["sip_port"] == 5060 and shown["sip_allowed_sources"] == []
    assert shown["zero_retention"] is False
    assert run_cli("db", "upgrade", env=env).returncode == 0


def test_serve_refuses_dev_mode_behind_a_public_url(tmp_path: Path) -> None:
    # The README's phone set-up as it was: a public URL, dev mode left on. (The listen address stays
    # loopback, so even a broken check would open nothing beyond this machine.)
    env = {**os.environ, "VOXGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vg.db'}",
           "VOXGATE_PUBLIC_URL": "https://voice.example.com", "VOXGATE_API_KEYS": ""}
    refused = subprocess.run([*VOXGATE, "serve", "--port", str(free_port())], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refusing to start" in refused.stderr and "VOXGATE_DEV_MODE=false" in refused.stderr
    assert "API key" not in refused.stdout, "a key was minted for a gateway that did not start"


def test_report_cost_of_a_scripted_month(tmp_path: Path) -> None:
    """`voxgate report cost` over a month of 10,000 call minutes: totals, per agent and transport, and
    break-even against a human agent at $0.40 a minute ($4,000, the seed's example)."""
    import asyncio

    import sqlalchemy as sa

    from tests.scripted_calls import scripted_month
    from voxgate.config import Prices
    from voxgate.store.database import Database
    from voxgate.store.models import Call

    url = f"sqlite+aiosqlite:///{tmp_path / 'vg.db'}"
    rows = scripted_month(Prices())

    async def write() -> None:
        db = Database(url)
        await db.connect()
        await db.upgrade()
        async with db.session() as session, session.begin():
            await session.execute(sa.insert(Call), rows)
        await db.aclose()

    asyncio.run(write())
    env = {**os.environ, "VOXGATE_DATABASE_URL": url}
    window = ("--since", "2026-02-01", "--until", "2026-03-01")
    report = json.loads(run_cli("report", "cost", *window, "--json", env=env).stdout)
    total = report["total"]
    assert (total["calls"], total["minutes"], total["human_cost_usd"]) == (1000, 10_000.0, 4000.0)
    assert total["cost_usd"] == round(sum(row["cost_usd"] for row in rows), 4)
    assert report["by_agent"]["concierge"]["calls"] == 100 and report["by_transport"]["sip"]["minutes"] == 6000.0
    assert report["saving_per_minute_usd"] == round(0.40 - total["cost_per_minute_usd"], 4) > 0
    text = run_cli("report", "cost", *window, env=env).stdout
    assert "break-even: from the first minute" in text and "$4,000.00" in text
    print(text)  # the README shows it
    assert json.loads(run_cli("report", "cost", "--since", "2026-02-10", "--until", "2026-02-11", "--json",
                              env=env).stdout)["total"]["calls"] == 36  # one call every 40 minutes
    bad = subprocess.run([*VOXGATE, "report", "cost", "--since", "last month"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "neither an ISO date" in bad.stderr

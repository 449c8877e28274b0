"""The audit log is a hash chain: appends under concurrency chain in order, an edited, removed or inserted
row is named by `voxgate audit verify` (exit 1), `export` writes JSON lines, and rows written before the
chain existed are chained by the migration."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command

from voxgate.store.audit_log import GENESIS, export, verify
from voxgate.store.calls import CallStore
from voxgate.store.database import Database, alembic_config

VOXGATE = [sys.executable, "-m", "voxgate.cli"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "voxgate.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{db_path}")
    await database.connect()
    await database.upgrade()
    yield database
    await database.aclose()


def cli(db_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOXGATE_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}"}
    return subprocess.run([*VOXGATE, "audit", *args], env=env, capture_output=True, text=True, timeout=120)


async def fill(db: Database, count: int) -> None:
    """`count` rows appended by concurrent writers, as live calls and routes append them."""
    store = CallStore(db)
    results = await asyncio.gather(*(store.audit(f"key_{i % 3}", "call.read", f"sess_{i}",
                                                 {"n": i, "roles": ("admin",), "api_key": "vg_secret"})
                                     for i in range(count)))
    assert all(results)
    await store.drain()


async def test_concurrent_appends_form_one_chain(db: Database, db_path: Path) -> None:
    await fill(db, 60)
    verdict = await verify(db)
    assert verdict.ok and verdict.rows == 60
    rows = [row async for row in export(db)]
    assert rows[0]["prev_hash"] == GENESIS
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(rows))
    assert verdict.head_hash == rows[-1]["hash"] and verdict.head_id == rows[-1]["id"]
    assert {row["detail"]["api_key"] for row in rows} == {"****"}  # a secret never lands, chained or not
    done = cli(db_path, "verify")
    assert done.returncode == 0, done.stderr
    assert f"60 row(s); head row {rows[-1]['id']} hash {rows[-1]['hash']}" in done.stdout


async def append_from_two_gateways(url: str, db: Database) -> None:
    """A second gateway's store on the same database and `db`'s append at once, round after round, each row in
    a transaction of its own: every row lands and the chain holds (the write lock is taken before the head
    is read; without it, both read the same head and the unique prev_hash refuses one)."""
    other = Database(url)
    await other.connect()
    try:
        stores = [CallStore(db), CallStore(other)]
        for i in range(40):
            appended = await asyncio.gather(*(store.audit(f"key_{g}", "transcript.read", f"sess_{i}", {"n": i})
                                              for g, store in enumerate(stores)))
            assert all(appended), f"round {i}: a row was lost ({stores[0].failures + stores[1].failures} so far)"
        verdict = await verify(db)
        assert verdict.ok and verdict.rows == 80, verdict
    finally:
        await other.aclose()


async def test_two_gateways_sharing_a_sqlite_file_keep_one_chain(db: Database, db_path: Path) -> None:
    await append_from_two_gateways(f"sqlite+aiosqlite:///{db_path}", db)


@pytest.mark.parametrize("tamper", ["edit", "remove", "insert", "rehash"])
async def test_a_tampered_row_is_named(db: Database, db_path: Path, tamper: str) -> None:
    await fill(db, 10)
    rows = [row async for row in export(db)]
    target = rows[4]
    with sqlite3.connect(db_path) as raw:
        if tamper == "edit":  # someone hides who read a transcript
            raw.execute("UPDATE audit_events SET actor = 'key_x' WHERE id = ?", (target["id"],))
            bad = target["id"]
        elif tamper == "remove":
            raw.execute("DELETE FROM audit_events WHERE id = ?", (target["id"],))
            bad = rows[5]["id"]
        elif tamper == "insert":  # a row slipped in after the fact, claiming a place in the chain
            raw.execute("INSERT INTO audit_events (id, at, actor, action, subject, detail, prev_hash, hash) "
                        "VALUES (?, ?, 'key_x', 'call.read', 's', NULL, ?, ?)",
                        (rows[-1]["id"] + 1, "2026-01-01 00:00:00.000000", "f" * 64, "e" * 64))
            bad = rows[-1]["id"] + 1
        else:  # an edit that recomputes the row's own hash still breaks the next row's link
            raw.execute("UPDATE audit_events SET actor = 'key_x', hash = ? WHERE id = ?", ("a" * 64, target["id"]))
            bad = target["id"]
    verdict = await verify(db)
    assert verdict.bad_row == bad
    done = cli(db_path, "verify")
    assert done.returncode == 1
    assert f"audit log broken at row {bad}:" in done.stderr


async def test_export_writes_json_lines(db: Database, db_path: Path, tmp_path: Path) -> None:
    await fill(db, 5)
    out = tmp_path / "audit.jsonl"
    done = cli(db_path, "export", "--output", str(out))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["detail"]["n"] for line in lines] == list(range(5))
    assert lines == [row async for row in export(db)]
    assert cli(db_path, "export").stdout.splitlines() == out.read_text().splitlines()


async def test_rows_from_before_the_chain_are_chained_by_the_migration(db_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{db_path}")
    await database.connect()
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
        at = datetime(2025, 6, 1, 9, 30, 15, 123456, tzinfo=UTC).replace(tzinfo=None)
        with sqlite3.connect(db_path) as raw:
            for i in range(3):
                raw.execute("INSERT INTO audit_events (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                            (at.isoformat(sep=" "), "static-0", "ephemeral_key.issued", f"key_{i}",
                             json.dumps({"ttl_s": 60 + i})))
            raw.execute("INSERT INTO api_keys (id, name, prefix, hash, kind, scopes, created_at) "
                        "VALUES ('key_old', 'old', 'vg_x', 'h', 'api', '[]', ?)", (at.isoformat(sep=" "),))
        await database.upgrade()
        verdict = await verify(database)
        assert verdict.ok and verdict.rows == 3
        await fill(database, 2)  # new rows follow the migrated ones
        assert (await verify(database)).rows == 5
        with sqlite3.connect(db_path) as raw:
            assert raw.execute("SELECT roles FROM api_keys WHERE id = 'key_old'").fetchone() == ('["admin"]',)
    finally:
        await database.aclose()


def test_start_up_records_a_changed_configuration_or_agent(tmp_path: Path) -> None:
    from voxgate.embedded import EmbeddedGateway, free_port

    agents = tmp_path / "agents"
    agents.mkdir()
    agent = {"name": "desk", "instructions": "Answer briefly.", "engine": "echo"}
    (agents / "desk.yaml").write_text(json.dumps(agent))
    settings = {"engine": "echo", "agents_dir": agents, "default_agent": "desk", "node_id": "node-a",
                "port": free_port(), "api_keys": "sk-a"}

    def run_once(**changes: object) -> list[tuple[str, str]]:
        with EmbeddedGateway(tmp_path, **{**settings, **changes}):
            pass
        with sqlite3.connect(tmp_path / "voxgate.db") as raw:
            return raw.execute("SELECT subject, detail FROM audit_events WHERE action = 'config.changed' "
                               "ORDER BY id").fetchall()

    first = run_once()
    assert [subject for subject, _ in first] == ["node-a"]
    assert run_once() == first  # the same configuration again: nothing new
    agent["instructions"] = "Answer at length."
    (agents / "desk.yaml").write_text(json.dumps(agent))
    changed = run_once()
    assert len(changed) == 2
    before, after = (json.loads(detail) for _, detail in changed)
    assert before["settings_sha256"] == after["settings_sha256"]
    assert before["agents"]["desk"] != after["agents"]["desk"]
    assert len(run_once(api_keys="sk-a,sk-b")) == 3  # a key added shows, though no key is in the row
    with sqlite3.connect(tmp_path / "voxgate.db") as raw:
        assert "sk-" not in json.dumps(raw.execute("SELECT detail FROM audit_events").fetchall())

"""The storage layer against a real PostgreSQL server, started here from Debian's `postgresql` package.

The cluster lives in a temporary directory for this module only: initdb, pg_ctl start on a free
loopback port (its unix socket in the same directory), one fresh database per test, pg_ctl stop.
As root the server runs as the `postgres` OS user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.integration.test_audit_log import append_from_two_gateways
from tests.postgres_server import fresh_database, postgres_cluster
from tests.scripted_calls import STAGES, StepClock, write_scripted_calls
from tests.scripted_calls import T0 as SCRIPT_T0
from voxgate.store.calls import CallStore
from voxgate.store.database import Database, alembic_config
from voxgate.store.keys import KeyStore
from voxgate.store.models import Base

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[tuple[str, int]]:
    with postgres_cluster() as server:
        yield server


@pytest.fixture
async def pg_url(postgres_server: tuple[str, int]) -> AsyncIterator[str]:
    async with fresh_database(*postgres_server) as url:
        yield url


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url)
    await database.connect()
    await database.upgrade()
    yield database
    await database.aclose()


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


async def test_concurrent_upgrades_and_schema_matches_models(pg_url: str) -> None:
    starts = [Database(pg_url) for _ in range(3)]
    for database in starts:
        await database.connect()
    # three gateways starting at once: the advisory lock lets one migrate and the others find head
    await asyncio.gather(*(database.upgrade() for database in starts))
    await starts[0].upgrade()
    async with starts[0].engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
        diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    for database in starts:
        await database.aclose()
    assert version == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
    assert diffs == [], f"models and migrations disagree on PostgreSQL: {diffs}"


async def test_round_trip(db: Database) -> None:
    clock = Clock()
    calls = CallStore(db, now=clock)
    assert await calls.start_call(
        "sess_pg", agent="acme", engine="openai", transport="realtime_ws", dialect="beta", metadata={"a": [1]}
    )
    await calls.upsert_item("sess_pg", "item_u", role="user", type="message", text="where is my order")
    await calls.upsert_item("sess_pg", "item_a", role="assistant", type="message", status="in_progress")
    await calls.upsert_item(
        "sess_pg", "item_a", role="assistant", type="message", text="It ships", audio_ms=900.7
    )
    await calls.upsert_item("sess_pg", "item_a", role="assistant", type="message", truncated_at_ms=400)
    await calls.record_tool_call(
        "sess_pg",
        tool_call_id="call_1",
        name="lookup_order",
        side="server",
        arguments={"id": 7},
        status="completed",
        output="{}",
        duration_ms=3.0,
    )
    await calls.audit("api", "call.transferred", "sess_pg", {"to": "+1555", "token": "x"})
    clock.at = T0 + timedelta(seconds=30)
    assert await calls.end_call(
        "sess_pg",
        status="transferred",
        outcome="escalated",
        first_response_ms=420.0,
        turns=2,
        interruptions=1,
        usage={"total_tokens": 10},
        cost_usd=0.5,
    )
    assert await calls.upsert_item("sess_none", "item_x", role="user", type="message") is False  # FK
    assert calls.failures == 1

    call = await calls.get_call("sess_pg")
    assert call is not None
    # the server runs in Asia/Tokyo; timestamps still come back as UTC
    assert call["started_at"] == T0.isoformat() and call["duration_s"] == pytest.approx(30.0)
    assert (call["status"], call["outcome"], call["dialect"]) == ("transferred", "escalated", "beta")
    assert call["metadata"] == {"a": [1]} and call["usage"] == {"total_tokens": 10}
    assert [(i["seq"], i["item_id"], i["text"]) for i in call["items"]] == [
        (1, "item_u", "where is my order"),
        (2, "item_a", "It ships"),
    ]
    assert (call["items"][1]["audio_ms"], call["items"][1]["truncated_at_ms"]) == (901, 400)
    assert call["items"][1]["status"] == "in_progress"
    assert [t["arguments"] for t in call["tool_calls"]] == [{"id": 7}]
    assert [c["id"] for c in await calls.list_calls()] == ["sess_pg"]
    (event,) = await calls.list_audit()
    assert event["detail"] == {"to": "+1555", "token": "****"}

    k = await calls.kpis(since=T0)
    assert (k["calls"], k["escalation_rate"], k["tool_success_rate"]) == (1, 1.0, 1.0)
    assert k["first_response_ms"] == {"count": 1, "p50": 420.0, "p95": 420.0, "p99": 420.0}
    assert (await calls.kpis(since=T0 + timedelta(seconds=1)))["calls"] == 0


async def test_keys(db: Database) -> None:
    clock = Clock()
    keys = KeyStore(db, now=clock)
    api_id, api_secret = await keys.create("ci", scopes=["calls:read"])
    _, ek_secret = await keys.create("browser", kind="ephemeral", ttl_s=60, session_config={"model": "m"})
    record = await keys.verify(ek_secret)
    assert record is not None and record.session_config == {"model": "m"}
    assert record.expires_at == T0 + timedelta(seconds=60)
    await keys.create("browser", kind="ephemeral", ttl_s=1)
    clock.at = T0 + timedelta(seconds=60)
    assert await keys.verify(ek_secret) is None  # expired: deleted on use
    assert await keys.purge_expired() == 1  # the one nobody used: the sweep's
    verified = await keys.verify(api_secret)
    assert verified is not None and verified.scopes == ("calls:read",)
    assert await keys.revoke(api_id) is True
    assert await keys.verify(api_secret) is None
    (listed,) = await keys.list()
    assert listed["revoked_at"] == (T0 + timedelta(seconds=60)).isoformat()


async def test_the_end_of_a_call_can_replace_its_metadata(db: Database) -> None:
    calls = CallStore(db, now=Clock())
    await calls.start_call("sess_pg_m", agent="echo", engine="echo", transport="sip", metadata={"model": "m"})
    media = {"codec": "PCMU", "round_trip_ms": 1.5, "peer_report": None}
    assert await calls.end_call("sess_pg_m", status="completed", metadata={"model": "m", "media": media})
    call = await calls.get_call("sess_pg_m")
    assert call is not None and call["metadata"] == {"model": "m", "media": media}


async def test_two_gateways_append_to_one_audit_chain(db: Database, pg_url: str) -> None:
    """Two gateways sharing the database append at once: the advisory lock keeps one chain, no row lost."""
    await append_from_two_gateways(pg_url, db)
async def test_stats_and_cost_of_the_scripted_calls(db: Database) -> None:
    """The KPIs, latency budget and cost queries on PostgreSQL give what SQLite gives (tests/scripted_calls.py)."""
    clock = StepClock()
    calls = CallStore(db, now=clock)
    await write_scripted_calls(calls, clock.advance)
    k = await calls.kpis(interruption_stop_ms=500.0)
    assert (k["calls"], k["drop_rate"], k["buffer_overflows"], k["turns"]) == (10, 0.1, 1, 40)
    assert (k["barge_ins"], k["interruption_success_rate"], k["tool_success_rate"]) == (2, 0.5, 0.8)
    assert k["average_handle_time_s"] == pytest.approx(60.0) and k["fallthrough_rate"] == pytest.approx(0.1)
    assert k["latency_budget_ms"]["transcript"]["p95"] == STAGES["transcript"]
    page = await calls.list_calls(limit=3, transport="sip", since=SCRIPT_T0)
    assert [c["id"] for c in page] == ["sess_scripted_2", "sess_scripted_1", "sess_scripted_0"]
    assert len(await calls.finished_calls(SCRIPT_T0, until=SCRIPT_T0 + timedelta(minutes=3))) == 3

"""The storage layer against a real SQLite file: migrations, call records, KPIs and keys."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.scripted_calls import STAGES as SCRIPTED_STAGES
from tests.scripted_calls import T0 as SCRIPT_T0
from tests.scripted_calls import StepClock as Clock
from tests.scripted_calls import write_scripted_calls
from voxgate.session.recorder import CallRecorder, CallSummary
from voxgate.store.calls import MAX_TOOL_OUTPUT_CHARS, CallStore, percentile
from voxgate.store.database import Database, DatabaseClosedError, alembic_config, async_url
from voxgate.store.keys import KeyStore
from voxgate.store.models import Base

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "voxgate.db"


@pytest.fixture
async def db(db_path: Path):
    database = Database(f"sqlite+aiosqlite:///{db_path}")
    await database.connect()
    await database.upgrade()
    yield database
    await database.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def calls(db: Database, clock: Clock) -> CallStore:
    return CallStore(db, now=clock)


@pytest.fixture
def keys(db: Database, clock: Clock) -> KeyStore:
    return KeyStore(db, now=clock)


# -- database and migrations ------------------------------------------------------------------


async def test_upgrade_is_idempotent_and_matches_models(db: Database, db_path: Path) -> None:
    await db.upgrade()  # second run on the same database: nothing to do, no error
    again = Database(f"sqlite+aiosqlite:///{db_path}")
    await again.connect()
    await again.upgrade()  # and from a fresh process-like start
    async with again.engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
        diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    await again.aclose()
    assert version == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
    assert diffs == [], f"models and migrations disagree: {diffs}"


async def test_sqlite_file_uses_wal_and_foreign_keys(db: Database, db_path: Path) -> None:
    assert await asyncio.to_thread(db_path.exists)  # parent directories were created
    async with db.engine.connect() as conn:
        assert (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar() == 1
    with sqlite3.connect(db_path) as raw:  # WAL is a property of the file, seen by any reader
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_urls_get_async_drivers_and_bad_ones_are_refused() -> None:
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgres://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="unsupported database"):
        Database("mysql://u@h/db")
    with pytest.raises(ValueError, match="unsupported driver"):
        Database("postgresql+psycopg2://u@h/db")
    with pytest.raises(ValueError, match="not a database URL"):
        Database("not a url")


async def test_session_before_connect_raises_typed_error(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(DatabaseClosedError):
        database.session()
    with pytest.raises(DatabaseClosedError):
        await database.upgrade()


# -- call records ----------------------------------------------------------------------------


async def test_call_round_trip(calls: CallStore, clock: Clock) -> None:
    assert await calls.start_call(
        "sess_1",
        agent="acme",
        engine="local",
        transport="twilio",
        caller="+15551230000",
        metadata={"stream_sid": "MZ1"},
    )
    clock.advance(1)
    assert await calls.upsert_item(
        "sess_1", "item_u1", role="user", type="message", text="hi", audio_ms=820.4
    )
    clock.advance(1)
    assert await calls.upsert_item(
        "sess_1", "item_a1", role="assistant", type="message", status="in_progress"
    )
    assert await calls.upsert_item("sess_1", "item_f1", role=None, type="function_call", text='{"id": 7}')
    assert await calls.record_tool_call(
        "sess_1",
        tool_call_id="call_1",
        name="lookup_order",
        side="server",
        arguments={"id": 7, "card": "****"},
        status="completed",
        output='{"state": "shipped"}',
        duration_ms=12.5,
    )
    clock.advance(8.5)
    assert await calls.end_call(
        "sess_1",
        status="completed",
        outcome="task_completed",
        end_reason="caller hung up",
        first_response_ms=640.0,
        turns=3,
        interruptions=1,
        usage={"input_tokens": 120, "output_tokens": 80},
        cost_usd=0.0123,
    )

    call = await calls.get_call("sess_1")
    assert call is not None
    assert call["status"] == "completed" and call["outcome"] == "task_completed"
    assert call["transport"] == "twilio" and call["dialect"] is None and call["caller"] == "+15551230000"
    assert call["metadata"] == {"stream_sid": "MZ1"}
    assert call["usage"] == {"input_tokens": 120, "output_tokens": 80}
    assert call["started_at"] == T0.isoformat()
    assert call["ended_at"] == (T0 + timedelta(seconds=10.5)).isoformat()
    assert call["duration_s"] == pytest.approx(10.5)
    assert (call["turns"], call["interruptions"], call["first_response_ms"]) == (3, 1, 640.0)
    assert [(i["seq"], i["item_id"], i["role"]) for i in call["items"]] == [
        (1, "item_u1", "user"),
        (2, "item_a1", "assistant"),
        (3, "item_f1", None),
    ]
    assert call["items"][0]["audio_ms"] == 820
    assert call["tool_calls"] == [
        {
            "tool_call_id": "call_1",
            "name": "lookup_order",
            "side": "server",
            "arguments": {"id": 7, "card": "****"},
            "status": "completed",
            "output": '{"state": "shipped"}',
            "duration_ms": 12.5,
            "created_at": (T0 + timedelta(seconds=2)).isoformat(),
        }
    ]
    assert await calls.get_call("sess_missing") is None
    assert calls.failures == 0


async def test_upsert_updates_only_what_is_given(calls: CallStore) -> None:
    await calls.start_call("sess_1", agent="acme", engine="openai", transport="realtime_ws", dialect="ga")
    await calls.upsert_item("sess_1", "item_a", role="assistant", type="message", status="in_progress")
    await calls.upsert_item("sess_1", "item_b", role="user", type="message")
    # transcript completion, then a barge-in truncation that also shortens the text
    await calls.upsert_item(
        "sess_1",
        "item_a",
        role="assistant",
        type="message",
        text="Your order ships tomorrow and",
        audio_ms=3000,
    )
    await calls.upsert_item(
        "sess_1", "item_a", role="assistant", type="message", text="Your order", truncated_at_ms=1250.6
    )
    await calls.upsert_item("sess_1", "item_a", role="assistant", type="message", status="incomplete")

    call = await calls.get_call("sess_1")
    assert call is not None
    first, second = call["items"]
    assert (first["item_id"], first["seq"], second["item_id"], second["seq"]) == ("item_a", 1, "item_b", 2)
    assert first["text"] == "Your order"
    assert (first["audio_ms"], first["truncated_at_ms"], first["status"]) == (3000, 1251, "incomplete")
    # seq numbering is per call
    await calls.start_call("sess_2", agent="acme", engine="local", transport="sip")
    await calls.upsert_item("sess_2", "item_a", role="user", type="message")
    other = await calls.get_call("sess_2")
    assert other is not None and [i["seq"] for i in other["items"]] == [1]


async def test_tool_output_is_capped(calls: CallStore) -> None:
    await calls.start_call("sess_1", agent="acme", engine="local", transport="webrtc")
    await calls.record_tool_call(
        "sess_1",
        tool_call_id="call_x",
        name="dump",
        side="client",
        arguments="not even JSON {",
        status="failed",
        output="x" * (MAX_TOOL_OUTPUT_CHARS * 2),
        duration_ms=None,
    )
    call = await calls.get_call("sess_1")
    assert call is not None
    (tool,) = call["tool_calls"]
    assert tool["arguments"] == "not even JSON {"
    assert len(tool["output"]) < MAX_TOOL_OUTPUT_CHARS + 20 and tool["output"].endswith("[truncated]")


async def test_list_calls_newest_first_with_filters(calls: CallStore, clock: Clock) -> None:
    for n in range(5):
        await calls.start_call(
            f"sess_{n}", agent="acme" if n % 2 else "bank", engine="local", transport="sip"
        )
        clock.advance(1)
    await calls.end_call("sess_3", status="dropped")
    assert [c["id"] for c in await calls.list_calls()] == ["sess_4", "sess_3", "sess_2", "sess_1", "sess_0"]
    assert [c["id"] for c in await calls.list_calls(limit=2, offset=1)] == ["sess_3", "sess_2"]
    assert [c["id"] for c in await calls.list_calls(agent="acme")] == ["sess_3", "sess_1"]
    assert [c["id"] for c in await calls.list_calls(status="dropped")] == ["sess_3"]
    assert "items" not in (await calls.list_calls(limit=1))[0]


async def test_audit_trail_masks_secrets(calls: CallStore, clock: Clock) -> None:
    await calls.audit("admin", "key.created", "key_1", {"name": "ci", "secret": "vg_abc"})
    clock.advance(1)
    await calls.audit("api", "ephemeral_key.issued", "key_2", {"session": {"token": "ek_x", "model": "m"}})
    events = await calls.list_audit()
    assert [e["action"] for e in events] == ["ephemeral_key.issued", "key.created"]
    assert events[1]["detail"] == {"name": "ci", "secret": "****"}
    assert events[0]["detail"] == {"session": {"token": "****", "model": "m"}}
    assert [e["subject"] for e in await calls.list_audit(action="key.created")] == ["key_1"]


async def test_kpis(calls: CallStore, clock: Clock) -> None:
    assert (await calls.kpis())["calls"] == 0
    assert (await calls.kpis())["drop_rate"] is None
    outcomes = [  # (status, outcome, first_response_ms)
        ("completed", "task_completed", 100.0),
        ("completed", "task_completed", 200.0),
        ("transferred", "escalated", 300.0),
        ("dropped", "hangup", 400.0),
        ("failed", None, None),
    ]
    clock.advance(-3600)
    await calls.start_call("sess_old", agent="acme", engine="local", transport="sip")
    await calls.end_call("sess_old", status="dropped", first_response_ms=9999.0)
    clock.at = T0
    for n, (status, outcome, first_ms) in enumerate(outcomes):
        await calls.start_call(f"sess_{n}", agent="acme", engine="local", transport="twilio")
        await calls.end_call(f"sess_{n}", status=status, outcome=outcome, first_response_ms=first_ms)
    await calls.start_call("sess_live", agent="acme", engine="local", transport="webrtc")
    for n, status in enumerate(["completed", "completed", "completed", "failed"]):
        await calls.record_tool_call(
            "sess_0",
            tool_call_id=f"c{n}",
            name="t",
            side="server",
            arguments={},
            status=status,
            output=None,
            duration_ms=1.0,
        )

    k = await calls.kpis(since=T0)
    assert k["calls"] == 6 and k["active"] == 1
    assert k["by_status"] == {"completed": 2, "transferred": 1, "dropped": 1, "failed": 1, "active": 1}
    assert k["drop_rate"] == pytest.approx(1 / 5)
    assert k["task_completion_rate"] == pytest.approx(2 / 5)
    assert k["escalation_rate"] == pytest.approx(1 / 5)
    assert (k["tool_calls"], k["tool_success_rate"]) == (4, pytest.approx(0.75))
    assert k["first_response_ms"] == {"count": 4, "p50": pytest.approx(250.0), "p95": pytest.approx(385.0),
                                      "p99": pytest.approx(397.0)}

    everything = await calls.kpis()
    assert everything["calls"] == 7 and everything["drop_rate"] == pytest.approx(2 / 6)
    assert everything["first_response_ms"]["count"] == 5


async def test_kpis_for_a_key_count_its_own_calls_and_the_gateways_only(calls: CallStore) -> None:
    await calls.start_call("sess_a", agent="acme", engine="echo", transport="twilio", owner="key_a")
    await calls.end_call("sess_a", status="dropped", first_response_ms=100.0)
    await calls.start_call("sess_b", agent="acme", engine="echo", transport="twilio", owner="key_b")
    await calls.end_call("sess_b", status="completed", outcome="task_completed", first_response_ms=900.0)
    await calls.record_tool_call("sess_b", tool_call_id="c1", name="t", side="server", arguments={},
                                 status="failed", output=None, duration_ms=1.0)
    await calls.start_call("sess_gateway", agent="acme", engine="echo", transport="sip")  # no owner: everyone's
    await calls.end_call("sess_gateway", status="completed", first_response_ms=300.0)

    mine = await calls.kpis(visible_to="key_a")
    assert mine["calls"] == 2 and mine["by_status"] == {"dropped": 1, "completed": 1}
    assert mine["task_completion_rate"] == 0.0 and mine["tool_calls"] == 0
    assert mine["first_response_ms"]["count"] == 2 and mine["first_response_ms"]["p95"] < 900.0
    assert (await calls.kpis(visible_to="key_b"))["tool_calls"] == 1
    assert (await calls.kpis())["calls"] == 3


async def test_stats_of_scripted_calls_whose_truth_is_known(calls: CallStore, clock: Clock) -> None:
    """tests/scripted_calls.py: each KPI and each budget stage of calls whose truth is known; the filters."""
    clock.at = SCRIPT_T0
    await write_scripted_calls(calls, clock.advance)

    k = await calls.kpis(interruption_stop_ms=500.0)
    assert (k["calls"], k["drop_rate"], k["escalation_rate"]) == (10, 0.1, 0.1)
    assert k["task_completion_rate"] == pytest.approx(0.7)
    assert (k["buffer_overflows"], k["tool_calls"], k["tool_success_rate"]) == (1, 10, 0.8)
    assert (k["turns"], k["fallthrough_rate"]) == (40, pytest.approx(4 / 40))
    assert (k["barge_ins"], k["interruption_success_rate"]) == (2, 0.5)
    assert k["average_handle_time_s"] == pytest.approx(60.0)
    budget = k["latency_budget_ms"]
    for stage in ("vad", "transcript", "first_token", "tts_first_audio", "first_audio_sent"):
        value = SCRIPTED_STAGES[stage]
        assert budget[stage] == {"count": 10, "p50": value, "p95": value, "p99": value}
    assert budget["first_audio_heard"]["p50"] == pytest.approx(44.5)
    assert budget["total"]["count"] == 10 and k["first_response_ms"]["p99"] == pytest.approx(608.91)
    assert (await calls.kpis(interruption_stop_ms=1000.0))["interruption_success_rate"] == 1.0

    sip = await calls.kpis(transport="sip")
    assert (sip["calls"], sip["escalation_rate"]) == (3, pytest.approx(1 / 3))
    assert sip["tool_success_rate"] == pytest.approx(1 / 3)
    assert (await calls.kpis(agent="other"))["calls"] == 1
    window = await calls.kpis(since=SCRIPT_T0 + timedelta(minutes=5), until=SCRIPT_T0 + timedelta(minutes=7))
    assert window["calls"] == 2

    record = await calls.get_call("sess_scripted_3")
    assert record is not None
    assert record["latency"] == [{"seq": 1, "at": record["latency"][0]["at"], "total_ms": 726.0, "heard": True,
                                  "stages": {**SCRIPTED_STAGES, "first_audio_heard": 43.0}}]
    assert record["barge_ins"] == [{"seq": 2, "at": record["barge_ins"][0]["at"], "stop_ms": 320.0}]
    assert (record["fallthroughs"], record["buffer_overflow"]) == (0, False)


@settings(deadline=None)  # a per-example time limit fails on a loaded machine, not on a wrong percentile
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50), st.floats(0, 1))
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(sorted(values), q) == pytest.approx(float(np.percentile(values, q * 100)), abs=1e-6)


def test_percentile_edges() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


# -- writes never raise ------------------------------------------------------------------------


async def test_writes_to_a_closed_database_are_counted_not_raised(db: Database, calls: CallStore) -> None:
    await calls.start_call("sess_1", agent="acme", engine="local", transport="sip")
    await db.aclose()
    assert await calls.upsert_item("sess_1", "item_1", role="user", type="message", text="hi") is False
    assert (
        await calls.record_tool_call(
            "sess_1",
            tool_call_id="c",
            name="t",
            side="server",
            arguments={},
            status="completed",
            output=None,
            duration_ms=1.0,
        )
        is False
    )
    assert await calls.end_call("sess_1", status="completed") is False
    assert await calls.audit("api", "call.transferred", "sess_1", {}) is False
    assert calls.failures == 4
    with pytest.raises(DatabaseClosedError):  # reads do raise
        await calls.get_call("sess_1")


async def test_integrity_failures_are_counted_not_raised(calls: CallStore) -> None:
    assert await calls.upsert_item("sess_nope", "item_1", role="user", type="message") is False  # FK
    assert await calls.end_call("sess_nope", status="completed") is False
    await calls.start_call("sess_1", agent="acme", engine="local", transport="sip")
    assert await calls.start_call("sess_1", agent="acme", engine="local", transport="sip") is False  # dup
    assert calls.failures == 3
    call = await calls.get_call("sess_1")
    assert call is not None and call["status"] == "active"


async def test_concurrent_writes_share_transactions_and_a_bad_one_spoils_only_itself(calls: CallStore) -> None:
    """Many calls writing at once: grouped into few transactions, in order, each write's outcome its own."""
    commits = 0

    def count(*_: object) -> None:
        nonlocal commits
        commits += 1

    engine = calls._db._engine
    assert engine is not None
    sa.event.listen(engine.sync_engine, "commit", count)
    writes = []
    for n in range(30):
        writes.append(calls.start_call(f"sess_{n}", agent="acme", engine="echo", transport="twilio"))
        writes.append(calls.upsert_item(f"sess_{n}", "item_a", role="user", type="message", text=f"hello {n}"))
        writes.append(calls.upsert_item(f"sess_{n}", "item_b", role="assistant", type="message"))
    writes.insert(40, calls.upsert_item("sess_unknown", "item_x", role="user", type="message"))  # FK fails
    results = await asyncio.gather(*writes)
    assert results.count(False) == 1 and results[40] is False
    assert calls.failures == 1
    # One batch failed and was retried write by write; the rest went a transaction per batch.
    assert commits < len(writes) - 40, commits
    for n in (0, 17, 29):
        call = await calls.get_call(f"sess_{n}")
        assert call is not None
        assert [(i["item_id"], i["seq"]) for i in call["items"]] == [("item_a", 1), ("item_b", 2)]
        assert call["items"][0]["text"] == f"hello {n}"


async def test_rows_of_one_kind_queued_together_go_in_one_statement(calls: CallStore) -> None:
    """A burst of call starts, items and ends (calls churning on a busy gateway) costs a few round trips to
    the database, not one per row: each round trip waits for a turn of the event loop, which a gateway
    full of calls' audio hands out slowly."""
    executions: list[bool] = []

    def count(conn: object, cursor: object, statement: str, parameters: object, context: object,
              executemany: bool) -> None:
        executions.append(executemany)

    engine = calls._db._engine
    assert engine is not None
    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    await asyncio.gather(*(calls.start_call(f"sess_{n}", agent="acme", engine="echo", transport="twilio")
                           for n in range(50)))
    executions.clear()
    writes = [calls.upsert_item(f"sess_{n}", f"item_{k}", role="user", type="message", text="hi")
              for n in range(50) for k in range(3)]
    writes += [calls.end_call(f"sess_{n}", status="completed", turns=3) for n in range(50)]
    assert all(await asyncio.gather(*writes))
    assert len(executions) <= 10 and any(executions), executions  # 200 rows
    ended = await calls.get_call("sess_49")
    assert ended is not None and ended["status"] == "completed" and ended["duration_s"] >= 0
    assert [i["seq"] for i in ended["items"]] == [1, 2, 3]


async def test_a_locked_database_does_not_block_the_call(db: Database, db_path: Path) -> None:
    slow = CallStore(db, write_timeout_s=0.2)
    with sqlite3.connect(db_path, timeout=0) as blocker:
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file; SQLite would wait 5 s for it
        slow_before = REGISTRY.get_sample_value("voxgate_store_slow_writes_total") or 0.0
        lost_before = REGISTRY.get_sample_value("voxgate_store_failures_total") or 0.0
        assert await slow.start_call("sess_1", agent="acme", engine="local", transport="sip") is None
        assert (slow.timeouts, slow.failures) == (1, 0)  # the caller stopped waiting; nothing failed
        # Counted as slow, not as lost: a soak's loss check must not take a busy disk for dropped records.
        assert REGISTRY.get_sample_value("voxgate_store_slow_writes_total") == slow_before + 1
        assert (REGISTRY.get_sample_value("voxgate_store_failures_total") or 0.0) == lost_before
        blocker.rollback()
    await slow.drain()  # the write went on in the background and landed once the lock was gone
    assert slow.failures == 0
    assert await slow.get_call("sess_1") is not None


async def test_a_call_ending_on_a_locked_database_lets_go_before_its_record_lands(db: Database,
                                                                               db_path: Path) -> None:
    """A hang-up waits a moment for its record, then leaves it to the store: the call's admission slot
    must not be held while the disk is busy (a soak beside a busy disk refused calls at 80 % of the limit)."""
    store = CallStore(db, write_timeout_s=30.0)
    recorder = CallRecorder(store, engine="echo")
    summary = CallSummary(status="completed", outcome="", end_reason="caller hung up", duration_s=1.0,
                          first_response_ms=None, turns=0, interruptions=0)
    with sqlite3.connect(db_path, timeout=0) as blocker:
        blocker.execute("BEGIN EXCLUSIVE")
        recorder.start_call("sess_locked", agent="acme", transport="twilio", dialect="ga", caller=None,
                            model="voxgate")
        await recorder.end_call(summary)
        # It returned with its writes still waiting on the lock: nothing has landed, failed or timed out.
        assert (store.failures, store.timeouts) == (0, 0)
        blocker.rollback()
    await store.drain()  # the store finished them once the lock was gone
    record = await store.get_call("sess_locked")
    assert record is not None and record["status"] == "completed" and store.failures == 0


async def test_a_write_survives_the_caller_being_cancelled(calls: CallStore) -> None:
    await calls.start_call("sess_1", agent="acme", engine="local", transport="sip")
    hangup = asyncio.create_task(calls.end_call("sess_1", status="completed", outcome="hangup"))
    await asyncio.sleep(0)  # the write has started
    hangup.cancel()
    await calls.drain()
    call = await calls.get_call("sess_1")
    assert call is not None and call["outcome"] == "hangup"


# -- keys --------------------------------------------------------------------------------------


async def test_api_key_create_verify_revoke(keys: KeyStore, clock: Clock) -> None:
    key_id, secret = await keys.create("ci", scopes=["calls:read", "keys:write"])
    assert secret.startswith("vg_") and len(secret) > 40
    record = await keys.verify(secret)
    assert record is not None
    assert (record.id, record.name, record.kind) == (key_id, "ci", "api")
    assert record.scopes == ("calls:read", "keys:write") and record.expires_at is None

    assert await keys.verify(secret + "x") is None
    assert await keys.verify("ek_" + secret[3:]) is None
    assert await keys.verify("") is None
    assert await keys.verify("Bearer " + secret) is None

    (listed,) = await keys.list()
    assert listed["id"] == key_id and listed["prefix"] == secret[:10]
    assert listed["used_at"] == T0.isoformat() and listed["revoked_at"] is None
    assert secret not in str(listed) and "hash" not in listed

    clock.advance(5)
    assert await keys.revoke(key_id) is True
    assert await keys.revoke(key_id) is False
    assert await keys.revoke("key_unknown") is False
    assert await keys.verify(secret) is None


async def test_ephemeral_key_is_bound_and_expires(keys: KeyStore, clock: Clock) -> None:
    config = {"type": "realtime", "model": "voxgate-local", "audio": {"output": {"voice": "joe"}}}
    key_id, secret = await keys.create("browser", kind="ephemeral", ttl_s=60, session_config=config)
    _, default_ttl = await keys.create("browser", kind="ephemeral")
    assert secret.startswith("ek_")
    clock.advance(59)
    record = await keys.verify(secret)
    assert record is not None and record.kind == "ephemeral" and record.session_config == config
    assert record.expires_at == T0 + timedelta(seconds=60)
    await keys.create("browser", kind="ephemeral", ttl_s=1)
    clock.advance(1)
    assert await keys.verify(secret) is None  # expiry is exclusive
    assert key_id not in [k["id"] for k in await keys.list()], "an expired key met on use is deleted"
    assert await keys.verify(default_ttl) is not None  # 600 s by default
    assert [k["kind"] for k in await keys.list(kind="api")] == []
    assert await keys.purge_expired() == 1  # the one nobody used: the sweep's
    assert len(await keys.list()) == 1


async def test_bad_key_arguments_raise_value_error(keys: KeyStore) -> None:
    with pytest.raises(ValueError, match="kind"):
        await keys.create("x", kind="master")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_s"):
        await keys.create("x", ttl_s=0)


async def test_calls_a_crash_left_active_are_closed_as_dropped_for_this_node_only(
        calls: CallStore, clock: Clock) -> None:
    await calls.start_call("sess_mine", agent="acme", engine="echo", transport="twilio", metadata={"node": "a:8000"})
    clock.advance(20)
    await calls.upsert_item("sess_mine", "item_1", role="user", type="message", text="hello")
    await calls.start_call("sess_old", agent="acme", engine="echo", transport="realtime_ws")  # before nodes
    await calls.start_call("sess_other", agent="acme", engine="echo", transport="realtime_ws",
                           metadata={"node": "b:8000"})
    await calls.start_call("sess_done", agent="acme", engine="echo", transport="webrtc", metadata={"node": "a:8000"})
    await calls.end_call("sess_done", status="completed")
    clock.advance(3600)  # the node comes back an hour later

    closed = await calls.close_abandoned("a:8000", "gateway restarted")

    assert sorted(closed) == ["sess_mine", "sess_old"]
    mine = await calls.get_call("sess_mine")
    assert mine is not None
    assert (mine["status"], mine["end_reason"], mine["duration_s"]) == ("dropped", "gateway restarted", 20.0)
    other, done = await calls.get_call("sess_other"), await calls.get_call("sess_done")
    assert other is not None and other["status"] == "active"  # another gateway's live call
    assert done is not None and done["status"] == "completed"
    assert (await calls.kpis())["active"] == 1
    assert await calls.close_abandoned("a:8000", "gateway restarted") == []


async def test_the_end_of_a_call_can_replace_its_metadata(calls: CallStore) -> None:
    """A SIP call's media quality joins the record at hang-up; an end without metadata keeps the start's."""
    await calls.start_call("sess_m", agent="echo", engine="echo", transport="sip", metadata={"model": "m"})
    media = {"codec": "PCMU", "srtp": None, "round_trip_ms": 1.5, "peer_report": {"packets_lost": 2}}
    assert await calls.end_call("sess_m", status="completed", metadata={"model": "m", "media": media})
    call = await calls.get_call("sess_m")
    assert call is not None and call["metadata"] == {"model": "m", "media": media}

"""The acme demo tools on a real, temporary SQLite database with a pinned clock."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sqlite3
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

from voxgate.agents import load_agent
from voxgate.clock import Clock, using_clock

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 3, 12, 10, 0)  # Wednesday morning


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("acme_tools_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def acme() -> ModuleType:
    return _load(ROOT / "examples" / "tools" / "acme.py")


@pytest.fixture
def store(acme: ModuleType, tmp_path: Path):  # type: ignore[no-untyped-def]
    return acme.AcmeStore(tmp_path / "acme.db", now=lambda: NOW)


def test_agent_handlers_point_at_these_functions() -> None:
    agent = load_agent(ROOT / "examples" / "agents" / "acme.yaml")
    assert agent.name == "acme" and agent.voice == "joe"
    assert agent.disclosure == "You're speaking with Acme's automated assistant. This call may be recorded."
    assert agent.escalation.target == "+15550100"
    assert {t.name: t.builtin for t in agent.tools if t.builtin} == {
        "transfer_to_human": "transfer_to_human", "end_call": "end_call"}
    for tool in agent.tools:
        if tool.handler is None:
            continue
        file, function = tool.handler.split(":")
        assert agent.source is not None
        handler = getattr(_load((agent.source.parent / file).resolve()), function)
        assert inspect.iscoroutinefunction(handler)
        assert set(tool.parameters["required"]) <= set(inspect.signature(handler).parameters)


def test_orders_are_seeded_on_first_use(store) -> None:  # type: ignore[no-untyped-def]
    shipped = store.lookup_order("4567")
    assert shipped["status"] == "shipped" and shipped["carrier"] == "UPS"
    assert shipped["eta"] == "2025-03-14"
    assert shipped["summary"] == "has shipped with UPS and should arrive on Friday, March 14"
    assert store.lookup_order("1234")["status"] == "processing"
    assert store.lookup_order("9876")["summary"] == "was delivered on Monday, March 10"
    assert store.lookup_order("3141")["summary"] == "is out for delivery with USPS and should arrive today"


def test_unknown_or_malformed_order_is_an_error_result(store) -> None:  # type: ignore[no-untyped-def]
    assert store.lookup_order("9999") == {"error": "I couldn't find an order with number 9999."}
    assert "error" in store.lookup_order("12")
    assert "error" in store.lookup_order("12ab")


def test_booking_really_books_and_refuses_a_double_booking(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    booked = store.book_appointment("2025-03-13", "15:00")
    assert booked["status"] == "booked" and booked["date"] == "2025-03-13" and booked["time"] == "15:00"
    with sqlite3.connect(tmp_path / "acme.db") as conn:
        rows = conn.execute("SELECT id, date, time FROM appointments").fetchall()
    assert rows == [(booked["appointment_id"], "2025-03-13", "15:00")]
    assert store.book_appointment("2025-03-13", "15:00") == {"error": "that slot is already taken."}
    assert store.book_appointment("2025-03-13", "15:15") == {"error": "that slot is already taken."}
    assert store.book_appointment("2025-03-13", "15:30")["status"] == "booked"


@pytest.mark.parametrize(("day", "time", "error"), [
    ("2025-03-12", "09:30", "that time has already passed."),
    ("2025-03-01", "12:00", "that time has already passed."),
    ("2025-03-16", "12:00", "we're closed on Sundays."),
    ("2025-03-13", "08:30", "we only book appointments between 9 AM and 5 PM."),
    ("2025-03-13", "16:45", "we only book appointments between 9 AM and 5 PM."),
    ("2025-03-13", "19:00", "we only book appointments between 9 AM and 5 PM."),
    ("2025-02-30", "10:00", "I need a date like 2025-03-14 and a time like 15:00."),
    ("2025-03-13", "3pm", "I need a date like 2025-03-14 and a time like 15:00."),
])
def test_booking_refusals(store, day: str, time: str, error: str) -> None:  # type: ignore[no-untyped-def]
    assert store.book_appointment(day, time) == {"error": error}


def test_saturday_and_the_edges_of_the_day_are_bookable(store) -> None:  # type: ignore[no-untyped-def]
    assert store.book_appointment("2025-03-15", "09:00")["status"] == "booked"
    assert store.book_appointment("2025-03-15", "16:30")["status"] == "booked"


async def test_async_tools_use_the_environment(acme: ModuleType, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_DB", str(tmp_path / "env.db"))
    with using_clock(Clock(datetime(2025, 3, 12, 10, 0))):  # what a gateway pinned to that time does
        assert (await acme.lookup_order("4567"))["eta"] == "2025-03-14"
        first, second = await asyncio.gather(acme.book_appointment("2025-03-14", "11:00"),
                                             acme.book_appointment("2025-03-14", "11:00"))
    assert sorted("error" in r for r in (first, second)) == [False, True]  # exactly one wins the slot
    assert (tmp_path / "env.db").exists()
    late = await acme.book_appointment("2025-03-12", "09:30", now=datetime(2025, 3, 12, 8, 0))
    assert late["status"] == "booked"


@pytest.mark.parametrize(("today", "spoken"), [
    (datetime(2026, 3, 11, 10, 0), "should arrive on Friday, March 13"),          # a Wednesday
    (datetime(2026, 3, 30, 10, 0), "should arrive on Wednesday, April 1"),        # over a month end
    (datetime(2026, 12, 30, 16, 0), "should arrive on Friday, January 1"),        # over a year end
    (datetime(2026, 2, 27, 9, 0), "should arrive on Sunday, March 1"),            # February's end
    (datetime(2026, 12, 5, 23, 59), "should arrive on Monday, December 7"),       # late on a Saturday
])
def test_spoken_delivery_day_follows_the_clock(acme: ModuleType, tmp_path: Path, today: datetime,
                                               spoken: str) -> None:
    with using_clock(Clock(today)):
        summary = acme.AcmeStore(tmp_path / "acme.db").lookup_order("4567")["summary"]
    assert summary == f"has shipped with UPS and {spoken}"


def test_near_days_are_said_as_words(acme: ModuleType, tmp_path: Path) -> None:
    with using_clock(Clock(datetime(2026, 12, 31, 12, 0))):
        store = acme.AcmeStore(tmp_path / "acme.db")
        assert store.lookup_order("3141")["summary"].endswith("should arrive today")
        assert store.lookup_order("9876")["summary"] == "was delivered on Tuesday, December 29"


def test_a_pinned_clock_runs_on_from_its_start() -> None:
    ticks = iter([100.0, 100.0, 190.5])
    clock = Clock(datetime(2026, 12, 31, 23, 59), monotonic=lambda: next(ticks))
    assert clock.now().replace(tzinfo=None) == datetime(2026, 12, 31, 23, 59)
    assert clock.now().replace(tzinfo=None) == datetime(2027, 1, 1, 0, 0, 30, 500000)
    assert clock.pinned and not Clock().pinned

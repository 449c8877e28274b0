"""Tools for the acme demo agent, backed by a real SQLite database.

The database lives at $ACME_DB (default ./acme.db) and is created and seeded on first use. Business
refusals (unknown order, a slot in the past, outside opening hours, already taken) are results of the form
{"error": "..."} written to be spoken after "I'm sorry, "; only real failures raise.

"Now" is the gateway's clock (`voxgate.clock.current_clock()`: pinned by the gateway's `clock_start`
setting), or `now=` where a caller passes one.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import date as Date
from datetime import datetime, timedelta
from datetime import time as Time
from pathlib import Path
from typing import Any

from voxgate.clock import current_clock

OPEN_DAYS = range(0, 6)  # Monday..Saturday
OPENS, CLOSES = Time(9, 0), Time(17, 0)
APPOINTMENT = timedelta(minutes=30)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,          -- processing | shipped | out_for_delivery | delivered | cancelled
    carrier    TEXT,
    eta        TEXT,                   -- YYYY-MM-DD: expected or actual delivery
    items      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS appointments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    date       TEXT NOT NULL,          -- YYYY-MM-DD
    time       TEXT NOT NULL,          -- HH:MM
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS appointments_by_date ON appointments (date);
"""


class AcmeStore:
    """The synchronous core: one short-lived connection per operation, so it is safe from any thread."""

    def __init__(self, path: str | Path, now: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path)
        self._now = now or _local_now

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.executescript(_SCHEMA)
        if conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0:
            self._seed(conn)
        return conn

    def _seed(self, conn: sqlite3.Connection) -> None:
        today = self._now().date()
        rows = [
            ("4567", "shipped", "UPS", today + timedelta(days=2), "a toaster and two mugs"),
            ("1234", "processing", None, today + timedelta(days=5), "a kettle"),
            ("9876", "delivered", "FedEx", today - timedelta(days=2), "a blender"),
            ("3141", "out_for_delivery", "USPS", today, "a set of knives"),
            ("55501", "cancelled", None, None, "a coffee grinder"),
            ("202501", "shipped", "DHL", today + timedelta(days=4), "a stand mixer"),
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO orders (order_id, status, carrier, eta, items) VALUES (?, ?, ?, ?, ?)",
            [(oid, status, carrier, eta.isoformat() if eta else None, items)
             for oid, status, carrier, eta, items in rows],
        )
        conn.execute("COMMIT")

    def lookup_order(self, order_id: str) -> dict[str, Any]:
        order_id = str(order_id).strip()
        if not re.fullmatch(r"[0-9]{4,10}", order_id):
            return {"error": "order numbers have 4 to 10 digits."}
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            return {"error": f"I couldn't find an order with number {order_id}."}
        eta = Date.fromisoformat(row["eta"]) if row["eta"] else None
        return {"order_id": order_id, "status": row["status"], "carrier": row["carrier"],
                "eta": row["eta"], "items": row["items"],
                "summary": _order_summary(row["status"], row["carrier"], eta, self._now().date())}

    def book_appointment(self, date: str, time: str) -> dict[str, Any]:
        try:
            day = Date.fromisoformat(date)
            start = Time.fromisoformat(time)
        except (TypeError, ValueError):
            return {"error": "I need a date like 2025-03-14 and a time like 15:00."}
        when = datetime.combine(day, start)
        if when <= self._now():
            return {"error": "that time has already passed."}
        if day.weekday() not in OPEN_DAYS:
            return {"error": "we're closed on Sundays."}
        if start < OPENS or (when + APPOINTMENT).time() > CLOSES or when.date() != (when + APPOINTMENT).date():
            return {"error": "we only book appointments between 9 AM and 5 PM."}
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")  # the check and the insert must not interleave with another booking
            try:
                for row in conn.execute("SELECT time FROM appointments WHERE date = ?", (day.isoformat(),)):
                    other = datetime.combine(day, Time.fromisoformat(row["time"]))
                    if abs(other - when) < APPOINTMENT:
                        conn.execute("ROLLBACK")
                        return {"error": "that slot is already taken."}
                cursor = conn.execute(
                    "INSERT INTO appointments (date, time, created_at) VALUES (?, ?, ?)",
                    (day.isoformat(), start.strftime("%H:%M"), self._now().isoformat(timespec="seconds")),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return {"appointment_id": cursor.lastrowid, "date": day.isoformat(), "time": start.strftime("%H:%M"),
                "status": "booked"}


def _order_summary(status: str, carrier: str | None, eta: Date | None, today: Date) -> str:
    """The spoken rest of "Order 4567 ..."."""
    when = _spoken_day(eta, today) if eta else None
    if status == "shipped":
        return f"has shipped with {carrier} and should arrive {when}" if when else f"has shipped with {carrier}"
    if status == "out_for_delivery":
        return f"is out for delivery with {carrier} and should arrive today"
    if status == "delivered":
        return f"was delivered {when}" if when else "was delivered"
    if status == "processing":
        return f"is being prepared and should arrive {when}" if when else "is being prepared"
    if status == "cancelled":
        return "was cancelled"
    return f"is {status.replace('_', ' ')}"


def _spoken_day(day: Date, today: Date) -> str:
    if day == today:
        return "today"
    if day == today + timedelta(days=1):
        return "tomorrow"
    if day == today - timedelta(days=1):
        return "yesterday"
    return f"on {day:%A}, {day:%B} {day.day}"


def _local_now() -> datetime:
    return current_clock().now().replace(tzinfo=None)  # the store keeps naive local times


def _store(now: datetime | None) -> AcmeStore:
    return AcmeStore(os.environ.get("ACME_DB", "acme.db"), now=(lambda: now) if now else _local_now)


async def lookup_order(order_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Status, carrier and delivery date of an order, or {"error": ...} if there is no such order."""
    return await asyncio.to_thread(_store(now).lookup_order, order_id)


async def book_appointment(date: str, time: str, now: datetime | None = None) -> dict[str, Any]:
    """Book a 30-minute appointment (Mon-Sat, 9:00-17:00), or {"error": ...} saying why not."""
    return await asyncio.to_thread(_store(now).book_appointment, date, time)

"""Ten calls whose truth is known, written straight into a call store: 2 barge-ins (one silenced within
500 ms), 2 failing tools, a drop, a buffer overflow, an escalation, 4 fall-throughs in 40 turns, and one
answered turn each whose every stage is known. The stats tests, the API tests and the dashboard test
read them back. And a month of calls for the cost report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import LiveServer, start_server
from voxgate.config import Prices
from voxgate.observability.cost import CostModel
from voxgate.store.calls import CallStore
from voxgate.store.database import Database

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
STAGES = {"vad": 500.0, "transcript": 100.0, "first_token": 2.0, "tts_first_audio": 80.0,
          "first_audio_sent": 1.0, "first_audio_heard": 40.0}
SCRIPT = [  # (transport, status, outcome, fall-throughs, buffer overflow)
    ("sip", "completed", "task_completed", 0, False),
    ("sip", "completed", "task_completed", 1, False),
    ("sip", "transferred", "escalated", 0, False),
    ("twilio", "completed", "task_completed", 0, False),
    ("twilio", "dropped", "no_task", 2, True),
    ("webrtc", "completed", "task_completed", 0, False),
    ("webrtc", "completed", "no_task", 1, False),
    ("realtime_ws", "completed", "task_completed", 0, False),
    ("realtime_ws", "completed", "task_completed", 0, False),
    ("realtime_ws", "completed", "task_completed", 0, False),
]
CALL_SECONDS = 60.0  # each call lasts a minute; they follow one another from T0


class StepClock:
    """A clock the script moves by hand."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


async def write_scripted_calls(calls: CallStore, advance: Callable[[float], None]) -> list[str]:
    """Write the script through `calls`, whose clock `advance` moves; returns the call ids in order."""
    ids = []
    for n, (transport, status, outcome, fallthroughs, overflow) in enumerate(SCRIPT):
        call_id = f"sess_scripted_{n}"
        ids.append(call_id)
        await calls.start_call(call_id, agent="acme" if n else "other", engine="local", transport=transport)
        advance(5)
        await calls.record_turn(call_id, seq=1, stages={**STAGES, "first_audio_heard": 40.0 + n},
                                total_ms=723.0 + n, heard=True)
        advance(10)
        await calls.record_tool_call(call_id, tool_call_id="call_1", name="lookup_order", side="server",
                                     arguments={}, status="failed" if n in (1, 2) else "completed", output=None,
                                     duration_ms=1.0)
        advance(20)
        if n in (3, 4):
            await calls.record_barge_in(call_id, seq=2, stop_ms=320.0 if n == 3 else 900.0)
        advance(CALL_SECONDS - 35)
        await calls.end_call(call_id, status=status, outcome=outcome, turns=4, fallthroughs=fallthroughs,
                             interruptions=1 if n in (3, 4) else 0,
                             buffer_overflow=overflow, first_response_ms=600.0 + n, cost_usd=0.01)
    return ids


def scripted_gateway(tmp: Path) -> LiveServer:
    """A gateway (echo engine) whose database holds the scripted calls; stop it with `live.embedded.stop()`."""
    live = start_server(tmp, engine="echo", default_agent="echo")
    asyncio.run(script_into(tmp / "voxgate.db"))
    return live


async def script_into(db_path: Path) -> None:
    """The scripted calls, written beside a running gateway into its database (SQLite in WAL mode)."""
    db = Database(f"sqlite+aiosqlite:///{db_path}")
    await db.connect()
    clock = StepClock()
    try:
        await write_scripted_calls(CallStore(db, now=clock), clock.advance)
    finally:
        await db.aclose()


MONTH = datetime(2026, 2, 1, tzinfo=UTC)
MONTH_MIX = [  # (calls, agent, engine, transport): 1,000 calls of 10 minutes, 10,000 minutes in February
    (600, "acme", "local", "sip"),
    (300, "acme", "local", "twilio"),
    (100, "concierge", "openai", "webrtc"),
]
# A gpt-realtime call of 10 minutes: 5 of agent audio (about 1,200 tokens a minute), the caller's 5 re-sent
# as context turn after turn, most of it from the cache.
OPENAI_USAGE = {"input_token_details": {"audio_tokens": 30000, "text_tokens": 4000, "cached_tokens": 26000,
                                        "cached_tokens_details": {"audio_tokens": 24000, "text_tokens": 2000}},
                "output_token_details": {"audio_tokens": 6000, "text_tokens": 600}}


def scripted_month(prices: Prices) -> list[dict[str, Any]]:
    """The rows of a month of calls (the seed's example: 10,000 minutes), each priced as the gateway does."""
    model = CostModel(prices)
    rows: list[dict[str, Any]] = []
    for count, agent, engine, transport in MONTH_MIX:
        for n in range(count):
            started = MONTH + timedelta(minutes=40 * len(rows))  # spread over the month's 28 days
            usage = OPENAI_USAGE if engine == "openai" else None
            rows.append({"id": f"sess_month_{len(rows)}", "agent": agent, "engine": engine, "transport": transport,
                         "started_at": started, "ended_at": started + timedelta(minutes=10), "status": "completed",
                         "outcome": "task_completed" if n % 5 else "escalated", "duration_s": 600.0,
                         "turns": 6, "interruptions": 0, "usage": usage, "fallthroughs": 0,
                         "buffer_overflow": False, "cost_usd": model.call_cost(engine, 600.0, usage, transport)})
    return rows

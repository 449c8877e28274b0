"""Zero data retention (issue 15): a call on each transport (WebSocket, WebRTC, Twilio, Telnyx, SIP) asks the
demo agent for an order's status, so its words reach a transcript, a tool's arguments and its result; on a
gateway with `zero_retention` nothing of them is left in any table, in the log (at debug level, every
logger) or on the gateway's disk: only counters and timings. The same inspection of the same call on a
gateway without it finds them, so the inspection is able to see what it looks for."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CarrierServer, LiveServer, start_carrier_server
from tests.integration.test_debug_logs import debug_log
from tests.integration.test_route_roles import ask_for_order
from tests.integration.test_sip_parity import ENDED_BY_AGENT, REQUEST, answer_played, call_over_sip, call_over_twilio
from tests.integration.test_telnyx import answered_line
from tests.integration.test_twilio import wait_session
from tests.phone_carrier import eventually
from tests.speech import speak
from tests.webrtc_client import typed_turn

TYPED = "What is the status of order 4567?"
# What the calls said, as the words, the tool's argument and its answer would be kept.
CANARIES = [re.compile(rb"(?<![0-9A-Za-z_])4567(?![0-9A-Za-z_])"), re.compile(rb"(?i)status of (the )?order"),
            re.compile(rb"(?i)four five six"), re.compile(rb"(?i)shipped")]
AUDIO_SUFFIXES = {".wav", ".ulaw", ".alaw", ".opus", ".ogg", ".pcm", ".raw", ".mp3"}


def found(data: bytes) -> list[str]:
    return [pattern.pattern.decode() for pattern in CANARIES if pattern.search(data)]


@pytest.fixture(scope="module")
def zdr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarrierServer]:
    server = start_carrier_server(tmp_path_factory.mktemp("zdr"), zero_retention=True,
                                  webrtc_host_addresses=["127.0.0.1"])
    yield server
    server.live.embedded.stop()
    server.api.stop()


def on_disk(directory: Path) -> dict[str, list[str]]:
    """Each file under `directory` (the demo tool's own order database aside) and what it holds of the calls."""
    return {str(path): found(path.read_bytes()) for path in directory.rglob("*")
            if path.is_file() and path.name != "acme.db"}


def database(live: LiveServer) -> Path:
    return Path(live.embedded.settings.database_url.split("///", 1)[1])


def every_table(live: LiveServer, calls: set[str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (of these calls only, when given)."""
    with sqlite3.connect(database(live)) as sql:
        tables = [name for (name,) in sql.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for table in tables:
            columns = [c[1] for c in sql.execute(f"PRAGMA table_info({table})")]
            if calls is not None and "call_id" not in columns and table != "calls":
                continue
            key = "id" if table == "calls" else "call_id"
            found_rows = sql.execute(f"SELECT * FROM {table}").fetchall()  # names from sqlite_master
            if calls is not None:
                index = columns.index(key)
                found_rows = [row for row in found_rows if row[index] in calls]
            rows[table] = found_rows
    return rows


async def ended(live: LiveServer, session_id: str) -> None:
    def done() -> bool:
        with sqlite3.connect(database(live)) as sql:
            return bool(sql.execute("SELECT 1 FROM calls WHERE id = ? AND ended_at IS NOT NULL",
                                    (session_id,)).fetchone())

    await eventually(done, 15, f"the end of call {session_id}")


async def call_over_websocket(live: LiveServer) -> str:
    session_id, reply = await ask_for_order(live, live.api_key)
    assert "shipped" in reply.lower(), reply
    return session_id


async def call_over_webrtc(live: LiveServer) -> str:
    session_id, caller = await typed_turn(live.base_url, live.api_key, TYPED)
    done = next(e for e in caller.events if e["type"] == "response.done")
    assert "shipped" in json.dumps(done["response"]["output"]).lower(), done
    return session_id


async def call_over_telnyx(server: CarrierServer) -> str:
    live = server.live
    line = await answered_line(server)
    try:
        session = await wait_session(server, line.call_control_id)
        await line.wait_audio(time.monotonic(), min_s=1.5, within_s=30)
        line.say(speak(REQUEST, rate=8000))
        call = session.caller
        await eventually(lambda: answer_played(session, lambda: call.output and call.output.playout), 60,
                         "the reply played out over Telnyx")
        assert "ship" in session.conversation.visible()[-1].text.lower()
        await asyncio.to_thread(live.embedded.run, session.hang_up(ENDED_BY_AGENT))
        await asyncio.wait_for(line.closed.wait(), timeout=10)
    finally:
        await line.close()
    return str(session.id)


async def test_a_zero_retention_call_on_each_transport_leaves_nothing_behind(
        zdr: CarrierServer, tmp_path: Path) -> None:
    live = zdr.live
    with debug_log() as log:
        sessions = {"realtime_ws": await call_over_websocket(live), "webrtc": await call_over_webrtc(live)}
        audio = speak(REQUEST, rate=8000)
        twilio = await call_over_twilio(zdr, audio)
        assert "ship" in twilio.assistant()[1].text.lower()  # the words were said, and answered
        sessions["twilio"] = twilio.session.id
        sessions["telnyx"] = await call_over_telnyx(zdr)
        sip = await call_over_sip(zdr, tmp_path, audio)
        assert "ship" in sip.assistant()[1].text.lower()
        sessions["sip"] = sip.session.id
        for session_id in sessions.values():
            await ended(live, session_id)
    logged = log.getvalue()

    tables = every_table(live)
    # Each call is there, with its counters and timings, and the tool ran: what it was told and answered is not.
    calls = {row[0]: row for row in tables["calls"]}
    assert set(sessions.values()) <= set(calls)
    with sqlite3.connect(database(live)) as sql:
        for transport, session_id in sessions.items():
            call = sql.execute("SELECT transport, caller, turns, duration_s, metadata FROM calls WHERE id = ?",
                               (session_id,)).fetchone()
            assert call[0] == transport and call[1] is None and call[3] is not None, call
            assert json.loads(call[4])["zero_retention"] is True
            tools = sql.execute("SELECT name, status, arguments, output, duration_ms FROM tool_calls "
                                "WHERE call_id = ?", (session_id,)).fetchall()
            assert [(name, status, arguments, output) for name, status, arguments, output, _ in tools] == [
                ("lookup_order", "completed", None, None)], (transport, tools)
            assert tools[0][4] is not None
            texts = sql.execute("SELECT text FROM call_items WHERE call_id = ?", (session_id,)).fetchall()
            assert texts and all(text is None for (text,) in texts), (transport, texts)
    for table, rows in tables.items():
        assert not found(repr(rows).encode()), (table, found(repr(rows).encode()))

    assert "TEXT" not in logged or "conversation.item" not in logged  # no WebSocket frame was logged
    assert "session" in logged  # the log was captured, at debug level
    assert not found(logged.encode()), [line for line in logged.splitlines() if found(line.encode())][:5]

    files = on_disk(live.embedded.data_dir)
    assert str(database(live)) in files, "the gateway's data directory holds its database at least"
    assert not [path for path in files if Path(path).suffix.lower() in AUDIO_SUFFIXES]
    assert not {path: held for path, held in files.items() if held}


async def test_without_zero_retention_the_same_inspection_finds_the_call(live_server: LiveServer) -> None:
    with debug_log() as log:
        session_id = await call_over_websocket(live_server)
        await ended(live_server, session_id)
    rows = every_table(live_server, {session_id})
    assert len(found(repr(rows["call_items"]).encode())) >= 3, rows["call_items"]
    assert found(repr(rows["tool_calls"]).encode()), rows["tool_calls"]
    assert found(log.getvalue().encode()), "the debug log of an ordinary call holds what it said"
    assert any(on_disk(database(live_server).parent).values())


def test_an_agent_alone_can_ask_for_zero_retention(tmp_path: Path) -> None:
    from voxgate.config import Settings
    from voxgate.gateway import Gateway

    for name, zero in (("intake", True), ("desk", False)):
        (tmp_path / f"{name}.yaml").write_text(json.dumps({"name": name, "engine": "echo", "zero_retention": zero}))
    gateway = Gateway(Settings(agents_dir=tmp_path, default_agent="desk", database_url="sqlite:///:memory:"))
    assert gateway.zero_retention(gateway.agents["intake"]) and gateway.tools["intake"].zero_retention
    assert not gateway.zero_retention(gateway.agents["desk"]) and not gateway.tools["desk"].zero_retention
    everyone = Gateway(Settings(agents_dir=tmp_path, default_agent="desk", database_url="sqlite:///:memory:",
                                zero_retention=True))
    assert everyone.zero_retention(everyone.agents["desk"])

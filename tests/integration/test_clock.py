"""The gateway's clock reaches what callers hear: a gateway pinned to a year's end speaks next year's dates.

`clock_start` pins the wall clock that the demo data, the tools and the flow brain's relative dates read,
so a spoken date depends on the gateway's clock and never on the day the suite runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server


@pytest.fixture(scope="module")
def year_end(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("year-end")  # holds the gateway's store and the demo's acme.db
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACME_DB", str(tmp / "acme.db"))  # demo data of its own, dated by this gateway's clock
        live = start_server(tmp, engine="local", clock_start="2026-12-30T16:00:00")  # a Wednesday afternoon
        yield live
        live.embedded.stop()


async def ask(live: LiveServer, text: str) -> str:
    client = AsyncOpenAI(api_key=live.api_key, base_url=f"{live.base_url}/v1", websocket_base_url=f"{live.ws_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": text}]})
        await conn.response.create()
        reply = ""
        async for event in conn:
            if event.type == "response.output_text.delta":
                reply += event.delta
            if event.type == "response.done":
                return reply
    raise AssertionError("the connection closed before response.done")


async def test_a_delivery_two_days_after_new_years_eve_eve_is_next_year(year_end: LiveServer) -> None:
    reply = await ask(year_end, "Where is my order 4567?")
    assert "Friday, January 1" in reply, reply


async def test_tomorrow_is_new_years_eve(year_end: LiveServer) -> None:
    await ask(year_end, "I'd like to book an appointment tomorrow at 10 am")
    with closing(sqlite3.connect(year_end.embedded.data_dir / "acme.db")) as db:
        booked = db.execute("SELECT date, time FROM appointments").fetchall()
    assert booked == [("2026-12-31", "10:00")]

"""Real headless Chromium loads /dashboard after the scripted calls (tests/scripted_calls.py) and a live one:
the KPI tiles, live calls, budget bars, cost and a call's timeline show what the stats API says.
Set VOXGATE_UPDATE_SCREENSHOT=1 to refresh docs/dashboard.png."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import websockets

from tests.conftest import LiveServer
from tests.e2e.chromium import Chromium, Page
from tests.scripted_calls import SCRIPT, T0, scripted_gateway

DOCS = Path(__file__).resolve().parents[2] / "docs"
WINDOW = {"since": T0.isoformat(), "until": "2026-03-03T00:00:00+00:00"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = scripted_gateway(tmp_path_factory.mktemp("dashboard"))
    yield live
    live.embedded.stop()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    browser = await Chromium.launch()
    try:
        tab = await browser.page()
        # Tall enough for the whole board in one screenshot.
        await tab.send("Emulation.setDeviceMetricsOverride", width=1280, height=1640, deviceScaleFactor=1, mobile=False)
        yield tab
    finally:
        await browser.close()


def shown(name: str, value: float | None) -> str:
    """The page's formatting of a KPI (dashboard.js formatKpi), as the operator reads it."""
    if value is None:
        return "–"
    if name.endswith("_ms"):
        return f"{round(value)} ms"
    if name == "buffer_overflows":
        return f"{value:g}"
    return f"{value * 100:.1f} %"


async def test_the_dashboard_shows_what_the_stats_api_says(gateway: LiveServer, page: Page) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth) as api, \
            websockets.connect(f"{gateway.ws_url}/v1/realtime", additional_headers=gateway.auth) as live_call:
        live_id = json.loads(await live_call.recv())["session"]["id"]
        stats = (await api.get("/v1/stats", params=WINDOW)).json()
        cost = (await api.get("/v1/stats/cost", params=WINDOW)).json()

        # The key and the window travel in the fragment; the page drops them from its address at once.
        await page.goto(f"{gateway.base_url}/dashboard#{urlencode({'key': gateway.api_key, **WINDOW})}")
        await page.wait_for("window.__dashboard.loaded && window.__dashboard.call !== null", within=30)
        assert await page.evaluate("location.hash") == ""

        tiles = await page.evaluate("""Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map(
            t => [t.dataset.kpi, [t.querySelector('.value').textContent, t.className]]))""")
        for name, check in stats["targets"].items():
            text, classes = tiles[name]
            assert text == shown(name, check["value"]), (name, text, check)
            assert ("missed" in classes) == (check["met"] is False) and ("met" in classes.split()) == bool(check["met"])
        assert tiles["calls"][0] == str(stats["calls"]) == str(len(SCRIPT))
        assert tiles["drop_rate"][0] == "10.0 %" and "missed" in tiles["drop_rate"][1]  # 1 drop in 10 calls
        assert tiles["escalation_rate"][0] == "10.0 %" and "met" in tiles["escalation_rate"][1].split()

        live_rows = await page.evaluate("[...document.querySelectorAll('#live tbody tr')].map(r => r.dataset.call)")
        assert live_rows == [live_id]
        recent = await page.evaluate("[...document.querySelectorAll('#recent tbody tr')].map(r => r.dataset.call)")
        assert recent == [f"sess_scripted_{n}" for n in reversed(range(len(SCRIPT)))]
        # The budget: one stacked bar per transport with calls, a segment per stage the turns reached.
        bars = await page.evaluate("""Object.fromEntries([...document.querySelectorAll('#budget .bar-row')].map(
            r => [r.dataset.transport, [...r.querySelectorAll('[data-stage]')].map(s => s.dataset.stage)]))""")
        assert set(bars) == {"sip", "twilio", "webrtc", "realtime_ws"}
        assert bars["sip"] == list(stats["latency_budget_ms"])[:6]
        total = await page.evaluate("document.getElementById('cost-total').textContent")
        assert f"${cost['total']['cost_usd']:.2f}" in total and f"${cost['total']['human_cost_usd']:.2f}" in total
        assert await page.evaluate("document.querySelectorAll('#histogram canvas, #cost canvas').length") == 2
        # One call's timeline: pick the dropped one (its turn, tool call and barge-in on a time axis).
        await page.evaluate("document.querySelector('#recent tr[data-call=sess_scripted_4]').click()")
        await page.wait_for("window.__dashboard.call.id === 'sess_scripted_4'")
        assert "sess_scripted_4" in await page.evaluate("document.getElementById('timeline-call').textContent")
        if os.environ.get("VOXGATE_UPDATE_SCREENSHOT"):
            await page.screenshot(DOCS / "dashboard.png")

        # The page hangs up a live call with the operator's key.
        await page.evaluate("document.querySelector('#live button.hangup').click()")
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await live_call.recv()

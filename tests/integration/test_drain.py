"""Drain and crash recovery with a real `voxgate serve` process.

SIGTERM: /readyz goes 503, new calls are refused on every transport, live calls may end on their own for
`drain_timeout_s`; then a WebSocket caller hears the goodbye and is closed 1001, a phone caller is handed
to the agent's escalation target, both recorded `drained`, and the process exits 0. kill -9 leaves a call
`active`; the next start on the same database closes it as `dropped`."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.phone_carrier import CarrierApiRecorder, TwilioLine, eventually_true, twilio_sign, twilio_voice_form
from tests.serve_process import KEY, Serve

TWILIO_TOKEN = "twilio-drain-token"
GOODBYE = "I'm sorry, this line has to close for a moment. Please call back shortly. Goodbye."


@pytest.fixture
def carrier_api() -> Iterator[CarrierApiRecorder]:
    api = CarrierApiRecorder().start()
    yield api
    api.stop()


async def open_call(serve: Serve) -> tuple[ClientConnection, str]:
    ws = await websockets.connect(f"{serve.ws_url}/v1/realtime?model=x&agent=echo",
                                  additional_headers={"Authorization": f"Bearer {KEY}"})
    created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    return ws, str(created["session"]["id"])


async def not_ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 503


def stored_call(db: Path, call_id: str) -> dict[str, Any]:
    with sqlite3.connect(db) as sql:
        sql.row_factory = sqlite3.Row
        row = sql.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
    assert row is not None, f"no record of {call_id}"
    return dict(row)


async def wait_exit(process: subprocess.Popen[bytes], within_s: float) -> int:
    deadline = time.monotonic() + within_s
    while process.poll() is None:
        assert time.monotonic() < deadline, "the gateway did not exit"
        await asyncio.sleep(0.1)
    return int(process.returncode)


async def test_sigterm_refuses_new_calls_says_goodbye_hands_phones_over_and_exits(
        tmp_path: Path, carrier_api: CarrierApiRecorder) -> None:
    db = tmp_path / "voxgate.db"
    serve = Serve(tmp_path, f"sqlite+aiosqlite:///{db}", drain_timeout_s="1", drain_goodbye_timeout_s="30",
                  twilio_auth_token=TWILIO_TOKEN, twilio_api_base=carrier_api.url)
    try:
        await serve.ready()
        ws, ws_call = await open_call(serve)
        line = await TwilioLine.call(serve.base_url, TWILIO_TOKEN, agent="acme")  # acme hands over to +15550100
        async with httpx.AsyncClient(base_url=serve.base_url) as http:
            async def both_up() -> bool:
                return bool((await http.get("/readyz")).json()["calls"]["active"] == 2)

            await eventually_true(both_up, 30, "the phone call admitted too")
            serve.process.send_signal(signal.SIGTERM)
            await eventually_true(lambda: not_ready(http), 30, "/readyz turning 503")
            ready = (await http.get("/readyz")).json()
            assert ready["status"] == "draining" and ready["calls"]["accepting"] is False

            # New calls are turned away on every transport while the live ones carry on.
            async with websockets.connect(f"{serve.ws_url}/v1/realtime?model=x",
                                          additional_headers={"Authorization": f"Bearer {KEY}"}) as refused:
                event = json.loads(await refused.recv())
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await refused.recv()
            assert event["error"]["code"] == "server_draining"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            offer = await http.post("/v1/realtime/calls", content="v=0\r\n", headers={
                "Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"})
            assert offer.status_code == 503 and offer.headers["retry-after"] == "30"
            form = twilio_voice_form("CAlate")
            voice = await http.post("/twilio/voice", data=form, headers={
                "X-Twilio-Signature": twilio_sign(f"{serve.base_url}/twilio/voice", form, TWILIO_TOKEN)})
            assert '<Reject reason="busy"/>' in voice.text

        # After drain_timeout_s, the WebSocket caller hears the goodbye, then the socket closes 1001.
        heard = ""
        with pytest.raises(websockets.ConnectionClosed) as ended:
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "response.output_audio_transcript.delta":
                    heard += event["delta"]
        assert heard == GOODBYE
        assert ended.value.rcvd is not None and ended.value.rcvd.code == 1001

        # The phone caller is handed to a person through the carrier.
        transfer = await carrier_api.wait_for(f"/Calls/{line.call_sid}.json", within_s=30)
        assert "<Dial>+15550100</Dial>" in transfer.form()["Twiml"]
        await line.close()

        assert await wait_exit(serve.process, within_s=60) == 0
    finally:
        serve.stop()
    spoken = stored_call(db, ws_call)
    assert (spoken["status"], spoken["end_reason"]) == ("drained", "drained: goodbye")
    with sqlite3.connect(db) as sql:
        phone = sql.execute("SELECT status, end_reason FROM calls WHERE transport = 'twilio'").fetchall()
    assert phone == [("drained", "drained: handed to the escalation target")]


async def test_calls_that_end_during_the_drain_are_recorded_as_they_ended_and_the_process_exits_then(
        tmp_path: Path) -> None:
    db = tmp_path / "voxgate.db"
    serve = Serve(tmp_path, f"sqlite+aiosqlite:///{db}", drain_timeout_s="600")
    try:
        await serve.ready()
        ws, call_id = await open_call(serve)
        serve.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=serve.base_url) as http:
            await eventually_true(lambda: not_ready(http), 30, "/readyz turning 503")
        await ws.close()  # the caller finishes on their own
        assert await wait_exit(serve.process, within_s=120) == 0  # long before the 600 s deadline
    finally:
        serve.stop()
    record = stored_call(db, call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "client_closed")


async def test_calls_left_active_by_a_crash_are_closed_as_dropped_at_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "voxgate.db"
    first = Serve(tmp_path, f"sqlite+aiosqlite:///{db}", node_id="node-a")
    try:
        await first.ready()
        ws, call_id = await open_call(first)
        async with httpx.AsyncClient(base_url=first.base_url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            async def recorded() -> bool:
                return (await http.get(f"/v1/calls/{call_id}")).status_code == 200

            await eventually_true(recorded, 30, "the call's record written")
        first.process.kill()  # kill -9: no drain, no end of call
        first.process.wait(timeout=30)
    finally:
        first.stop()
    assert stored_call(db, call_id)["status"] == "active"
    await ws.close()

    second = Serve(tmp_path, f"sqlite+aiosqlite:///{db}", node_id="node-a")
    try:
        await second.ready()
        async with httpx.AsyncClient(base_url=second.base_url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            record = (await http.get(f"/v1/calls/{call_id}")).json()
            kpis = (await http.get("/v1/kpis")).json()
    finally:
        second.stop()
    assert (record["status"], record["end_reason"]) == ("dropped", "gateway restarted")
    assert record["ended_at"] is not None
    assert kpis["active"] == 0

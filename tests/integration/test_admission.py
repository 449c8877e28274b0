"""Admission control on a live gateway: beyond the limit every transport refuses cleanly (WebSocket 1013
after an `error` event, WebRTC 503 with Retry-After, Twilio TwiML busy, Telnyx a `reject` command), the
admitted calls carry on, and a call that ends frees its slot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import LiveServer, start_server
from tests.phone_carrier import (
    CarrierApiRecorder,
    TwilioLine,
    eventually,
    eventually_true,
    twilio_voice_form,
    twilio_voice_webhook,
)

KEY, OTHER_KEY = "sk-admission-1", "sk-admission-2"


@pytest.fixture
def carrier_api() -> Iterator[CarrierApiRecorder]:
    api = CarrierApiRecorder().start()
    yield api
    api.stop()


@pytest.fixture
def gateway(tmp_path: Path, carrier_api: CarrierApiRecorder) -> Iterator[LiveServer]:
    """Echo engine, two calls at most; carrier webhooks unsigned (dev mode, no signing secrets)."""
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=f"{KEY},{OTHER_KEY}", max_calls=2,
                        telnyx_api_base=carrier_api.url, telnyx_api_key="KEYtest", twilio_api_base=carrier_api.url)
    yield live
    live.embedded.stop()


async def open_call(live: LiveServer, key: str = KEY) -> ClientConnection:
    ws = await websockets.connect(f"{live.ws_url}/v1/realtime?model=x",
                                  additional_headers={"Authorization": f"Bearer {key}"})
    assert json.loads(await ws.recv())["type"] == "session.created"
    return ws


async def refused_call(live: LiveServer, key: str = KEY) -> tuple[dict[str, Any], int | None]:
    """The `error` event and close code a refused WebSocket call gets."""
    async with websockets.connect(f"{live.ws_url}/v1/realtime?model=x",
                                  additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        event = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    return event, closed.value.rcvd.code if closed.value.rcvd else None


async def a_turn(ws: ClientConnection) -> str:
    """A text turn on a live call: its events still flow."""
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    while (event := json.loads(await ws.recv()))["type"] != "response.done":
        pass
    return str(event["response"]["status"])


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.split("{")[0].split(" ")[0] == name and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in /metrics")


async def calls_now(http: httpx.AsyncClient) -> dict[str, Any]:
    calls: dict[str, Any] = (await http.get("/readyz")).json()["calls"]
    return calls


async def until_active(http: httpx.AsyncClient, active: int) -> None:
    """Wait until the gateway counts `active` admitted calls (a call's end is seen a moment later)."""

    async def counted() -> bool:
        return bool((await calls_now(http))["active"] == active)

    await eventually_true(counted, 30, f"{active} admitted calls")


async def test_beyond_the_limit_every_transport_refuses_and_admitted_calls_carry_on(
        gateway: LiveServer, carrier_api: CarrierApiRecorder) -> None:
    first, second = await open_call(gateway), await open_call(gateway, OTHER_KEY)
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        assert await calls_now(http) == {"active": 2, "limit": 2, "available": 0, "per_key_limit": 0,
                                         "accepting": False}

        event, code = await refused_call(gateway)
        assert code == 1013
        assert event["type"] == "error"
        assert (event["error"]["type"], event["error"]["code"]) == ("server_error", "server_at_capacity")

        offer = await http.post("/v1/realtime/calls", content="v=0\r\n", headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"})
        assert offer.status_code == 503 and offer.headers["retry-after"] == "5"
        assert offer.json()["error"]["code"] == "server_at_capacity"

        voice = await http.post("/twilio/voice", data=twilio_voice_form("CAfull"))
        assert voice.status_code == 200
        assert '<Reject reason="busy"/>' in voice.text and "<Stream" not in voice.text

        webhook = await http.post("/telnyx/webhook", json={"data": {"event_type": "call.initiated", "payload": {
            "call_control_id": "v3:full", "direction": "incoming"}}})
        assert webhook.status_code == 200
        reject = await carrier_api.wait_for("/actions/reject", within_s=10)
        assert "v3%3Afull" in reject.path and reject.json() == {"cause": "USER_BUSY"}
        assert not [r for r in carrier_api.requests if r.path.endswith("/answer")]

        # The admitted calls carry on while the others are turned away.
        assert await a_turn(first) == "completed"
        assert await a_turn(second) == "completed"

        metrics = (await http.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})).text
        for transport in ("realtime_ws", "webrtc", "twilio", "telnyx"):
            assert metric(metrics, "voxgate_calls_refused_total", reason="capacity", transport=transport) >= 1
        assert metric(metrics, "voxgate_calls_limit") == 2

        # A call that ends frees its slot.
        await first.close()
        await until_active(http, 1)
        third = await open_call(gateway)
        assert await a_turn(third) == "completed"
        await third.close()
    await second.close()


async def test_a_key_at_its_limit_is_refused_while_other_keys_get_in(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", default_agent="echo", api_keys=f"{KEY},{OTHER_KEY}", max_calls=5,
                        max_calls_per_key=1)
    try:
        held = await open_call(live)
        event, code = await refused_call(live)
        assert code == 1013
        assert (event["error"]["type"], event["error"]["code"]) == ("invalid_request_error", "key_call_limit_reached")
        async with httpx.AsyncClient(base_url=live.base_url) as http:
            offer = await http.post("/v1/realtime/calls", content="v=0\r\n", headers={
                "Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"})
            assert offer.status_code == 429 and offer.headers["retry-after"] == "5"
            assert offer.json()["error"]["code"] == "key_call_limit_reached"
            # A browser's ephemeral key counts against the key that minted it, and is not spent when refused.
            minted = (await http.post("/v1/realtime/client_secrets", json={},
                                      headers={"Authorization": f"Bearer {KEY}"})).json()["value"]
            event, code = await refused_call(live, minted)
            assert (code, event["error"]["code"]) == (1013, "key_call_limit_reached")
            other = await open_call(live, OTHER_KEY)
            assert await a_turn(other) == "completed"
            assert (await calls_now(http))["per_key_limit"] == 1
        await held.close()
        async with httpx.AsyncClient(base_url=live.base_url) as http:
            await until_active(http, 1)
        browser = await open_call(live, minted)  # the same ephemeral key, now that its minter has room
        await browser.close()
        await other.close()
    finally:
        live.embedded.stop()


async def test_a_phone_call_is_admitted_at_its_webhook_and_its_media_socket_takes_that_slot(
        gateway: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        ws_url, parameters = await twilio_voice_webhook(gateway.base_url, None, twilio_voice_form("CAreserved"),
                                                        agent="echo")
        assert (await calls_now(http))["active"] == 1  # held for the media socket

        webhook = await http.post("/telnyx/webhook", json={"data": {"event_type": "call.initiated", "payload": {
            "call_control_id": "v3:ringing", "direction": "incoming"}}})
        assert webhook.status_code == 200
        assert (await calls_now(http))["active"] == 2
        await http.post("/telnyx/webhook", json={"data": {"event_type": "call.hangup", "payload": {
            "call_control_id": "v3:ringing"}}})  # the caller gave up before the stream came
        assert (await calls_now(http))["active"] == 1

        line = await TwilioLine.dial(ws_url, None, parameters, call_sid="CAreserved")
        try:
            await eventually(lambda: len(gateway.gateway.sessions) == 1, 10, "the phone call's session")
            assert (await calls_now(http))["active"] == 1  # the reserved slot, not a second one
            ws = await open_call(gateway)  # the second slot is still free
            await ws.close()
        finally:
            await line.hang_up()
        await eventually(lambda: not gateway.gateway.sessions, 10, "the phone call's end")
        await until_active(http, 0)

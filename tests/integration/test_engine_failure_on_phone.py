"""A phone call served by the openai engine whose upstream is down: the caller is never left in
silence. The gateway apologises in the local voice, then hands the call to the agent's escalation
target through the carrier, and the call record says why."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_twilio import transcribe
from tests.phone_carrier import CarrierApiRecorder, TwilioLine
from voxgate.embedded import free_port

ACCOUNT = "AC" + "1" * 32


@pytest.fixture(scope="module")
def failing_upstream_gateway(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, CarrierApiRecorder]]:
    tmp: Path = tmp_path_factory.mktemp("dead-upstream")
    api = CarrierApiRecorder().start()
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: every connection is refused
    live = start_server(tmp, engine="openai", openai_base_url=dead, openai_api_key="sk-upstream",
                        openai_max_retries=0, twilio_api_base=api.url, dev_mode=True)
    yield live, api
    live.embedded.stop()
    api.stop()


async def test_caller_hears_an_apology_and_is_transferred(
        failing_upstream_gateway: tuple[LiveServer, CarrierApiRecorder]) -> None:
    live, api = failing_upstream_gateway
    line = await TwilioLine.call(live.base_url, None, agent="acme", caller="+15550199", account_sid=ACCOUNT)
    try:
        dialled = time.monotonic()
        heard_at = await line.wait_audio(dialled, min_s=1.5, within_s=30)
        request = await api.wait_for(f"/Calls/{line.call_sid}.json", within_s=30)
        assert request.form() == {"Twiml": "<Response><Dial>+15550100</Dial></Response>"}
        assert request.at >= line.frames[-1].at, "transferred before the apology had played"
        apology = await transcribe(line.pcm_since(heard_at))
        assert "sorry" in apology.lower() and "connect you" in apology.lower(), apology
    finally:
        await line.close()
    session_id = next(iter(live.gateway.sessions), None)
    assert session_id is None  # the call left the gateway with the transfer
    async with httpx.AsyncClient(base_url=live.base_url, headers={"Authorization": f"Bearer {live.api_key}"}) as http:
        latest = (await http.get("/v1/calls", params={"limit": 1})).json()["data"][0]
    call = await finished_call(live, latest["id"])
    assert call["status"] == "transferred"
    assert "engine" in call["end_reason"] and "sk-upstream" not in str(call)

"""The operators' API on a live gateway: KPIs and cost of scripted calls whose truth is known, calls paged by
cursor, a live call hung up (and refused a transfer it cannot take), and schemathesis fuzzing every route
against /openapi.json."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import websockets
from hypothesis import HealthCheck, given, settings
from prometheus_client import REGISTRY

from tests.conftest import CarrierServer, LiveServer, finished_call
from tests.integration.test_sip_calls import call_audio, new_sip_session, sip_port, sip_sessions
from tests.scripted_calls import SCRIPT, T0, scripted_gateway
from tests.sipp_caller import answered, invite, reply, request, run_sipp, scenario, stream
from tests.speech import silence


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = scripted_gateway(tmp_path_factory.mktemp("operators"))
    yield live
    live.embedded.stop()


@pytest.fixture
async def api(gateway: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth, timeout=20) as client:
        yield client


WINDOW = {"since": T0.isoformat(), "until": "2026-03-03T00:00:00Z"}  # the scripted calls only


async def test_stats_judge_each_kpi_of_the_scripted_calls_against_its_target(api: httpx.AsyncClient) -> None:
    stats = (await api.get("/v1/stats", params=WINDOW)).json()
    assert (stats["calls"], stats["active"], stats["turns"], stats["barge_ins"]) == (10, 0, 40, 2)
    targets = stats["targets"]
    assert targets["drop_rate"] == {"value": 0.1, "target": 0.01, "met": False}
    assert targets["tool_success_rate"] == {"value": 0.8, "target": 0.98, "met": False}
    assert targets["interruption_success_rate"] == {"value": 0.5, "target": 0.95, "met": False}
    assert targets["task_completion_rate"]["value"] == pytest.approx(0.7) and not targets["task_completion_rate"]["met"]
    assert targets["fallthrough_rate"]["value"] == pytest.approx(0.1) and not targets["fallthrough_rate"]["met"]
    assert targets["buffer_overflows"] == {"value": 1, "target": 0, "met": False}
    assert targets["escalation_rate"] == {"value": 0.1, "target": [0.1, 0.25], "met": True}
    assert targets["first_response_p95_ms"]["met"] is True and targets["first_response_p95_ms"]["value"] < 1200
    assert stats["latency_budget_ms"]["transcript"] == {"count": 10, "p50": 100.0, "p95": 100.0, "p99": 100.0}
    assert stats["average_handle_time_s"] == pytest.approx(60.0)
    twilio = (await api.get("/v1/stats", params={**WINDOW, "transport": "twilio"})).json()
    assert (twilio["calls"], twilio["drop_rate"], twilio["targets"]["buffer_overflows"]["met"]) == (2, 0.5, False)
    assert (await api.get("/v1/kpis", params={**WINDOW, "agent": "other"})).json()["calls"] == 1  # the old name
    bad = await api.get("/v1/stats", params={"transport": "carrier-pigeon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "transport"
    assert (await api.get("/v1/stats", params={"since": "last tuesday"})).json()["error"]["param"] == "since"
    assert (await httpx.AsyncClient(base_url=str(api.base_url)).get("/v1/stats")).status_code == 401


async def test_cost_of_the_scripted_calls_against_a_human(api: httpx.AsyncClient) -> None:
    report = (await api.get("/v1/stats/cost", params=WINDOW)).json()
    total = report["total"]
    assert (total["calls"], total["minutes"], total["cost_usd"]) == (10, 10.0, 0.1)
    assert total["human_cost_usd"] == 4.0 and total["savings_usd"] == 3.9  # 10 minutes at $0.40
    assert report["by_transport"]["realtime_ws"]["calls"] == 3 and report["by_agent"]["other"]["calls"] == 1
    assert list(report["by_day"]) == ["2026-03-02"]


async def test_calls_are_filtered_and_paged_by_cursor(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        query = {**WINDOW, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/calls", params=query)).json()
        seen += [call["id"] for call in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == [f"sess_scripted_{n}" for n in reversed(range(len(SCRIPT)))]  # newest first, each once
    dropped = (await api.get("/v1/calls", params={**WINDOW, "status": "dropped"})).json()["data"]
    assert [call["id"] for call in dropped] == ["sess_scripted_4"] and dropped[0]["buffer_overflow"] is True
    sip = (await api.get("/v1/calls", params={**WINDOW, "transport": "sip", "agent": "acme"})).json()["data"]
    assert {call["id"] for call in sip} == {"sess_scripted_1", "sess_scripted_2"}
    bad = await api.get("/v1/calls", params={"cursor": "not-a-cursor"})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "cursor")
    call = (await api.get("/v1/calls/sess_scripted_4")).json()
    assert call["latency"][0]["stages"]["first_audio_heard"] == 44.0 and call["barge_ins"][0]["stop_ms"] == 900.0
    assert call["tool_calls"][0]["name"] == "lookup_order" and call["fallthroughs"] == 2


def outcomes(outcome: str) -> float:
    return REGISTRY.get_sample_value("voxgate_call_outcomes_total", {"outcome": outcome}) or 0.0


async def test_a_live_call_is_hung_up_by_the_operator(gateway: LiveServer, api: httpx.AsyncClient) -> None:
    no_task_before = outcomes("no_task")
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?model=gpt-realtime",
                                  additional_headers=gateway.auth) as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
        live = (await api.get("/v1/calls", params={"status": "active"})).json()["data"]
        assert session_id in [call["id"] for call in live]
        refused = await api.post(f"/v1/calls/{session_id}/transfer", json={"target": "+15550001111"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "transfer_unsupported")
        assert (await api.post(f"/v1/calls/{session_id}/transfer", json={})).status_code == 400  # no target
        hung_up = await api.post(f"/v1/calls/{session_id}/hangup", json={"reason": "test over"})
        assert hung_up.status_code == 202 and hung_up.json() == {"id": session_id, "status": "hanging_up"}
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await ws.recv()
    call = await finished_call(gateway, session_id)
    assert call["end_reason"] == "operator hang-up: test over" and call["outcome"] == "no_task"
    assert outcomes("no_task") == no_task_before + 1  # the gateway runs in this process: its registry
    again = await api.post(f"/v1/calls/{session_id}/hangup")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "call_not_live")
    assert (await api.post("/v1/calls/sess_nope/hangup")).status_code == 404


def test_every_route_keeps_to_its_openapi_schema(gateway: LiveServer) -> None:
    """schemathesis draws requests for every operation of /openapi.json: no server error, and no answer
    (status, content type, body) outside the schema. (Driven through hypothesis directly: schemathesis'
    pytest loader does not run under this pytest.)"""
    # Every check but "schema-valid data is accepted": a cursor is opaque, and one the API never gave out is
    # refused (400, documented) however well it matches the schema's string.
    config = schemathesis.Config.from_dict({"checks": {"positive_data_acceptance": {"enabled": False}}})
    api_schema = schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json", config=config)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} == {"/v1/calls", "/v1/calls/{call_id}", "/v1/calls/{call_id}/hangup",
                                              "/v1/calls/{call_id}/transfer", "/v1/stats", "/v1/stats/cost"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=gateway.auth)

        check()


async def test_an_operator_transfers_a_live_sip_call(carrier_server: CarrierServer, tmp_path: Path) -> None:
    """POST /v1/calls/{id}/transfer on a live SIP call: once the greeting has played the gateway REFERs the
    caller to the operator's number, SIPp accepts and reports success, and the record says transferred."""
    live = carrier_server.live
    call_audio(tmp_path, silence(1000, 8000))
    notify = "Event: refer\nSubscription-State: {state}"
    xml = scenario(
        "operator transfer", invite(), answered(), request("ACK", 1), stream("caller.ulaw"),
        '  <recv request="REFER">\n    <action><ereg regexp="Refer-To: &lt;sip:\\+15550199@" search_in="msg" '
        'check_it="true" assign_to="target"/></action>\n  </recv>\n', reply(202, "Accepted"),
        request("NOTIFY", 2, body="SIP/2.0 200 OK\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="terminated;reason=noresource")), '  <recv response="200"/>\n',
        '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("target",))
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server)))
    session = await new_sip_session(carrier_server, before, caller)
    async with httpx.AsyncClient(base_url=live.base_url, headers=live.auth) as api:
        moved = await api.post(f"/v1/calls/{session.id}/transfer", json={"target": "+15550199", "reason": "VIP"})
        assert moved.status_code == 202 and moved.json() == {"id": session.id, "status": "transferring"}
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(live, session.id)
    assert record["status"] == "transferred" and record["outcome"] == "escalated", record
    assert record["end_reason"].startswith("transferred: operator transfer: VIP"), record

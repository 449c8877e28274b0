"""Agents behind OpenAI's SIP: a live gateway takes OpenAI's signed `realtime.call.incoming` webhooks,
accepts the call upstream with the agent's session, and runs the call's gateway side over the sideband.

OpenAI is played by a stand-in on loopback (tests/openai_sip_upstream.py: its routes, bodies and the 404
of an ended call's sideband, as the reference gives them); the end-to-end test with a second voxgate
playing OpenAI, and sipp on the phone, is tests/integration/test_openai_sip_e2e.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer, finished_call, start_server
from tests.openai_sip_upstream import StandInOpenAI
from voxgate.control.standard_webhooks import sign

SECRET = "whsec_" + base64.b64encode(b"voxgate-openai-sip-test-secret!!").decode()
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
SUPPORT = "+14155550100"


@pytest.fixture(scope="module")
def upstream_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream_port: int) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("openai-sip")
    os.environ.setdefault("ACME_DB", str(tmp / "acme.db"))
    live = start_server(tmp, engine="echo", dev_mode=False, sip_port=0, openai_webhook_secret=SECRET,
                        openai_api_key=UPSTREAM_KEY, openai_base_url=f"http://127.0.0.1:{upstream_port}/v1",
                        openai_sip_routes=[{"header": "from", "match": "+4930*", "agent": "echo"},
                                           {"header": "to", "match": SUPPORT, "agent": "acme"}],
                        openai_sip_api_timeout_s=2.0, openai_connect_timeout_s=5.0)
    yield live
    live.embedded.stop()


@pytest.fixture
async def upstream(upstream_port: int) -> AsyncIterator[StandInOpenAI]:
    stand_in = await StandInOpenAI(port=upstream_port).start()
    yield stand_in
    await stand_in.stop()


def incoming(call_id: str, to: str = SUPPORT, caller: str = "+12125550123", event_id: str = "evt_1") -> bytes:
    return json.dumps({"object": "event", "id": event_id, "type": "realtime.call.incoming",
                       "created_at": int(time.time()),
                       "data": {"call_id": call_id, "sip_headers": [
                           {"name": "From", "value": f"<sip:{caller}@carrier.example>;tag=1"},
                           {"name": "To", "value": f"<sip:{to}@sip.api.openai.com>"},
                           {"name": "Call-ID", "value": "abc@carrier"}]}}).encode()


def signed(body: bytes, *, webhook_id: str, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return {**sign(secret, webhook_id, int(time.time() if at is None else at), body),
            "content-type": "application/json", "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"}


async def webhook_counts(http: httpx.AsyncClient, live: LiveServer) -> dict[str, float]:
    text = (await http.get(f"{live.base_url}/metrics", headers=live.auth)).text
    return {sample.labels["result"]: sample.value for family in text_string_to_metric_families(text)
            if family.name == "voxgate_openai_sip_webhooks" for sample in family.samples
            if sample.name.endswith("_total")}


async def post(http: httpx.AsyncClient, live: LiveServer, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await http.post(f"{live.base_url}/openai/sip/webhook", content=body, headers=headers)


@pytest.mark.parametrize(("case", "status", "code"), [
    ("unsigned", 401, "missing_header"),
    ("forged", 401, "bad_signature"),  # signed with another secret
    ("tampered", 401, "bad_signature"),  # a real signature over another body
    ("stale", 400, "stale"),  # 310 s old
    ("future", 400, "future"),
    ("not_json", 400, "invalid_body"),
    ("no_call_id", 400, "invalid_body"),
    ("bad_timestamp", 400, "malformed"),
])
async def test_bad_deliveries_are_refused_with_a_problem_and_counted(
        gateway: LiveServer, upstream: StandInOpenAI, case: str, status: int, code: str) -> None:
    body = incoming(f"rtc_{case}")
    headers = signed(body, webhook_id=f"wh_{case}")
    if case == "unsigned":
        headers = {"content-type": "application/json"}
    elif case == "forged":
        headers = signed(body, webhook_id="wh_forged", secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    elif case == "tampered":
        body = incoming("rtc_someone_else")
    elif case == "stale":
        headers = signed(body, webhook_id="wh_stale", at=time.time() - 310)
    elif case == "future":
        headers = signed(body, webhook_id="wh_future", at=time.time() + 310)
    elif case == "not_json":
        body = b"{not json"
        headers = signed(body, webhook_id="wh_not_json")
    elif case == "no_call_id":
        body = json.dumps({"type": "realtime.call.incoming", "id": "evt", "data": {"sip_headers": []}}).encode()
        headers = signed(body, webhook_id="wh_no_call_id")
    elif case == "bad_timestamp":
        headers["webhook-timestamp"] = "yesterday"
    async with httpx.AsyncClient(timeout=20) as http:
        before = await webhook_counts(http, gateway)
        reply = await post(http, gateway, body, headers)
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert error["code"] == code and error["message"]
        assert error["type"] == "invalid_request_error"
        after = await webhook_counts(http, gateway)
    assert after[code] == before.get(code, 0) + 1
    assert upstream.requests == []  # nothing was accepted


async def test_a_replayed_delivery_is_refused_and_counted(gateway: LiveServer, upstream: StandInOpenAI) -> None:
    upstream.ring("rtc_replay")
    body = incoming("rtc_replay")
    headers = signed(body, webhook_id="wh_replay")
    async with httpx.AsyncClient(timeout=20) as http:
        before = await webhook_counts(http, gateway)
        assert (await post(http, gateway, body, headers)).status_code == 200
        sideband = await upstream.sideband("rtc_replay")
        replay = await post(http, gateway, body, headers)
        assert replay.status_code == 400
        assert replay.json()["error"]["code"] == "replayed"
        # a fresh signature does not make the same delivery new
        again = await post(http, gateway, body, signed(body, webhook_id="wh_replay", at=time.time() + 1))
        assert again.json()["error"]["code"] == "replayed"
        after = await webhook_counts(http, gateway)
    assert after["replayed"] == before.get("replayed", 0) + 2
    assert after["accepted"] == before.get("accepted", 0) + 1
    assert [r.action for r in upstream.requests] == ["accept"]  # accepted once
    upstream.end("rtc_replay")
    await sideband.drop(1000)
    assert (await finished_call(gateway, "rtc_replay", wait_s=20))["status"] == "completed"


async def test_other_webhook_events_are_acknowledged_and_ignored(gateway: LiveServer, upstream: StandInOpenAI) -> None:
    body = json.dumps({"object": "event", "id": "evt_r", "type": "response.completed", "created_at": 1,
                       "data": {"id": "resp_1"}}).encode()
    async with httpx.AsyncClient(timeout=20) as http:
        reply = await post(http, gateway, body, signed(body, webhook_id="wh_other"))
    assert reply.status_code == 200
    assert upstream.requests == []


async def test_a_call_runs_its_tools_over_the_sideband_survives_a_drop_and_is_referred(
        gateway: LiveServer, upstream: StandInOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the sideband's handshake included: the key is in none
    upstream.ring("rtc_main")
    async with httpx.AsyncClient(timeout=20) as http:
        assert (await post(http, gateway, incoming("rtc_main"), signed(incoming("rtc_main"),
                                                                       webhook_id="wh_main"))).status_code == 200
    accept = await upstream.request("rtc_main", "accept")
    assert accept.authorization == f"Bearer {UPSTREAM_KEY}"
    session = accept.body
    assert session["type"] == "realtime" and "Acme" in session["instructions"]
    assert session["tool_choice"] == "auto"
    tools = {tool["name"]: tool for tool in session["tools"]}
    assert {"lookup_order", "transfer_to_human", "end_call"} <= set(tools)
    assert tools["lookup_order"]["type"] == "function"
    assert tools["lookup_order"]["parameters"]["properties"]["order_id"]["pattern"] == "^[0-9]{4,10}$"
    assert "voice" not in session.get("audio", {}).get("output", {})  # "joe" is no voice of OpenAI's

    sideband = await upstream.sideband("rtc_main")
    assert sideband.authorization == f"Bearer {UPSTREAM_KEY}"
    opening = await sideband.receive_type("response.create")
    assert "automated assistant" in opening["response"]["instructions"]  # the AI disclosure comes first
    await sideband.send({"type": "response.created", "response": {"id": "resp_0"}})
    await sideband.send({"type": "response.done", "response": {"id": "resp_0", "status": "completed"}})

    # the caller asks; OpenAI transcribes, the model calls a gateway tool
    await sideband.send({"type": "input_audio_buffer.committed", "item_id": "item_u1"})
    await sideband.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_u1",
                         "content_index": 0, "transcript": "order 4567 please, my card is 4111 1111 1111 1111"})
    await sideband.send({"type": "response.created", "response": {"id": "resp_1"}})
    await sideband.send({"type": "response.function_call_arguments.done", "response_id": "resp_1", "item_id": "f1",
                         "output_index": 0, "call_id": "call_1", "name": "lookup_order",
                         "arguments": '{"order_id": "4567"}'})
    await sideband.send({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    output = await sideband.receive_type("conversation.item.create")
    assert output["item"]["type"] == "function_call_output" and output["item"]["call_id"] == "call_1"
    assert json.loads(output["item"]["output"])["status"] == "shipped"
    await sideband.receive_type("response.create")

    # the sideband drops: the gateway comes back on the same call id and the call goes on
    await sideband.drop(1011)
    sideband = await upstream.sideband("rtc_main")
    await sideband.send({"type": "response.created", "response": {"id": "resp_2"}})
    await sideband.send({"type": "response.output_item.done", "response_id": "resp_2", "output_index": 0, "item": {
        "id": "item_a2", "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_audio", "transcript": "Order 4567 has shipped."}]}})
    await sideband.send({"type": "response.function_call_arguments.done", "response_id": "resp_2", "item_id": "f2",
                         "output_index": 1, "call_id": "call_2", "name": "transfer_to_human",
                         "arguments": '{"reason": "wants to speak to a person"}'})
    await sideband.send({"type": "response.done", "response": {"id": "resp_2", "status": "completed",
                                                               "usage": {"total_tokens": 50, "input_tokens": 40,
                                                                         "output_tokens": 10}}})
    output = await sideband.receive_type("conversation.item.create")
    assert json.loads(output["item"]["output"]) == {"status": "transferring", "target": "+15550100"}
    await sideband.receive_type("response.create")
    # the handover line: the REFER waits until the caller has heard it
    await sideband.send({"type": "response.created", "response": {"id": "resp_3"}})
    await sideband.send({"type": "output_audio_buffer.started", "response_id": "resp_3"})
    await sideband.send({"type": "response.done", "response": {"id": "resp_3", "status": "completed"}})
    assert not [r for r in upstream.requests if r.action == "refer"]
    await sideband.send({"type": "output_audio_buffer.stopped", "response_id": "resp_3"})
    refer = await upstream.request("rtc_main", "refer")
    assert refer.body == {"target_uri": "tel:+15550100"}
    await sideband.drop(1000)  # OpenAI ends the call once it is moved

    call = await finished_call(gateway, "rtc_main", wait_s=20)
    assert call["status"] == "transferred" and call["outcome"] == "escalated"
    assert call["agent"] == "acme" and call["transport"] == "openai_sip" and call["caller"] == "+12125550123"
    assert call["end_reason"] == "transferred: wants to speak to a person"
    text = json.dumps(call)
    assert "4111 1111 1111 1111" not in text and "order 4567 please" in text  # redacted, still there
    assert "Order 4567 has shipped." in text
    assert [t["name"] for t in call["tool_calls"]] == ["lookup_order", "transfer_to_human"]
    assert all(t["side"] == "server" and t["status"] == "completed" for t in call["tool_calls"])
    assert UPSTREAM_KEY not in text
    assert caplog.records and not [r for r in caplog.records if UPSTREAM_KEY in r.getMessage()]


async def test_an_upstream_that_never_answers_fails_that_call_and_others_go_on(
        gateway: LiveServer, upstream: StandInOpenAI) -> None:
    upstream.hold_accepts.add("rtc_slow")
    upstream.ring("rtc_slow")
    upstream.ring("rtc_fast")
    async with httpx.AsyncClient(timeout=20) as http:
        for call_id in ("rtc_slow", "rtc_fast"):
            body = incoming(call_id, caller="+4930555000")  # routed to the echo agent by the caller's number
            assert (await post(http, gateway, body, signed(body, webhook_id=f"wh_{call_id}"))).status_code == 200
    await upstream.request("rtc_slow", "accept")
    sideband = await upstream.sideband("rtc_fast")  # the slow accept holds nobody up
    # the echo agent has no tools: the model may call one anyway, and hears it does not exist
    await sideband.send({"type": "response.function_call_arguments.done", "call_id": "c", "name": "end_call",
                         "arguments": "{}"})
    output = await sideband.receive_type("conversation.item.create")
    assert json.loads(output["item"]["output"])["error"]["type"] == "unknown_tool"
    slow = await finished_call(gateway, "rtc_slow", wait_s=20)
    assert slow["status"] == "failed" and "no answer within 2 s" in slow["end_reason"]
    assert slow["agent"] == "echo"
    await sideband.drop(1000)
    upstream.end("rtc_fast")  # the call is over: the reattach gets 404
    fast = await finished_call(gateway, "rtc_fast", wait_s=20)
    assert fast["status"] == "completed" and fast["agent"] == "echo"


async def test_an_unconfigured_gateway_refuses_every_delivery(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", sip_port=0)  # no webhook secret, no key
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            body = incoming("rtc_x")
            reply = await post(http, live, body, signed(body, webhook_id="wh_x"))
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "not_configured"
    finally:
        live.embedded.stop()




async def test_a_menu_key_a_refused_transfer_and_a_hang_up(gateway: LiveServer, upstream: StandInOpenAI) -> None:
    """A key on the agent's menu reaches the model as the caller's choice; a refer the upstream refuses leaves
    the call with the agent (its tools still answer); end_call hangs up once the goodbye is done."""
    upstream.ring("rtc_keys")
    upstream.refuse_refers.add("rtc_keys")
    async with httpx.AsyncClient(timeout=20) as http:
        body = incoming("rtc_keys")
        assert (await post(http, gateway, body, signed(body, webhook_id="wh_keys"))).status_code == 200
    sideband = await upstream.sideband("rtc_keys")
    await sideband.receive_type("response.create")  # the opening
    await sideband.reply("resp_0")
    await sideband.send({"type": "input_audio_buffer.dtmf_event_received", "event": "1", "received_at": 1})
    choice = await sideband.receive_type("conversation.item.create")
    assert choice["item"]["role"] == "user" and "pressed 1" in choice["item"]["content"][0]["text"]
    assert "check_order" in choice["item"]["content"][0]["text"]  # acme's menu: 1 checks an order
    await sideband.receive_type("response.create")
    await sideband.reply("resp_k")

    await sideband.tool_turn("t1", "transfer_to_human", '{"reason": "asked for a person"}')
    await sideband.reply("resp_1")
    await upstream.request("rtc_keys", "refer")  # refused 409: the call stays with the agent
    output = await sideband.tool_turn("l1", "lookup_order", '{"order_id": "4567"}')
    assert output["call_id"] == "l1" and json.loads(output["output"])["status"] == "shipped"
    await sideband.reply("resp_l")

    await sideband.tool_turn("e1", "end_call", "{}")
    await sideband.reply("resp_2")
    await upstream.request("rtc_keys", "hangup")
    call = await finished_call(gateway, "rtc_keys", wait_s=20)
    assert call["status"] == "completed" and call["outcome"] == "task_completed", call
    assert call["end_reason"].startswith("transfer failed: refer: HTTP 409 (refer_failed)"), call
    assert [t["name"] for t in call["tool_calls"]] == ["transfer_to_human", "lookup_order", "end_call"]

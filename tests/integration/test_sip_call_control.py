"""OpenAI's SIP call control, served by voxgate for its own SIP calls: SIPp calls the gateway, the gateway
rings and POSTs a signed `realtime.call.incoming` to the app (a loopback HTTP server here), and the app,
written with the official openai SDK against the gateway's base URL, verifies the webhook
(`client.webhooks.unwrap`), accepts, rejects, refers or hangs up (`client.realtime.calls.*`) and steers
the call on the sideband (`client.realtime.connect(call_id=...)`).

SIPp exits 0 only when its scenario ran as written (the 180, the 200 or the refusal's code, the REFER,
the BYE); what the gateway sent over RTP is captured off loopback and transcribed. Every wait is for an
event (a webhook delivered, a sideband event, a session's state), never a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI, ConflictError, InvalidWebhookSignatureError

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_text_conversation import ORDER_STATUS_TOOL
from tests.integration.test_twilio import metric, transcribe
from tests.phone_carrier import eventually
from tests.sipp_caller import (
    RtpCapture,
    SippRun,
    answered,
    free_port,
    invite,
    reply,
    request,
    run_sipp,
    scenario,
    stream,
    ulaw_file,
)
from tests.speech import silence, speak
from voxgate.loadtest.carrier_api import ApiRequest, CarrierApiRecorder

SECRET = "whsec_" + base64.b64encode(b"voxgate call control test secret").decode()
REQUEST = "what is the status of order four five six seven"
# The app's answer to the tool: words the demo data never says, so hearing them proves the app answered.
APP_ANSWER = "Order four five six seven left our warehouse in Denver this morning."
INSTRUCTIONS = "You are the order desk of a bicycle shop. Be brief."
RINGING = '  <recv response="100" optional="true"/>\n  <recv response="180"/>\n'


@pytest.fixture(scope="module")
def app() -> Iterator[CarrierApiRecorder]:
    """The app's webhook endpoint: records every delivery, answers 200."""
    recorder = CarrierApiRecorder().start()
    yield recorder
    recorder.stop()


@pytest.fixture(scope="module")
def flaky_app() -> Iterator[CarrierApiRecorder]:
    """An app that fails its first delivery with 500 and takes the retry."""
    seen = []

    def first_fails(_: ApiRequest) -> None:
        seen.append(1)
        recorder.reply = (500, {}) if len(seen) == 1 else (200, {})

    recorder = CarrierApiRecorder(on_request=first_fails).start()
    yield recorder
    recorder.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, app: CarrierApiRecorder,
            flaky_app: CarrierApiRecorder) -> Iterator[LiveServer]:
    """Local engine, SIP on a free port; every call is the app's (`*`), except the routes that test the
    fallbacks (an app that never answers) and the retries."""
    tmp = tmp_path_factory.mktemp("call-control-gateway")
    os.environ.setdefault("ACME_DB", str(tmp / "acme.db"))
    sip_port = free_port()  # free for UDP and TCP both, as the SIP door binds both
    routes = {
        "*": {"url": f"{app.url}/hooks/main"},
        "late": {"url": f"{app.url}/hooks/late", "answer_timeout_s": 1.0},
        "closed": {"url": f"{app.url}/hooks/closed", "answer_timeout_s": 1.0, "fallback": "reject",
                   "fallback_status": 486},
        "flaky": {"url": f"{flaky_app.url}/hooks/flaky"},
    }
    live = start_server(tmp, engine="local", dev_mode=False, sip_port=sip_port, sip_call_control=routes,
                        sip_webhook_secret=SECRET, sip_webhook_retry_s=0.2)
    yield live
    live.embedded.stop()


@pytest.fixture
async def client(gateway: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    """The app's official SDK client: the gateway's base URL is the only change from OpenAI's."""
    async with AsyncOpenAI(api_key=gateway.api_key, base_url=f"{gateway.base_url}/v1",
                           websocket_base_url=f"{gateway.ws_url}/v1", webhook_secret=SECRET) as sdk:
        yield sdk


def sip_port(live: LiveServer) -> int:
    phone = live.gateway.sip
    assert phone is not None
    return int(phone.port)


async def next_webhook(app: CarrierApiRecorder, path: str, seen: int, caller: asyncio.Task[SippRun] | None = None,
                       ) -> ApiRequest:
    """The first delivery to `path` after the first `seen` ones."""

    def arrived() -> bool:
        if caller is not None and caller.done():
            run = caller.result()
            raise AssertionError(f"the caller ended first (exit {run.returncode}): {run.messages[-2000:]}")
        return len([r for r in app.requests if r.path == path]) > seen

    await eventually(arrived, 30, f"a webhook to {path}")
    return [r for r in app.requests if r.path == path][seen]


def deliveries(app: CarrierApiRecorder, path: str) -> int:
    return len([r for r in app.requests if r.path == path])


async def incoming_call(client: AsyncOpenAI, app: CarrierApiRecorder, path: str, seen: int,
                        caller: asyncio.Task[SippRun] | None = None) -> tuple[str, Any]:
    """(call id, the event) of the next `realtime.call.incoming`, verified as an app verifies OpenAI's."""
    delivery = await next_webhook(app, path, seen, caller)
    event = client.webhooks.unwrap(delivery.body, delivery.headers)
    assert event.type == "realtime.call.incoming"
    return event.data.call_id, event


async def until(conn: Any, kind: str, within_s: float = 60) -> Any:
    """Sideband events until one of `kind`."""
    async with asyncio.timeout(within_s):
        while True:
            event = await conn.recv()
            if event.type == kind:
                return event


async def test_an_app_accepts_with_its_tools_answers_a_function_call_on_the_sideband_and_refers(
        gateway: LiveServer, app: CarrierApiRecorder, client: AsyncOpenAI, tmp_path: Path) -> None:
    """The issue's end to end: SIPp calls and hears ringing; the app verifies the webhook with the SDK,
    accepts with its instructions and its own order tool, attaches to the sideband, answers the tool call
    the caller's spoken question leads to; the answer is heard (transcribed from the RTP that came back);
    then the app refers the caller (SIPp takes the REFER, reports success by NOTIFY, gets the BYE)."""
    (tmp_path / "caller.ulaw").write_bytes(ulaw_file(
        np.concatenate([silence(1500, 8000), speak(REQUEST, rate=8000), silence(500, 8000)])))
    notify = "Event: refer\nSubscription-State: {state}"
    xml = scenario(
        "app accepts and refers", invite(), RINGING, answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 1),
        stream("caller.ulaw"),
        '  <recv request="REFER">\n    <action><ereg regexp="Refer-To: &lt;tel:\\+15550100&gt;" search_in="msg" '
        'check_it="true" assign_to="target"/></action>\n  </recv>\n', reply(202, "Accepted"),
        request("NOTIFY", 2, body="SIP/2.0 100 Trying\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="active;expires=60")), '  <recv response="200"/>\n',
        request("NOTIFY", 3, body="SIP/2.0 200 OK\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="terminated;reason=noresource")), '  <recv response="200"/>\n',
        '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp", "target"))
    media = free_port()
    seen = deliveries(app, "/hooks/main")
    with RtpCapture(media) as capture:
        caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(gateway), media_port=media))
        call_id, event = await incoming_call(client, app, "/hooks/main", seen, caller)
        headers = {h.name.lower(): h.value for h in event.data.sip_headers}
        assert headers["to"].startswith("<sip:acme@") and "call-id" in headers
        await client.realtime.calls.accept(call_id, type="realtime", instructions=INSTRUCTIONS,
                                           tools=[ORDER_STATUS_TOOL])  # type: ignore[list-item]
        session = gateway.gateway.sessions[call_id]  # the call's session takes the call's id, and the app's config
        assert session.config.instructions == INSTRUCTIONS
        assert [t["name"] for t in session.config.tools] == ["get_order_status"]
        async with client.realtime.connect(call_id=call_id) as conn:
            created = await until(conn, "session.created", 10)
            assert created.session.instructions == INSTRUCTIONS
            asked = await until(conn, "response.function_call_arguments.done")
            assert asked.name == "get_order_status" and json.loads(asked.arguments) == {"order_id": "4567"}
            await conn.conversation.item.create(item={"type": "function_call_output", "call_id": asked.call_id,
                                                      "output": json.dumps({"message": APP_ANSWER})})
            await conn.response.create()
            spoken_from = time.monotonic()
            created = await until(conn, "response.created")  # the reply to the app's output
            done = await until(conn, "response.done")
            assert done.response.id == created.response.id and done.response.status == "completed"
            await eventually(lambda: session.response is None and session.caller.audio.playout.drained, 60,
                             "the answer played out")
        answer = (await transcribe(capture.pcm(since=spoken_from - 0.5))).lower()
        await client.realtime.calls.refer(call_id, target_uri="tel:+15550100")
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    assert "denver" in answer and "warehouse" in answer, answer
    record = await finished_call(gateway, call_id)
    assert record["transport"] == "sip" and record["status"] == "transferred", record
    assert record["end_reason"] == "transferred: referred by the app (REFER accepted, NOTIFY 200 OK)", record
    # The call is over: the app's later word is a conflict, not an unknown call.
    with pytest.raises(ConflictError):
        await client.realtime.calls.hangup(call_id)


async def test_bad_accepts_are_refused_the_sideband_reattaches_and_the_app_hangs_up(
        gateway: LiveServer, app: CarrierApiRecorder, client: AsyncOpenAI, tmp_path: Path) -> None:
    """While the call rings: an unknown id is 404, a session without `type` or with a bad field is 400
    naming it, and the call still waits for a good accept. Accepted, a second accept is 409. A sideband
    that drops leaves the call up, and a new one attaches and steers it. The app's hangup is a BYE."""
    xml = scenario("app hangs up", invite(), RINGING, answered(), request("ACK", 1),
                   '  <recv request="BYE"/>\n', reply(200, "OK"))
    seen = deliveries(app, "/hooks/main")
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(gateway)))
    call_id, _ = await incoming_call(client, app, "/hooks/main", seen, caller)
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth) as http:
        unknown = await http.post("/v1/realtime/calls/rtc_nosuchcall/accept", json={"type": "realtime"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "call_id_not_found"
        untyped = await http.post(f"/v1/realtime/calls/{call_id}/accept", json={"instructions": "hi"})
        assert untyped.status_code == 400 and untyped.json()["error"]["param"] == "type", untyped.text
        bad = await http.post(f"/v1/realtime/calls/{call_id}/accept", json={"type": "realtime", "tool_choice": 7})
        assert bad.status_code == 400 and "tool_choice" in (bad.json()["error"]["param"] or ""), bad.text
        keyless = await http.post(f"/v1/realtime/calls/{call_id}/accept", json={"type": "realtime"},
                                  headers={"Authorization": "Bearer sk-wrong"})
        assert keyless.status_code == 401
        not_yet = await http.post(f"/v1/realtime/calls/{call_id}/refer", json={"target_uri": "tel:+15550100"})
        assert not_yet.status_code == 409, not_yet.text
    await client.realtime.calls.accept(call_id, type="realtime", instructions="First instructions.")
    with pytest.raises(ConflictError):
        await client.realtime.calls.accept(call_id, type="realtime")
    session = gateway.gateway.sessions[call_id]
    url = f"{gateway.ws_url}/v1/realtime?call_id={call_id}"
    async with websockets.connect(url, additional_headers=gateway.auth) as first:
        assert json.loads(await first.recv())["type"] == "session.created"
    # The first sideband dropped: the call goes on, and the app attaches again.
    assert not caller.done() and not session.closed
    async with client.realtime.connect(call_id=call_id) as conn:
        await until(conn, "session.created", 10)
        await conn.session.update(session={"type": "realtime", "instructions": "Second instructions."})
        updated = await until(conn, "session.updated", 10)
        assert updated.session.instructions == "Second instructions."
    await client.realtime.calls.hangup(call_id)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(gateway, call_id)
    assert record["status"] == "completed", record


@pytest.mark.parametrize(("action", "status", "expected"),
                         [("reject", None, 603), ("reject", 486, 486), ("hangup", None, 603)])
async def test_the_app_rejects_with_603_or_its_code(gateway: LiveServer, app: CarrierApiRecorder,
                                                    client: AsyncOpenAI, tmp_path: Path, action: str,
                                                    status: int | None, expected: int) -> None:
    """`reject` answers the INVITE with 603 Decline, or the app's code; `hangup` while it rings declines."""
    xml = scenario("app rejects", invite(), RINGING, f'  <recv response="{expected}"/>\n',
                   request("ACK", 1, branch="[branch-4]"))
    seen = deliveries(app, "/hooks/main")
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(gateway)))
    call_id, _ = await incoming_call(client, app, "/hooks/main", seen, caller)
    if action == "hangup":
        await client.realtime.calls.hangup(call_id)
    elif status is None:
        await client.realtime.calls.reject(call_id)
    else:
        await client.realtime.calls.reject(call_id, status_code=status)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    with pytest.raises(ConflictError):  # rejected: accepting it now is a conflict
        await client.realtime.calls.accept(call_id, type="realtime")
    assert call_id not in gateway.gateway.sessions


async def test_an_app_that_never_answers_gets_the_routes_fallback(
        gateway: LiveServer, app: CarrierApiRecorder, client: AsyncOpenAI, tmp_path: Path) -> None:
    """Route `late`: nobody accepts within answer_timeout_s, so the default agent answers (a 200 after the
    180), and the app's accept then is a conflict. Route `closed`: the fallback refuses with its code."""
    async with httpx.AsyncClient() as http:
        before = metric((await http.get(f"{gateway.base_url}/metrics", headers=gateway.auth)).text,
                        "voxgate_sip_invites_total", outcome="app_silent")
    agent_xml = scenario("fallback agent", invite(), RINGING, answered(), request("ACK", 1),
                         '  <pause milliseconds="500"/>\n', request("BYE", 2), '  <recv response="200"/>\n')
    seen = deliveries(app, "/hooks/late")
    caller = asyncio.create_task(run_sipp(tmp_path, agent_xml, sip_port(gateway), service="late"))
    call_id, _ = await incoming_call(client, app, "/hooks/late", seen, caller)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    with pytest.raises(ConflictError, match="answered by the gateway"):
        await client.realtime.calls.accept(call_id, type="realtime")

    refusal_xml = scenario("fallback refusal", invite(), RINGING, '  <recv response="486"/>\n',
                           request("ACK", 1, branch="[branch-4]"))
    seen = deliveries(app, "/hooks/closed")
    caller = asyncio.create_task(run_sipp(tmp_path, refusal_xml, sip_port(gateway), service="closed"))
    await incoming_call(client, app, "/hooks/closed", seen, caller)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    async with httpx.AsyncClient() as http:
        after = metric((await http.get(f"{gateway.base_url}/metrics", headers=gateway.auth)).text,
                       "voxgate_sip_invites_total", outcome="app_silent")
    assert after == before + 1


async def test_a_failed_delivery_is_retried_with_the_same_webhook_id(
        gateway: LiveServer, flaky_app: CarrierApiRecorder, client: AsyncOpenAI, tmp_path: Path) -> None:
    """The app answers the first delivery 500: the retry carries the same webhook-id (and verifies), and
    the app's reject of the one call it was told of twice reaches SIPp."""
    xml = scenario("retried webhook", invite(), RINGING, '  <recv response="603"/>\n',
                   request("ACK", 1, branch="[branch-4]"))
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth) as http:
        failed_before = metric((await http.get("/metrics")).text, "voxgate_call_control_webhooks_total",
                               outcome="failed")
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(gateway), service="flaky"))
    first = await next_webhook(flaky_app, "/hooks/flaky", 0, caller)
    retry = await next_webhook(flaky_app, "/hooks/flaky", 1, caller)
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert first.body == retry.body
    event = client.webhooks.unwrap(retry.body, retry.headers)
    with pytest.raises(InvalidWebhookSignatureError):  # and signed with the secret, not merely shaped so
        client.webhooks.unwrap(retry.body, retry.headers, secret="whsec_" + base64.b64encode(b"other").decode())
    await client.realtime.calls.reject(event.data.call_id)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    assert len(flaky_app.requests) == 2  # decided: no more deliveries
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth) as http:
        assert metric((await http.get("/metrics")).text, "voxgate_call_control_webhooks_total",
                      outcome="failed") == failed_before + 1

"""Phone calls through Telnyx Call Control and media streaming, with a test carrier speaking its protocol.

The call webhook is Ed25519-signed; on `call.initiated` the gateway answers over the REST API (a local
recorder) asking for a bidirectional A-law stream with an auth token, which the test carrier echoes on
the media socket. The call then goes as on Twilio: barge-in with `clear`, a spoken order-status request
answered by voice (transcribed back), a key press, and a transfer command after the handover line.
The test carrier swaps neighbouring media frames now and then: Telnyx does not promise order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import CarrierServer
from tests.integration.test_twilio import HUMAN, REQUEST, metric, session_of, transcribe, wait_session
from tests.phone_carrier import TelnyxLine, eventually
from tests.speech import speak
from voxgate.loadtest.carrier_webhook import telnyx_call_initiated as call_initiated
from voxgate.loadtest.carrier_webhook import telnyx_signature_headers


def signed(server: CarrierServer, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Telnyx sends: Ed25519 over `timestamp|body` (reference §2.4)."""
    return telnyx_signature_headers(server.telnyx_private_key, body, timestamp)


async def answer(server: CarrierServer, http: httpx.AsyncClient, call_control_id: str,
                 agent: str = "acme") -> dict[str, Any]:
    """Deliver a signed call.initiated (for `agent`) and return the answer command the gateway sent to Telnyx."""
    body = call_initiated(call_control_id)
    response = await http.post(f"{server.live.base_url}/telnyx/webhook?agent={agent}", content=body,
                               headers=signed(server, body))
    assert response.status_code == 200, response.text
    request = await server.api.wait_for(f"/v2/calls/{quote(call_control_id, safe='')}/actions/answer", within_s=5)
    assert request.headers["authorization"] == f"Bearer {server.telnyx_api_key}"
    command: dict[str, Any] = request.json()
    return command


async def answered_line(server: CarrierServer, agent: str = "acme", **options: Any) -> TelnyxLine:
    """A new call to `agent`, answered (a signed call.initiated) and its media stream dialled in A-law."""
    call_control_id = "v3:" + uuid.uuid4().hex
    async with httpx.AsyncClient() as http:
        command = await answer(server, http, call_control_id, agent)
    return await TelnyxLine.dial(command["stream_url"], command["stream_auth_token"], call_control_id,
                                 {"agent": agent}, encoding="pcma", **options)


async def test_webhook_signature_and_answer_command(carrier_server: CarrierServer) -> None:
    live = carrier_server.live
    call_control_id = "v3:" + uuid.uuid4().hex
    async with httpx.AsyncClient() as http:
        command = await answer(carrier_server, http, call_control_id)
        assert command["stream_url"] == f"{live.ws_url}/telnyx/media"
        assert command["stream_track"] == "inbound_track"
        assert command["stream_bidirectional_mode"] == "rtp"
        assert command["stream_bidirectional_codec"] == "PCMA"
        assert command["custom_parameters"] == [{"name": "agent", "value": "acme"}]
        assert len(command["stream_auth_token"]) >= 32

        body = call_initiated("v3:" + uuid.uuid4().hex)
        url = f"{live.base_url}/telnyx/webhook"
        tampered = body.replace(b"+15557654321", b"+15550000000")
        for headers, content in [({}, body), (signed(carrier_server, body), tampered),
                                 (signed(carrier_server, body, timestamp=int(time.time()) - 3600), body),
                                 ({**signed(carrier_server, body), "telnyx-signature-ed25519": "!!"}, body)]:
            refused = await http.post(url, content=content, headers=headers)
            assert refused.status_code == 403
        garbage = b'{"data": "not an event"}'
        assert (await http.post(url, content=garbage, headers=signed(carrier_server, garbage))).status_code == 400

        # Replays: as captured (the same signature), or the same event signed again: refused, answered once.
        replayed_id = "v3:" + uuid.uuid4().hex
        body = call_initiated(replayed_id)
        headers = signed(carrier_server, body)
        assert (await http.post(url, content=body, headers=headers)).status_code == 200
        again = await http.post(url, content=body, headers=headers)
        assert again.status_code == 409 and again.json()["error"]["code"] == "replayed"
        resigned = signed(carrier_server, body, timestamp=int(time.time()) + 1)
        assert (await http.post(url, content=body, headers=resigned)).status_code == 409
        answer_path = f"/v2/calls/{quote(replayed_id, safe='')}/actions/answer"
        await carrier_server.api.wait_for(answer_path, within_s=5)
        # A fresh event stamped 200 s ahead: a pre-signed request waiting to be used. Refused, never answered.
        ahead_id = "v3:" + uuid.uuid4().hex
        ahead = call_initiated(ahead_id)
        early = await http.post(url, content=ahead, headers=signed(carrier_server, ahead, int(time.time()) + 200))
        assert early.status_code == 403 and "ahead" in early.json()["error"]["message"]
        # The refusals are answered before any command starts; the accepted one has had time to send its answer.
        assert [r.path for r in carrier_server.api.requests if replayed_id.removeprefix("v3:") in r.path] == [
            answer_path]
        assert not [r for r in carrier_server.api.requests if ahead_id.removeprefix("v3:") in r.path]

        text = (await http.get(f"{live.base_url}/metrics", headers=live.auth)).text
        for reason in ("missing", "invalid", "stale", "malformed", "replayed", "future"):
            assert metric(text, "voxgate_carrier_webhooks_rejected_total", carrier="telnyx", reason=reason) >= 1


async def test_media_socket_needs_the_stream_token_of_an_answered_call(carrier_server: CarrierServer) -> None:
    line = await TelnyxLine.dial(f"{carrier_server.live.ws_url}/telnyx/media", "forged-token",
                                 "v3:" + uuid.uuid4().hex, {"agent": "echo"}, encoding="pcma")
    try:
        await asyncio.wait_for(line.closed.wait(), timeout=5)
        assert line.ws.close_code == 1008 and line.ws.close_reason == "unknown media token"
        assert session_of(carrier_server, line.call_control_id) is None
    finally:
        await line.close()


async def test_call_barge_in_order_status_dtmf_and_transfer(carrier_server: CarrierServer) -> None:
    live = carrier_server.live
    line = await answered_line(carrier_server, reorder=True)
    call_control_id = line.call_control_id
    try:
        session = await wait_session(carrier_server, call_control_id)
        assert session.caller.transport == "telnyx"
        # The session is listed as it opens, a moment before the carrier's codec is applied to it.
        await eventually(lambda: session.config.input_format.encoding == "pcma", 5, "the A-law session config")

        # Barge-in over the greeting.
        await line.wait_audio(time.monotonic(), min_s=1.5, within_s=20)
        said_at = time.monotonic()
        talk_s = line.say(speak(REQUEST, rate=8000))
        await eventually(lambda: line.clears, 5, "a clear on barge-in")
        await asyncio.sleep(0.3)
        assert not [f for f in line.frames if line.clears[0] + 0.05 < f.at < said_at + talk_s]

        # The answer, in A-law, transcribed back.
        reply_at = await line.wait_audio(await line.done_speaking(), min_s=1.0, within_s=30)
        await line.wait_played(session, within_s=30)
        reply = await transcribe(line.pcm_since(reply_at))
        # Heard back through G.711 and Whisper tiny, "has shipped" sometimes reads "has ship": the status and
        # the date are what make it the order-status answer.
        arrives = carrier_server.live.gateway.clock.today() + timedelta(days=2)  # how the demo data dates it
        assert "ship" in reply.lower() and f"{arrives:%A}".lower() in reply.lower(), reply

        await line.press("5")
        await eventually(lambda: session.keypad.pressed == ["5"], 5, "the key press reaching the session")

        asked_at = time.monotonic()
        line.say(speak(HUMAN, rate=8000))
        request = await carrier_server.api.wait_for(
            f"/v2/calls/{quote(call_control_id, safe='')}/actions/transfer", within_s=30)
        # Blind (the demo agent's transfer is not warm): no whisper; the state names this call, so that a
        # transfer nobody answers comes back to the agent (tests/integration/test_warm_transfer.py).
        command = request.json()
        assert command.keys() == {"to", "client_state"} and command["to"] == "+15550100"
        assert json.loads(base64.b64decode(command["client_state"])) == {"voxgate_transfer_of": call_control_id}
        assert request.headers["authorization"] == f"Bearer {carrier_server.telnyx_api_key}"
        handover = [f for f in line.frames if f.at > asked_at]
        assert len(handover) * 0.02 > 1.5 and request.at >= handover[-1].at
        await asyncio.wait_for(line.closed.wait(), timeout=5)
        assert session.closed and session.end_reason.startswith("transferred")
        text = (await httpx.AsyncClient().get(f"{live.base_url}/metrics", headers=live.auth)).text
        assert metric(text, "voxgate_carrier_message_errors_total", carrier="telnyx", code="out_of_order") == 0
    finally:
        await line.close()

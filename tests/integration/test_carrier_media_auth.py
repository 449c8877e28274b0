"""Carrier media sockets are authenticated per call: attacks on the Twilio and Telnyx media sockets, refused.

A media socket gets a call only with a single-use token that our own webhook minted for the call its
`start` names. Each attack here reproduces what an attacker who reaches the socket can send: a made-up
`start` with no token, a wrong one, another call's, one already used, one expired (the gateway's
real-time clock moved past its TTL). Each must be closed with 1008 and a reason, counted by reason, and
get no session and no call record, on a gateway with signatures enforced and on one in dev mode with
signature checks off, where the webhooks themselves may be unsigned. A real call through the webhook works on both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import LiveServer, start_server
from tests.integration.test_twilio import metric
from tests.phone_carrier import (
    CarrierApiRecorder,
    PhoneLine,
    TelnyxLine,
    TwilioLine,
    eventually,
    twilio_sign,
    twilio_voice_form,
    twilio_voice_webhook,
)
from voxgate.clock import Clock

TTL_S = 60.0
SEED = bytes(range(32, 64))  # the test carrier's Ed25519 key


@dataclass
class Gateway:
    live: LiveServer
    api: CarrierApiRecorder
    twilio_auth_token: str | None  # None: webhooks and upgrades go unsigned (dev mode)
    signs_telnyx: bool

    def move_time(self, seconds: float) -> None:
        """Move the gateway's real-time clock (expiry, webhook timestamps) this far from now; 0: back."""
        self.live.gateway.real_clock = Clock(datetime.now() + timedelta(seconds=seconds)) if seconds else Clock()

    def sessions_for(self, call_id: str) -> list[Any]:
        return [s for s in list(self.live.gateway.sessions.values())
                if getattr(getattr(s.caller, "started", None), "call_id", None) == call_id]


@pytest.fixture(scope="module", params=["enforced", "dev_mode"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Echo agent by default. `enforced`: dev mode off, both carriers' secrets set; `dev_mode`: dev mode on,
    verify_carrier_signatures off, no signing secrets (only Telnyx's API key, to answer calls): anything
    reaches the webhooks, yet the media sockets hold."""
    tmp: Path = tmp_path_factory.mktemp(f"media-auth-{request.param}")
    api = CarrierApiRecorder().start()
    common: dict[str, Any] = {"engine": "echo", "default_agent": "echo", "twilio_api_base": api.url,
                              "telnyx_api_base": api.url, "carrier_media_token_ttl_s": TTL_S}
    if request.param == "enforced":
        public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        live = start_server(tmp, dev_mode=False, twilio_auth_token="twilio-secret", telnyx_api_key="KEYtelnyx",
                            telnyx_public_key=base64.b64encode(public).decode(), **common)
        server = Gateway(live, api, "twilio-secret", True)
    else:
        live = start_server(tmp, dev_mode=True, verify_carrier_signatures=False, telnyx_api_key="KEYtelnyx",
                            **common)
        server = Gateway(live, api, None, False)
    yield server
    live.embedded.stop()
    api.stop()


async def rejections(server: Gateway, carrier: str, reason: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{server.live.base_url}/metrics", headers=server.live.auth)).text
    return metric(text, "voxgate_carrier_webhooks_rejected_total", carrier=carrier, reason=reason)


async def recorded_calls(server: Gateway) -> int:
    async with httpx.AsyncClient(base_url=server.live.base_url,
                                 headers={"Authorization": f"Bearer {server.live.api_key}"}) as http:
        return len((await http.get("/v1/calls", params={"limit": 500})).json()["data"])


async def closed_with(line: PhoneLine) -> tuple[int | None, str | None]:
    """Send connected + start as the line spells them; how the gateway closed the socket."""
    await line.send(line.connected_message())
    await line.send(line.start_message())
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await line.ws.recv()
    return line.ws.close_code, line.ws.close_reason


async def assert_refused(server: Gateway, carrier: str, line: PhoneLine, call_id: str, reason: str,
                         message: str) -> None:
    before, calls = await rejections(server, carrier, f"token_{reason}"), await recorded_calls(server)
    assert await closed_with(line) == (1008, message)
    assert await rejections(server, carrier, f"token_{reason}") == before + 1
    assert not server.sessions_for(call_id)
    assert await recorded_calls(server) == calls


# -- media sockets -----------------------------------------------------------------------------------


def telnyx_headers(server: Gateway, body: bytes) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if server.signs_telnyx:
        ts = str(int(time.time()))
        signature = Ed25519PrivateKey.from_private_bytes(SEED).sign(ts.encode() + b"|" + body)
        headers.update({"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": ts})
    return headers


async def telnyx_token(server: Gateway, call_control_id: str) -> str:
    """Deliver call.initiated as Telnyx does; the stream_auth_token of the answer command we sent back."""
    body = json.dumps({"data": {"record_type": "event", "event_type": "call.initiated", "id": str(uuid.uuid4()),
                                "payload": {"call_control_id": call_control_id, "direction": "incoming",
                                            "from": "+15557654321", "to": "+15551234567"}}}).encode()
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{server.live.base_url}/telnyx/webhook?agent=echo", content=body,
                                   headers=telnyx_headers(server, body))
    assert response.status_code == 200, response.text
    answer = await server.api.wait_for(f"/v2/calls/{quote(call_control_id, safe='')}/actions/answer", within_s=5)
    token: str = answer.json()["stream_auth_token"]
    return token


async def minted(server: Gateway, carrier: str, call_id: str) -> str:
    """Ring the carrier's webhook for a new call as the carrier does; the media token it hands back."""
    if carrier == "twilio":
        _, parameters = await twilio_voice_webhook(server.live.base_url, server.twilio_auth_token,
                                                   twilio_voice_form(call_id), agent="echo")
        return parameters["token"]
    return await telnyx_token(server, call_id)


async def media_socket(server: Gateway, carrier: str, token: str | None, call_id: str) -> PhoneLine:
    """A media socket as the carrier opens it (Twilio: signed upgrade, token in customParameters; Telnyx:
    token in the handshake header and `connected`), for `call_id`, with whatever token it is given."""
    url = f"{server.live.ws_url}/{carrier}/media"
    if carrier == "twilio":
        auth = server.twilio_auth_token
        ws = await connect(url, compression=None,
                           additional_headers={"X-Twilio-Signature": twilio_sign(url, {}, auth)} if auth else {})
        return TwilioLine(ws=ws, call_sid=call_id, parameters={"agent": "echo", **({"token": token} if token else {})})
    ws = await connect(url, compression=None,
                       additional_headers={"x-telnyx-streaming-auth-token": token} if token else {})
    return TelnyxLine(ws=ws, call_control_id=call_id, auth_token=token)


def new_call_id(carrier: str) -> str:
    return ("CA" if carrier == "twilio" else "v3:") + uuid.uuid4().hex


@pytest.mark.parametrize("carrier", ["twilio", "telnyx"])
async def test_starts_without_a_live_token_of_their_own_call_get_nothing(
        gateway: Gateway, carrier: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = gateway
    # No token: a made-up start, as anyone who finds the URL could send (on Twilio, with one observed
    # upgrade signature: it is the same for every call).
    call_id = new_call_id(carrier)
    await assert_refused(server, carrier, await media_socket(server, carrier, None, call_id), call_id, "missing",
                         "no media token: streams are accepted only for calls our webhook answered")
    await assert_refused(server, carrier, await media_socket(server, carrier, "x" * 43, call_id), call_id,
                         "unknown", "unknown media token")
    # Another call's token: minted for call A, presented with call B's id (a hijack of B).
    call_a, call_b = new_call_id(carrier), new_call_id(carrier)
    token_a = await minted(server, carrier, call_a)
    await assert_refused(server, carrier, await media_socket(server, carrier, token_a, call_b), call_b,
                         "wrong_call", "media token was minted for another call")
    # Expired: the webhook answered, but the stream came after the TTL (the gateway's real-time clock moved on).
    late_call = new_call_id(carrier)
    late = await minted(server, carrier, late_call)
    server.move_time(TTL_S + 1)
    try:
        await assert_refused(server, carrier, await media_socket(server, carrier, late, late_call), late_call,
                             "expired", "media token expired")
    finally:
        server.move_time(0)

    # The real call A still works with its token (the wrong-call attempt did not spend it)...
    line = await media_socket(server, carrier, token_a, call_a)
    await line.begin()
    try:
        await eventually(lambda: server.sessions_for(call_a), 10, "a session for the real call")
    finally:
        await line.hang_up()
    # ...once: its handshake replayed word for word gets nothing.
    await eventually(lambda: not server.sessions_for(call_a), 10, "the real call ending")
    await assert_refused(server, carrier, await media_socket(server, carrier, token_a, call_a), call_a, "reused",
                         "media token already used")
    # The gateway never logs a token, used or not, even at debug (the test carrier's own library does).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))
    assert "media token" in logged and token_a not in logged and late not in logged


# -- webhook replays ----------------------------------------------------------------------------------


async def test_twilio_voice_webhook_replays_mint_nothing(gateway: Gateway) -> None:
    server = gateway
    sid = "CA" + uuid.uuid4().hex
    form = twilio_voice_form(sid)
    url = f"{server.live.base_url}/twilio/voice?agent=echo"
    headers = {"X-Twilio-Signature": twilio_sign(url, form, server.twilio_auth_token)} if server.twilio_auth_token \
        else {}
    before = await rejections(server, "twilio", "replayed")
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, data=form, headers=headers)).status_code == 200
        replay = await http.post(url, data=form, headers=headers)
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "replayed"
    assert await rejections(server, "twilio", "replayed") == before + 1


async def test_telnyx_webhook_replays_are_refused(gateway: Gateway) -> None:
    """Signed or (in dev mode) not, a webhook whose event was already received is not acted on again."""
    server = gateway
    cid = "v3:" + uuid.uuid4().hex
    body = json.dumps({"data": {"event_type": "call.initiated", "id": str(uuid.uuid4()),
                                "payload": {"call_control_id": cid, "direction": "incoming"}}}).encode()
    headers = telnyx_headers(server, body)
    before = await rejections(server, "telnyx", "replayed")
    async with httpx.AsyncClient() as http:
        url = f"{server.live.base_url}/telnyx/webhook"
        assert (await http.post(url, content=body, headers=headers)).status_code == 200
        assert (await http.post(url, content=body, headers=headers)).status_code == 409
    assert await rejections(server, "telnyx", "replayed") == before + 1

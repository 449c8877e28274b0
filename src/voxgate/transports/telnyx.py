"""Telnyx Call Control: the signed call webhook, the media streaming socket, and the call commands.

    POST /telnyx/webhook[?agent=NAME]  Ed25519-signed call events; on `call.initiated` the gateway answers
                                        with streaming requested in the same command (bidirectional rtp)
    WS   /telnyx/media                  the media stream, served by CarrierCall

The answer carries a `stream_auth_token` derived from the call's id with the API key, which Telnyx
echoes on the media socket: only the stream of a call this gateway answered is accepted. Transfer,
hang-up and DTMF are call commands (POST /v2/calls/{call_control_id}/actions/{command}).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voxgate.config import Settings
from voxgate.observability import metrics
from voxgate.transports.carrier_audio import CarrierAudio
from voxgate.transports.carrier_call import (
    CallGateway,
    CarrierApiError,
    carrier_request,
    media_socket_url,
    open_media_socket,
    run_carrier_call,
    signatures_required,
)
from voxgate.transports.signatures import SignatureError, verify_telnyx
from voxgate.transports.telnyx_messages import CODEC_ENCODINGS, TelnyxMediaStream

__all__ = ["MEDIA_PATH", "WEBHOOK_PATH", "TelnyxControl", "answer_command", "routes", "stream_auth_token"]

log = logging.getLogger("voxgate.telnyx")

WEBHOOK_PATH = "/telnyx/webhook"
MEDIA_PATH = "/telnyx/media"
CALL_GONE = 90018  # Telnyx's code for "the call has already ended"


class TelnyxControl:
    """Call commands on one call leg."""

    def __init__(self, http: httpx.AsyncClient, api_base: str, call_control_id: str, api_key: str,
                 timeout_s: float) -> None:
        self._http = http
        self._base = f"{api_base.rstrip('/')}/v2/calls/{quote(call_control_id, safe='')}/actions"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout_s = timeout_s

    async def command(self, action: str, body: dict[str, Any]) -> None:
        await carrier_request(self._http, "telnyx", action, "POST", f"{self._base}/{action}", self._timeout_s,
                              (CALL_GONE,), json=body, headers=self._headers)

    async def transfer(self, target: str) -> None:
        await self.command("transfer", {"to": target})

    async def hang_up(self) -> None:
        await self.command("hangup", {})

    async def send_dtmf(self, digits: str) -> None:
        await self.command("send_dtmf", {"digits": digits})


def stream_auth_token(settings: Settings, call_control_id: str) -> str | None:
    """The token Telnyx must echo on this call's media socket (None without an API key to derive it from)."""
    key = settings.telnyx_api_key.get_secret_value()
    if not key:
        return None
    digest = hmac.new(key.encode(), b"voxgate-stream:" + call_control_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def answer_command(settings: Settings, call_control_id: str, agent: str) -> dict[str, Any]:
    """The `answer` body: pick up and start a bidirectional media stream to this gateway at once."""
    codec = settings.telnyx_codec
    body: dict[str, Any] = {
        "stream_url": media_socket_url(settings, MEDIA_PATH),
        "stream_track": "inbound_track",
        "stream_codec": codec,
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": codec,
        "stream_bidirectional_sampling_rate": settings.telnyx_sample_rate if codec == "L16" else 8000,
        "stream_bidirectional_target_legs": "self",
        "custom_parameters": [{"name": "agent", "value": agent}],
        "client_state": base64.b64encode(json.dumps({"agent": agent}).encode()).decode("ascii"),
    }
    token = stream_auth_token(settings, call_control_id)
    if token is not None:
        body["stream_auth_token"] = token
    return body


_background: set[asyncio.Task[None]] = set()


def routes(gateway_of: Callable[[Request | WebSocket], CallGateway]) -> list[BaseRoute]:
    """The Telnyx routes, bound to the app's gateway lookup."""

    async def call_webhook(request: Request) -> Response:
        gateway = gateway_of(request)
        settings = gateway.settings
        body = await request.body()
        if signatures_required(settings, bool(settings.telnyx_public_key)):
            try:
                verify_telnyx(body, request.headers.get("telnyx-signature-ed25519"),
                              request.headers.get("telnyx-timestamp"), settings.telnyx_public_key, time.time())
            except SignatureError as exc:
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("telnyx", exc.reason).inc()
                log.warning("telnyx webhook from %s refused: %s",
                            request.client.host if request.client else "?", exc)
                return PlainTextResponse("invalid signature", status_code=403)
        try:
            data = json.loads(body)["data"]
            event_type, payload = str(data["event_type"]), data["payload"]
            call_control_id = str(payload["call_control_id"])
        except (ValueError, KeyError, TypeError):
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("telnyx", "malformed").inc()
            return PlainTextResponse("expected a Telnyx call event: {data: {event_type, payload}}", status_code=400)
        log.debug("telnyx %s for %s", event_type, call_control_id)
        if event_type == "call.initiated" and payload.get("direction", "incoming") == "incoming":
            agent = gateway.agent(request.query_params.get("agent"))
            control = TelnyxControl(gateway.http, settings.telnyx_api_base, call_control_id,
                                    settings.telnyx_api_key.get_secret_value(), settings.carrier_api_timeout_s)
            # Answer after replying: Telnyx wants its webhook acknowledged quickly, and retries otherwise.
            task = asyncio.get_running_loop().create_task(
                _answer(control, answer_command(settings, call_control_id, agent.name), call_control_id))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return JSONResponse({"received": event_type})

    async def media_socket(websocket: WebSocket) -> None:
        gateway = gateway_of(websocket)
        settings = gateway.settings
        opened = await open_media_socket(gateway, websocket, "telnyx", TelnyxMediaStream())
        if opened is None:
            return
        call, started = opened
        expected = stream_auth_token(settings, started.call_id)
        if expected is not None and settings.verify_carrier_signatures:
            given = websocket.headers.get("x-telnyx-streaming-auth-token") or (
                call.connected.auth_token if call.connected else None) or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("telnyx", "invalid_stream_token").inc()
                log.warning("telnyx media socket for %s refused: wrong or missing stream auth token",
                            started.call_id)
                await call.close_socket(1008)
                return
        outbound = CODEC_ENCODINGS[settings.telnyx_codec]
        audio = CarrierAudio(started.encoding, started.sample_rate, outbound,
                             settings.telnyx_sample_rate if outbound == "l16" else 8000)
        control = TelnyxControl(gateway.http, settings.telnyx_api_base, started.call_id,
                                settings.telnyx_api_key.get_secret_value(), settings.carrier_api_timeout_s)
        await run_carrier_call(gateway, call, started, audio, control)

    return [Route(WEBHOOK_PATH, call_webhook, methods=["POST"]), WebSocketRoute(MEDIA_PATH, media_socket)]


async def _answer(control: TelnyxControl, body: dict[str, Any], call_control_id: str) -> None:
    try:
        await control.command("answer", body)
    except CarrierApiError as exc:
        log.error("telnyx call %s: answer failed: %s", call_control_id, exc)

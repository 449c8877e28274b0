"""Twilio Programmable Voice: the voice webhook, the Media Streams socket, and the REST commands.

    POST /twilio/voice[?agent=NAME]   signed webhook -> TwiML <Connect><Stream url=".../twilio/media">
                                       with agent, from, to and callSid as <Parameter>s
    WS   /twilio/media                 the bidirectional media stream (signed upgrade), served by CarrierCall

Transfer and hang-up update the live call over REST (POST .../Calls/{CallSid}.json with `Twiml=<Dial>`
or `Status=completed`), which ends the stream; Twilio then sends `stop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voxgate.observability import metrics
from voxgate.transports import twiml
from voxgate.transports.carrier_audio import CarrierAudio
from voxgate.transports.carrier_call import (
    CallGateway,
    CarrierApiError,
    carrier_request,
    media_socket_url,
    open_media_socket,
    public_request_url,
    run_carrier_call,
    signatures_required,
)
from voxgate.transports.signatures import twilio_signature_valid
from voxgate.transports.twilio_messages import TwilioMediaStream

__all__ = ["MEDIA_PATH", "VOICE_PATH", "TwilioControl", "routes"]

log = logging.getLogger("voxgate.twilio")

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
CALL_GONE = 20404  # Twilio's code for "the call is already over"


class TwilioControl:
    """REST commands on one live call."""

    def __init__(self, http: httpx.AsyncClient, api_base: str, account_sid: str, call_sid: str, auth_token: str,
                 timeout_s: float) -> None:
        self._http = http
        self._url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
        self._auth = (account_sid, auth_token)
        self._timeout_s = timeout_s

    async def _update(self, action: str, form: dict[str, str]) -> None:
        await carrier_request(self._http, "twilio", action, "POST", self._url, self._timeout_s, (CALL_GONE,),
                              data=form, auth=self._auth)

    async def transfer(self, target: str) -> None:
        await self._update("transfer", {"Twiml": twiml.dial(target)})

    async def hang_up(self) -> None:
        await self._update("hangup", {"Status": "completed"})

    async def send_dtmf(self, digits: str) -> None:
        # <Play digits> would need new TwiML, which ends the media stream: not worth a dropped call.
        raise CarrierApiError("send_dtmf", "a Twilio media stream cannot send DTMF")


def routes(gateway_of: Callable[[Request | WebSocket], CallGateway]) -> list[BaseRoute]:
    """The Twilio routes, bound to the app's gateway lookup."""

    async def voice_webhook(request: Request) -> Response:
        gateway = gateway_of(request)
        settings = gateway.settings
        # Twilio posts application/x-www-form-urlencoded; parsed here, it needs no multipart library.
        params = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        token = settings.twilio_auth_token.get_secret_value()
        if signatures_required(settings, bool(token)):
            url = public_request_url(settings, str(request.url), request.url.path, request.url.query)
            if not twilio_signature_valid(url, params, request.headers.get("x-twilio-signature"), token):
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "invalid_signature").inc()
                log.warning("twilio webhook from %s refused: missing or wrong X-Twilio-Signature for %s",
                            request.client.host if request.client else "?", url)
                return PlainTextResponse("invalid signature", status_code=403)
        fields = dict(params)
        agent = gateway.agent(request.query_params.get("agent"))
        document = twiml.connect_stream(media_socket_url(settings, MEDIA_PATH), {
            "agent": agent.name, "from": fields.get("From", ""), "to": fields.get("To", ""),
            "callSid": fields.get("CallSid", "")})
        return Response(document, media_type="text/xml")

    async def media_socket(websocket: WebSocket) -> None:
        gateway = gateway_of(websocket)
        settings = gateway.settings
        token = settings.twilio_auth_token.get_secret_value()
        if signatures_required(settings, bool(token)):
            url = media_socket_url(settings, MEDIA_PATH)  # Twilio signs the wss:// URL, with no parameters
            if not twilio_signature_valid(url, [], websocket.headers.get("x-twilio-signature"), token):
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "invalid_signature").inc()
                log.warning("twilio media socket refused: missing or wrong X-Twilio-Signature")
                await websocket.send_denial_response(PlainTextResponse("invalid signature", status_code=403))
                return
        opened = await open_media_socket(gateway, websocket, "twilio", TwilioMediaStream())
        if opened is None:
            return
        call, started = opened
        control = TwilioControl(gateway.http, settings.twilio_api_base, started.account_id, started.call_id, token,
                                settings.carrier_api_timeout_s)
        await run_carrier_call(gateway, call, started, CarrierAudio("pcmu", 8000, "pcmu", 8000), control)

    return [Route(VOICE_PATH, voice_webhook, methods=["POST"]), WebSocketRoute(MEDIA_PATH, media_socket)]

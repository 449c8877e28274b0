"""Twilio Programmable Voice: the voice webhook, the Media Streams socket, and the REST commands.

    POST /twilio/voice[?agent=NAME]   signed webhook -> TwiML <Connect><Stream url=".../twilio/media">
                                       with agent, from, to, callSid and a media token as <Parameter>s
    WS   /twilio/media                 the bidirectional media stream (signed upgrade), served by CarrierCall

The webhook mints a single-use media token bound to its CallSid (media_tokens.py); Twilio hands the
`<Parameter>`s back in `start.customParameters`, and the media socket serves a call only for a live,
unused token bound to the CallSid its `start` names. The upgrade's X-Twilio-Signature is checked too,
but it signs the fixed URL, the same for every call: alone it would let one observed handshake open any
number of calls. A second voice webhook for a CallSid already answered (within
`twilio_replay_window_s`) is a replay: Twilio signs no timestamp, so the CallSid is the idempotency key.

Transfer and hang-up update the live call over REST (POST .../Calls/{CallSid}.json with `Twiml=<Dial>`
or `Status=completed`), which ends the stream; Twilio then sends `stop`. The AccountSid and CallSid in
that URL are the signed webhook's, never the stream's.
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

from voxgate.admission import Refusal
from voxgate.control.problems import problem
from voxgate.observability import metrics
from voxgate.transports import twiml
from voxgate.transports.carrier_audio import CarrierAudio
from voxgate.transports.carrier_call import (
    CallGateway,
    CarrierApiError,
    CarrierCall,
    carrier_request,
    media_socket_url,
    open_media_socket,
    public_request_url,
    run_carrier_call,
    signatures_required,
)
from voxgate.transports.media_stream import CallEventError, StreamStarted
from voxgate.transports.media_tokens import MediaGrant
from voxgate.transports.signatures import twilio_signature_valid
from voxgate.transports.twilio_messages import TOKEN_PARAMETER, TwilioMediaStream, parse_voice_call

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
        client = request.client.host if request.client else "?"
        # Twilio posts application/x-www-form-urlencoded; parsed here, it needs no multipart library.
        params = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        token = settings.twilio_auth_token.get_secret_value()
        if signatures_required(settings, bool(token)):
            url = public_request_url(settings, str(request.url), request.url.path, request.url.query)
            if not twilio_signature_valid(url, params, request.headers.get("x-twilio-signature"), token):
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "invalid_signature").inc()
                log.warning("twilio webhook from %s refused: missing or wrong X-Twilio-Signature for %s", client, url)
                return problem(403, "invalid_signature", "Missing or wrong X-Twilio-Signature.")
        try:
            call = parse_voice_call(params)
        except CallEventError as exc:
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "malformed").inc()
            return problem(400, "invalid_call", str(exc))
        now = gateway.real_clock.time()
        if gateway.twilio_calls_answered.seen(call.call_sid, now):
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "replayed").inc()
            log.warning("twilio webhook from %s refused: call %s was already answered (a replay)", client,
                        call.call_sid)
            return problem(409, "replayed", "This call was already answered.")
        ticket = gateway.admission.try_admit(None, "twilio")
        if isinstance(ticket, Refusal):
            log.info("twilio call %s refused (%s): answered busy", call.call_sid, ticket.reason)
            return Response(twiml.reject_busy(), media_type="text/xml")
        gateway.admission.reserve(call.call_sid, ticket)  # held for this call's media socket
        agent = gateway.agent(request.query_params.get("agent"))
        media_token = gateway.media_tokens.mint(MediaGrant(
            "twilio", call.call_sid, call.account_sid, agent.name, call.from_number, call.to_number), now)
        document = twiml.connect_stream(media_socket_url(settings, MEDIA_PATH), {
            "agent": agent.name, "from": call.from_number, "to": call.to_number, "callSid": call.call_sid,
            TOKEN_PARAMETER: media_token})
        return Response(document, media_type="text/xml", headers={"Cache-Control": "no-store"})

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
        opened = await open_media_socket(gateway, websocket, "twilio", TwilioMediaStream(), _presented_token)
        if opened is None:
            return
        call, started, grant = opened
        control = TwilioControl(gateway.http, settings.twilio_api_base, grant.account_id, grant.call_id, token,
                                settings.carrier_api_timeout_s)
        await run_carrier_call(gateway, call, started, grant, CarrierAudio("pcmu", 8000, "pcmu", 8000), control)

    return [Route(VOICE_PATH, voice_webhook, methods=["POST"]), WebSocketRoute(MEDIA_PATH, media_socket)]


def _presented_token(call: CarrierCall, started: StreamStarted) -> str | None:
    """Twilio hands our `<Parameter>`s back in `start.customParameters`."""
    return started.parameters.get(TOKEN_PARAMETER)

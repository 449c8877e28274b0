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

A warm transfer (the agent's `escalation.warm`) is Twilio's whisper: the `<Dial>` names a URL whose TwiML
Twilio plays to the person once they answer, before the caller is connected, and an action URL:

    POST /twilio/whisper/{token}     signed -> <Say> who is calling and why (each token serves once)
    POST /twilio/dial-ended[?agent=] signed; DialCallStatus answered/completed -> <Hangup>; otherwise the
                                     caller hears the agent's unanswered line and is back with the agent
                                     on a new media stream (a new session, its own media token)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

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
from voxgate.transports.twilio_messages import TOKEN_PARAMETER, TwilioMediaStream, VoiceCall, parse_voice_call
from voxgate.transports.whisper import KeptWhispers

if TYPE_CHECKING:
    from voxgate.agents import AgentConfig

__all__ = ["MEDIA_PATH", "VOICE_PATH", "TwilioControl", "routes"]

log = logging.getLogger("voxgate.twilio")

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
WHISPER_PATH = "/twilio/whisper"
DIAL_ENDED_PATH = "/twilio/dial-ended"
MAX_WHISPERS = 1000  # whispers waiting for Twilio to fetch them; the oldest go first
CALL_GONE = 20404  # Twilio's code for "the call is already over"


class TwilioControl:
    """REST commands on one live call."""

    def __init__(self, http: httpx.AsyncClient, api_base: str, account_sid: str, call_sid: str, auth_token: str,
                 timeout_s: float, *, base_url: str = "", agent: str = "",
                 whispers: KeptWhispers[str] | None = None) -> None:
        self._http = http
        self._url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
        self._auth = (account_sid, auth_token)
        self._timeout_s = timeout_s
        self._base_url = base_url.rstrip("/")  # where Twilio reaches us: the whisper and dial-ended URLs
        self._agent = agent
        self._whispers = whispers

    async def _update(self, action: str, form: dict[str, str]) -> None:
        await carrier_request(self._http, "twilio", action, "POST", self._url, self._timeout_s, (CALL_GONE,),
                              data=form, auth=self._auth)

    async def transfer(self, target: str, whisper: str | None = None) -> None:
        if whisper is None or self._whispers is None:
            await self._update("transfer", {"Twiml": twiml.dial(target)})
            return
        token = self._whispers.keep(whisper)
        document = twiml.dial(target, whisper_url=f"{self._base_url}{WHISPER_PATH}/{token}",
                              action_url=f"{self._base_url}{DIAL_ENDED_PATH}?{urlencode({'agent': self._agent})}")
        await self._update("transfer", {"Twiml": document})

    async def hang_up(self) -> None:
        await self._update("hangup", {"Status": "completed"})

    async def send_dtmf(self, digits: str) -> None:
        # <Play digits> would need new TwiML, which ends the media stream: not worth a dropped call.
        raise CarrierApiError("send_dtmf", "a Twilio media stream cannot send DTMF")


def routes(gateway_of: Callable[[Request | WebSocket], CallGateway]) -> list[BaseRoute]:
    """The Twilio routes, bound to the app's gateway lookup."""
    whispers: KeptWhispers[str] = KeptWhispers(limit=MAX_WHISPERS)  # each served once

    async def signed_form(request: Request) -> list[tuple[str, str]] | Response:
        """The webhook's form, or the 403 when its X-Twilio-Signature is missing or wrong."""
        settings = gateway_of(request).settings
        # Twilio posts application/x-www-form-urlencoded; parsed here, it needs no multipart library.
        params = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        token = settings.twilio_auth_token.get_secret_value()
        if signatures_required(settings, bool(token)):
            url = public_request_url(settings, str(request.url), request.url.path, request.url.query)
            if not twilio_signature_valid(url, params, request.headers.get("x-twilio-signature"), token):
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "invalid_signature").inc()
                client = request.client.host if request.client else "?"
                log.warning("twilio webhook from %s refused: missing or wrong X-Twilio-Signature for %s", client, url)
                return problem(403, "invalid_signature", "Missing or wrong X-Twilio-Signature.")
        return params

    async def voice_webhook(request: Request) -> Response:
        gateway = gateway_of(request)
        settings = gateway.settings
        client = request.client.host if request.client else "?"
        params = await signed_form(request)
        if isinstance(params, Response):
            return params
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
        document = twiml.connect_stream(media_socket_url(settings, MEDIA_PATH), stream_parameters(gateway, call, agent))
        return Response(document, media_type="text/xml", headers={"Cache-Control": "no-store"})

    def stream_parameters(gateway: CallGateway, call: VoiceCall, agent: AgentConfig) -> dict[str, str]:
        """The `<Stream>`'s parameters, with a fresh media token for this call and agent."""
        media_token = gateway.media_tokens.mint(MediaGrant(
            "twilio", call.call_sid, call.account_sid, agent.name, call.from_number, call.to_number),
            gateway.real_clock.time())
        return {"agent": agent.name, "from": call.from_number, "to": call.to_number, "callSid": call.call_sid,
                TOKEN_PARAMETER: media_token}

    async def whisper(request: Request) -> Response:
        """The person answered a warm transfer: who is calling and why, before the caller is connected."""
        params = await signed_form(request)
        if isinstance(params, Response):
            return params
        text = whispers.take(request.path_params["token"])
        document = twiml.say(text) if text is not None else "<Response/>"  # unknown: connect without one
        return Response(document, media_type="text/xml", headers={"Cache-Control": "no-store"})

    async def dial_ended(request: Request) -> Response:
        """How a warm transfer's dial ended: answered, the call is over; otherwise back to the agent."""
        gateway = gateway_of(request)
        params = await signed_form(request)
        if isinstance(params, Response):
            return params
        form = dict(params)
        if form.get("DialCallStatus") in ("answered", "completed"):
            return Response(twiml.hang_up(), media_type="text/xml")
        try:
            call = parse_voice_call(params)
        except CallEventError as exc:
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "malformed").inc()
            return problem(400, "invalid_call", str(exc))
        if gateway.twilio_calls_answered.seen(f"{call.call_sid}/dial-ended", gateway.real_clock.time()):
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("twilio", "replayed").inc()
            return problem(409, "replayed", "This dial's end was already answered.")
        agent = gateway.agent(request.query_params.get("agent"))
        ticket = gateway.admission.try_admit(None, "twilio")
        if isinstance(ticket, Refusal):
            return Response(twiml.hang_up(), media_type="text/xml")
        gateway.admission.reserve(call.call_sid, ticket)
        log.info("twilio call %s: nobody took the warm transfer (%s); back to agent %s", call.call_sid,
                 form.get("DialCallStatus", "?"), agent.name)
        document = twiml.say_then_connect_stream(agent.escalation.unanswered_line,
                                                 media_socket_url(gateway.settings, MEDIA_PATH),
                                                 stream_parameters(gateway, call, agent))
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
                                settings.carrier_api_timeout_s, base_url=settings.base_url(), agent=grant.agent,
                                whispers=whispers)
        await run_carrier_call(gateway, call, started, grant, CarrierAudio("pcmu", 8000, "pcmu", 8000), control)

    return [Route(VOICE_PATH, voice_webhook, methods=["POST"]), WebSocketRoute(MEDIA_PATH, media_socket),
            Route(WHISPER_PATH + "/{token}", whisper, methods=["POST"]),
            Route(DIAL_ENDED_PATH, dial_ended, methods=["POST"])]


def _presented_token(call: CarrierCall, started: StreamStarted) -> str | None:
    """Twilio hands our `<Parameter>`s back in `start.customParameters`."""
    return started.parameters.get(TOKEN_PARAMETER)

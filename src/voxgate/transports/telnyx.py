"""Telnyx Call Control: the signed call webhook, the media streaming socket, and the call commands.

    POST /telnyx/webhook[?agent=NAME]  Ed25519-signed call events; on `call.initiated` the gateway answers
                                        with streaming requested in the same command (bidirectional rtp)
    WS   /telnyx/media                  the media stream, served by CarrierCall
    GET  /telnyx/whisper/{token}.wav    a warm transfer's whisper, for Telnyx to play to the person

On `call.initiated` the gateway mints a single-use media token bound to the call_control_id
(media_tokens.py) and sends it as the answer's `stream_auth_token`, which Telnyx echoes in the media
socket's `x-telnyx-streaming-auth-token` header and its `connected` frame: a `start` is served only
with a live, unused token bound to the call_control_id it names. (Not in the stream URL: URLs end up
in access logs.) A webhook is refused when its timestamp is older than `telnyx_webhook_tolerance_s` or
more than `telnyx_webhook_max_future_s` ahead, and when its event id or signature was already seen in
that window (a replay). Transfer, hang-up and DTMF are call commands (POST
/v2/calls/{call_control_id}/actions/{command}) on the webhook's call_control_id.

A warm transfer (the agent's `escalation.warm`) is the transfer command's `audio_url`: a file Telnyx plays to
the person once they answer, before bridging the caller. The gateway renders who is calling and why in the
agent's voice (Piper, off the event loop) as a WAV file kept under an unguessable token, served at most
`WHISPER_FETCHES` times within `WHISPER_TTL_S`; a whisper that cannot be rendered leaves the transfer blind.

A transfer nobody answers (busy, no answer, refused) leaves the caller's leg up, in silence: Telnyx reports
the person's leg's `call.hangup`, with the transfer's `client_state` naming the caller's leg. The gateway
then starts a new media stream on the caller's leg (`streaming_start`, a new media token) and the agent
takes the call back, its `escalation.unanswered_line` before the greeting, as on Twilio and SIP. Only a
transfer this gateway sent and that is still pending is taken back, once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voxgate.admission import Refusal
from voxgate.config import Settings
from voxgate.control.problems import problem
from voxgate.observability import metrics
from voxgate.transports.carrier_audio import CarrierAudio
from voxgate.transports.carrier_call import (
    CallGateway,
    CarrierApiError,
    CarrierCall,
    carrier_request,
    media_socket_url,
    open_media_socket,
    run_carrier_call,
    signatures_required,
)
from voxgate.transports.media_stream import CallEventError, StreamStarted
from voxgate.transports.media_tokens import MediaGrant
from voxgate.transports.signatures import SignatureError, verify_telnyx
from voxgate.transports.telnyx_messages import CODEC_ENCODINGS, CallEvent, TelnyxMediaStream, parse_call_event
from voxgate.transports.whisper import KeptWhispers, whisper_wav

__all__ = ["MEDIA_PATH", "WEBHOOK_PATH", "WHISPER_PATH", "TelnyxControl", "answer_command", "routes"]

log = logging.getLogger("voxgate.telnyx")

WEBHOOK_PATH = "/telnyx/webhook"
MEDIA_PATH = "/telnyx/media"
WHISPER_PATH = "/telnyx/whisper"
WHISPER_TTL_S = 600.0  # a transfer's person answers within minutes, or not at all
WHISPER_FETCHES = 3  # Telnyx fetches the file once per answer; a retry or two, then it is gone
MAX_WHISPERS = 256
TRANSFER_OF = "voxgate_transfer_of"  # the client_state key that names the caller's leg on the person's
TRANSFER_TTL_S = 600.0  # a person's leg rings for a minute or two; its end is awaited no longer than this


class Transfers:
    """Transfers this gateway asked Telnyx for, until the person's leg answers (the caller is theirs) or hangs
    up unanswered (the caller's leg is still up, in silence: the agent takes the call back)."""

    def __init__(self, clock: Callable[[], float], *, ttl_s: float = TRANSFER_TTL_S, limit: int = 1024) -> None:
        self._clock, self.ttl_s, self.limit = clock, ttl_s, limit
        self._pending: OrderedDict[str, tuple[MediaGrant, float]] = OrderedDict()

    def sent(self, grant: MediaGrant) -> None:
        self._pending[grant.call_id] = (grant, self._clock())
        while len(self._pending) > self.limit:
            self._pending.popitem(last=False)

    def answered(self, call_id: str) -> None:
        self._pending.pop(call_id, None)

    def unanswered(self, call_id: str) -> MediaGrant | None:
        """The caller's grant when `call_id`'s transfer was ours and still pending; it is settled either way."""
        pending = self._pending.pop(call_id, None)
        if pending is None or self._clock() - pending[1] > self.ttl_s:
            return None
        return pending[0]


CALL_GONE = 90018  # Telnyx's code for "the call has already ended"


class TelnyxControl:
    """Call commands on one call leg."""

    def __init__(self, http: httpx.AsyncClient, api_base: str, call_control_id: str, api_key: str,
                 timeout_s: float, *, base_url: str = "", whispers: KeptWhispers[bytes] | None = None,
                 voice: str = "joe", transfers: Transfers | None = None, grant: MediaGrant | None = None,
                 deterministic_voice: bool = False) -> None:
        self._http = http
        self._base = f"{api_base.rstrip('/')}/v2/calls/{quote(call_control_id, safe='')}/actions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._public_url = base_url.rstrip("/")  # where Telnyx reaches us: the whisper's file
        self._whispers = whispers
        self._voice = voice
        self._deterministic_voice = deterministic_voice  # `tts_variation: false`
        self._transfers, self._grant = transfers, grant  # a transfer nobody answers comes back to the agent

    async def command(self, action: str, body: dict[str, Any]) -> None:
        if not self._headers:  # Telnyx would answer 401: say what is missing instead
            raise CarrierApiError(action, "no Telnyx API key is configured (VOXGATE_TELNYX_API_KEY): "
                                          "call commands cannot be sent")
        await carrier_request(self._http, "telnyx", action, "POST", f"{self._base}/{action}", self._timeout_s,
                              (CALL_GONE,), json=body, headers=self._headers)

    async def transfer(self, target: str, whisper: str | None = None) -> None:
        body = {"to": target}
        if self._transfers is not None and self._grant is not None:
            # Telnyx hands the state back on the person's leg's webhooks: its hang-up, unanswered, finds us.
            self._transfers.sent(self._grant)
            body["client_state"] = _encode_state({TRANSFER_OF: self._grant.call_id})
        if whisper is not None and self._whispers is not None:
            try:
                wav = await whisper_wav(whisper, self._voice, deterministic=self._deterministic_voice)
            except Exception:  # no voice to say it in: the person still gets the caller, without the whisper
                log.exception("telnyx: the warm transfer's whisper could not be rendered; transferring blind")
            else:
                body["audio_url"] = f"{self._public_url}{WHISPER_PATH}/{self._whispers.keep(wav)}.wav"
        await self.command("transfer", body)

    async def hang_up(self) -> None:
        await self.command("hangup", {})

    async def send_dtmf(self, digits: str) -> None:
        await self.command("send_dtmf", {"digits": digits})


def _encode_state(state: dict[str, str]) -> str:
    return base64.b64encode(json.dumps(state, separators=(",", ":")).encode()).decode("ascii")


def answer_command(settings: Settings, agent: str, media_token: str) -> dict[str, Any]:
    """The `answer` body: pick up and start a bidirectional media stream to this gateway at once, with the
    call's media token as the `stream_auth_token` Telnyx echoes on the media socket."""
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
        "client_state": _encode_state({"agent": agent}),
        "stream_auth_token": media_token,
    }
    return body


_background: set[asyncio.Task[None]] = set()


def _in_background(command: Coroutine[Any, Any, None]) -> None:
    """Run a call command after the webhook is answered, held until it is done."""
    task = asyncio.get_running_loop().create_task(command)
    _background.add(task)
    task.add_done_callback(_background.discard)


def routes(gateway_of: Callable[[Request | WebSocket], CallGateway]) -> list[BaseRoute]:
    """The Telnyx routes, bound to the app's gateway lookup."""
    whispers: KeptWhispers[bytes] = KeptWhispers(limit=MAX_WHISPERS, fetches=WHISPER_FETCHES,
                                                 ttl_s=WHISPER_TTL_S, clock=time.monotonic)
    transfers = Transfers(time.monotonic)

    async def call_webhook(request: Request) -> Response:
        gateway = gateway_of(request)
        settings = gateway.settings
        client = request.client.host if request.client else "?"
        body = await request.body()
        now = gateway.real_clock.time()
        signature = request.headers.get("telnyx-signature-ed25519")
        verified = signatures_required(settings, bool(settings.telnyx_public_key))
        if verified:
            try:
                verify_telnyx(body, signature, request.headers.get("telnyx-timestamp"), settings.telnyx_public_key,
                              now, settings.telnyx_webhook_tolerance_s, settings.telnyx_webhook_max_future_s)
            except SignatureError as exc:
                metrics.CARRIER_WEBHOOKS_REJECTED.labels("telnyx", exc.reason).inc()
                log.warning("telnyx webhook from %s refused: %s", client, exc)
                return problem(403, "invalid_signature", str(exc))
        try:
            event = parse_call_event(body)
        except CallEventError as exc:
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("telnyx", "malformed").inc()
            return problem(400, "invalid_event", str(exc))
        # Remembered only once verified, so a forged request cannot spend a real event's id. A redelivery
        # keeps its event id; a replay within the tolerance keeps its signature.
        seen = gateway.telnyx_events_seen
        replayed = bool(event.event_id) and seen.seen(f"event:{event.event_id}", now)
        if verified and signature:
            replayed = seen.seen(f"signature:{signature}", now) or replayed
        if replayed:
            metrics.CARRIER_WEBHOOKS_REJECTED.labels("telnyx", "replayed").inc()
            log.warning("telnyx webhook from %s refused: event %r was already received (a replay)", client,
                        event.event_id)
            return problem(409, "replayed", "This event was already received.")
        log.debug("telnyx %s for %s", event.event_type, event.call_control_id)
        if event.event_type == "call.initiated" and event.direction == "incoming":
            agent = gateway.agent(request.query_params.get("agent"))
            control = TelnyxControl(gateway.http, settings.telnyx_api_base, event.call_control_id,
                                    settings.telnyx_api_key.get_secret_value(), settings.carrier_api_timeout_s)
            ticket = gateway.admission.try_admit(None, "telnyx")
            if isinstance(ticket, Refusal):
                log.info("telnyx call %s refused (%s): rejected as busy", event.call_control_id, ticket.reason)
                command = _command(control, "reject", {"cause": "USER_BUSY"}, event.call_control_id)
            else:  # held for this call's media socket, which claims it by call_control_id
                gateway.admission.reserve(event.call_control_id, ticket)
                media_token = gateway.media_tokens.mint(MediaGrant(
                    "telnyx", event.call_control_id, "", agent.name, event.from_number, event.to_number), now)
                command = _command(control, "answer", answer_command(settings, agent.name, media_token),
                                   event.call_control_id)
            # Command after replying: Telnyx wants its webhook acknowledged quickly, and retries otherwise.
            _in_background(command)
        elif event.client_state.get(TRANSFER_OF, event.call_control_id) != event.call_control_id:
            _person_leg(gateway, event, transfers, event.client_state[TRANSFER_OF], now)
        elif event.event_type == "call.hangup":
            gateway.admission.cancel(event.call_control_id)  # hung up before its media came: free the slot
        return JSONResponse({"received": event.event_type})

    async def media_socket(websocket: WebSocket) -> None:
        gateway = gateway_of(websocket)
        settings = gateway.settings
        opened = await open_media_socket(gateway, websocket, "telnyx", TelnyxMediaStream(), _presented_token)
        if opened is None:
            return
        call, started, grant = opened
        outbound = CODEC_ENCODINGS[settings.telnyx_codec]
        audio = CarrierAudio(started.encoding, started.sample_rate, outbound,
                             settings.telnyx_sample_rate if outbound == "l16" else 8000)
        control = TelnyxControl(gateway.http, settings.telnyx_api_base, grant.call_id,
                                settings.telnyx_api_key.get_secret_value(), settings.carrier_api_timeout_s,
                                base_url=settings.base_url(), whispers=whispers, voice=gateway.agent(grant.agent).voice,
                                transfers=transfers, grant=grant, deterministic_voice=not settings.tts_variation)
        await run_carrier_call(gateway, call, started, grant, audio, control)

    async def whisper(request: Request) -> Response:
        """A warm transfer's whisper, as Telnyx fetches it for the person (`audio_url`)."""
        wav = whispers.take(request.path_params["token"])
        if wav is None:
            return problem(404, "not_found", "No such whisper (or it was already played).")
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    return [Route(WEBHOOK_PATH, call_webhook, methods=["POST"]), WebSocketRoute(MEDIA_PATH, media_socket),
            Route(WHISPER_PATH + "/{token}.wav", whisper, methods=["GET"])]


def _person_leg(gateway: CallGateway, event: CallEvent, transfers: Transfers, caller_leg: str, now: float) -> None:
    """A webhook of the leg a transfer of ours rings (the person's). Answered: the caller is theirs. Hung up
    unanswered (busy, no answer, refused): Telnyx keeps the caller's leg up, so the agent takes it back with
    a new media stream, saying its unanswered line first, as on Twilio and SIP."""
    if event.event_type in ("call.answered", "call.bridged"):
        transfers.answered(caller_leg)
        return
    if event.event_type != "call.hangup":
        return
    grant = transfers.unanswered(caller_leg)
    if grant is None:  # answered before, not ours, or long gone
        return
    settings = gateway.settings
    agent = gateway.agent(grant.agent)
    control = TelnyxControl(gateway.http, settings.telnyx_api_base, caller_leg,
                            settings.telnyx_api_key.get_secret_value(), settings.carrier_api_timeout_s)
    ticket = gateway.admission.try_admit(None, "telnyx")
    if isinstance(ticket, Refusal):
        log.warning("telnyx call %s: nobody took the transfer (%s) and the gateway is full (%s): hanging up",
                    caller_leg, event.hangup_cause or "?", ticket.reason)
        command = _command(control, "hangup", {}, caller_leg)
    else:
        log.info("telnyx call %s: nobody took the transfer (%s); back to agent %s", caller_leg,
                 event.hangup_cause or "?", agent.name)
        gateway.admission.reserve(caller_leg, ticket)
        back = MediaGrant("telnyx", caller_leg, "", agent.name, grant.from_number, grant.to_number,
                          opening=agent.escalation.unanswered_line)
        command = _command(control, "streaming_start", answer_command(settings, agent.name,
                                                                      gateway.media_tokens.mint(back, now)), caller_leg)
    _in_background(command)


def _presented_token(call: CarrierCall, started: StreamStarted) -> str | None:
    """Telnyx echoes the `stream_auth_token` in the upgrade's header and in `connected`."""
    return call.websocket.headers.get("x-telnyx-streaming-auth-token") or (
        call.connected.auth_token if call.connected else None)


async def _command(control: TelnyxControl, action: str, body: dict[str, Any], call_control_id: str) -> None:
    try:
        await control.command(action, body)
    except CarrierApiError as exc:
        log.error("telnyx call %s: %s failed: %s", call_control_id, action, exc)

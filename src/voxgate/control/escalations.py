"""The escalation queue over HTTP: the calls handed to a person, with their summary cards.

    GET /v1/escalations[?state=waiting|transferred|ended]   newest first
    GET /v1/escalations/{call_id}                           one card; 404 when the call was never handed over
    POST /v1/escalations/{call_id}/take_over                an operator's browser takes a waiting browser call
                                                            over (body: its SDP offer; 201: the answer SDP)

Each card says who is calling and why (`voxgate.session.handoff`): what a dashboard shows an operator
before they pick the call up. An operator's API key (`require_api_key`) sees its own calls' and the
gateway's own (phones, the dev console). Taking a call over (`transports/operator_leg.py`) connects the
operator's microphone and speaker to the caller in place of the agent, which stops; it is audited
`escalation.taken_over`.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxgate.control.auth import require_api_key
from voxgate.control.problems import problem
from voxgate.gateway import Principal, gateway_of
from voxgate.protocol.errors import RealtimeError
from voxgate.session.handoff import Handoff
from voxgate.transports.operator_leg import OperatorLeg
from voxgate.transports.webrtc import TRACK_RATE, calls_of, ice_configuration, receive_signalling
from voxgate.transports.webrtc_offer import OfferError, read_offer

log = logging.getLogger("voxgate.escalations")

__all__ = ["routes"]

STATES = ("waiting", "transferred", "ended")


async def list_escalations(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        return problem(400, "invalid_value", f"state must be one of {', '.join(STATES)}.", param="state")
    entries = gateway_of(request).escalations.visible_to(principal.owner, state)
    return JSONResponse({"object": "list", "data": [entry.card() for entry in entries]})


async def _card_for(request: Request) -> tuple[Principal, Handoff] | JSONResponse:
    """The key and the hand-off of the path's call, or the problem: a 404 for a call this key may not see."""
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    entry = gateway_of(request).escalations.get(request.path_params["call_id"])
    if entry is None or not principal.sees(entry.owner):
        return problem(404, "escalation_not_found", "That call was not handed to a person.")
    return principal, entry


async def get_escalation(request: Request) -> Response:
    found = await _card_for(request)
    if isinstance(found, JSONResponse):
        return found
    return JSONResponse(found[1].card())


async def take_over(request: Request) -> Response:
    found = await _card_for(request)
    if isinstance(found, JSONResponse):
        return found
    principal, entry = found
    gateway, call_id = gateway_of(request), entry.call_id
    if entry.state != "waiting":
        return problem(409, "escalation_not_waiting", f"That call is {entry.state.replace('_', ' ')}: only a call "
                       "waiting on the queue can be taken over.")
    call = next((c for c in calls_of(request.app.state) if c.session is not None and c.session.id == call_id), None)
    if call is None or call.operator is not None:
        return problem(409, "not_a_browser_call", "Only a live browser (WebRTC) call on this gateway can be taken "
                       "over from the console; a WebSocket client's app decides who talks to its user.")
    try:
        sdp, _ = await receive_signalling(request, allow_session=False)
        read_offer(sdp)
    except OfferError as exc:
        return problem(400, "invalid_offer", str(exc), param="sdp")
    except RealtimeError as exc:
        return problem(400, exc.code, exc.message, param=exc.param)
    leg = OperatorLeg(principal.key_id, RTCPeerConnection(ice_configuration(gateway.settings)), TRACK_RATE)
    try:
        answer = await leg.answer(sdp)
    except Exception as exc:  # aiortc refuses offers it cannot serve with assorted exception types
        await leg.close()
        log.info("operator's offer refused by aiortc: %r", exc)
        return problem(400, "invalid_offer", "The SDP offer could not be answered: it needs an audio section "
                       "with ICE credentials, a DTLS fingerprint and Opus.", param="sdp")
    if entry.state != "waiting" or call.operator is not None or call.session is None or call.session.closed:
        await leg.close()  # another operator, or the caller's hang-up, came first while the offer was answered
        return problem(409, "escalation_not_waiting", "That call is no longer waiting for an operator.")
    entry.state, entry.taken_by = "taken_over", principal.key_id
    await call.take_over(leg)
    await gateway.calls.audit(principal.key_id, "escalation.taken_over", call_id,
                              {"transport": call.transport, "agent": entry.agent})
    return Response(answer, status_code=201, media_type="application/sdp")


def routes() -> list[Route]:
    return [Route("/v1/escalations", list_escalations), Route("/v1/escalations/{call_id}", get_escalation),
            Route("/v1/escalations/{call_id}/take_over", take_over, methods=["POST"])]

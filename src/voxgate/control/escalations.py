"""The escalation queue over HTTP: the calls handed to a person, with their summary cards.

    GET /v1/escalations[?state=waiting|transferred|ended]   newest first
    GET /v1/escalations/{call_id}                           one card; 404 when the call was never handed over

Each card says who is calling and why (`voxgate.session.handoff`): what a dashboard shows an operator
before they pick the call up. An operator's API key (`require_api_key`) sees its own calls' and the
gateway's own (phones, the dev console).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxgate.control.auth import require_api_key
from voxgate.control.problems import problem
from voxgate.gateway import gateway_of

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


async def get_escalation(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    entry = gateway_of(request).escalations.get(request.path_params["call_id"])
    if entry is None or not principal.sees(entry.owner):
        return problem(404, "escalation_not_found", "That call was not handed to a person.")
    return JSONResponse(entry.card())


def routes() -> list[Route]:
    return [Route("/v1/escalations", list_escalations), Route("/v1/escalations/{call_id}", get_escalation)]

"""`POST /v1/calls`: an operator's API key asks the gateway to phone someone and connect an agent.

    POST /v1/calls {"to": "sip:alice@pbx.example" | "tel:+15551234567" | "+1 555 123 4567",
                    "agent": "acme", "from": "+15550001111", "metadata": {"campaign": "reminders"}}
    -> 202 {"id": "sess_...", "status": "dialing", ...}, Location: /v1/calls/sess_...

The call then rings (`GET /v1/calls/{id}` shows `status` dialing or ringing) and settles: answered (the
call record of its session, `metadata.dial` "answered") or not (a record with status `failed` and the
outcome `busy`, `no_answer` or `failed: <code> <reason>`). A bad body or destination is a 400 problem;
a full gateway or key is refused as at every other door (503/429 with Retry-After).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxgate.admission import Refusal
from voxgate.control.auth import require_api_key
from voxgate.control.problems import problem, refused
from voxgate.control.rate_limit import rate_limited
from voxgate.gateway import gateway_of
from voxgate.transports.sip_dialer import MAX_TO_CHARS, DialError

__all__ = ["MAX_METADATA_CHARS", "place_call", "routes"]

MAX_METADATA_CHARS = 4096
_FORBIDDEN_IN_FROM = frozenset('<>"\r\n;@')


async def place_call(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    gateway = gateway_of(request)
    if not gateway.ready:
        return problem(503, "not_ready", "The gateway is starting.")
    phone = gateway.sip
    if phone is None:
        return problem(503, "sip_unavailable", "Outbound calls need the SIP door: sip_port is 0 or could not be bound.")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return problem(400, "invalid_json", "The body must be a JSON object.")
    to, agent, caller_id, metadata = body.get("to"), body.get("agent"), body.get("from"), body.get("metadata")
    if not isinstance(to, str):
        return problem(400, "missing_required_parameter", "`to` (a sip: or tel: URI or a number) is required.",
                       param="to")
    if agent is not None and (not isinstance(agent, str) or agent not in gateway.agents):
        return problem(400, "invalid_value", "`agent` names no agent of this gateway.", param="agent")
    if caller_id is not None and (not isinstance(caller_id, str) or not 0 < len(caller_id) <= MAX_TO_CHARS
                                  or _FORBIDDEN_IN_FROM & set(caller_id)):
        return problem(400, "invalid_value", "`from` must be a number or a SIP user name.", param="from")
    if metadata is not None and (not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_CHARS):
        return problem(400, "invalid_value", f"`metadata` must be an object of at most {MAX_METADATA_CHARS} "
                       "characters.", param="metadata")
    try:
        destination = await phone.dialer.destination(to)
    except DialError as error:
        return problem(400, error.code, str(error), param="to")
    ticket = gateway.admission.try_admit(principal.owner, "sip")
    if isinstance(ticket, Refusal):
        return refused(ticket)
    call = phone.dialer.place(destination, agent=gateway.agent(agent).name, caller_id=caller_id,
                              owner=principal.owner, ticket=ticket, client_metadata=metadata)
    return JSONResponse(call.view(), status_code=202, headers={"Location": f"/v1/calls/{call.id}"})


def routes() -> list[Route]:
    return [Route("/v1/calls", rate_limited(place_call, "calls"), methods=["POST"])]

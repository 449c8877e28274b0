"""A call's recording and data through the API: download, delete, and marking a live span sensitive.

    GET    /v1/calls/{id}/recording    the audio file (audio/ogg or audio/wav); 404 when the call has none
    DELETE /v1/calls/{id}/recording    the file and its row; 204
    DELETE /v1/calls/{id}              everything kept about an ended call (record, items, tool calls,
                                       recording); 204, or 409 while the call is live
    POST   /v1/calls/{id}/sensitive    {"sensitive": true|false}: the live call's recording is silent until
                                       the span is ended (a card read out to a person, a health history)

Every route takes an operator's API key (`require_api_key`), the one check that roles layer onto; a call
that is another key's is answered as if it did not exist. Reads and deletions are written to the audit
trail (`audit_recording_access`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from voxgate.audio.recording_file import CONTENT_TYPES, RecordingFormat
from voxgate.control.auth import operator_route
from voxgate.control.problems import problem
from voxgate.gateway import Gateway, Principal, gateway_of

__all__ = ["audit_recording_access", "routes"]


async def audit_recording_access(gateway: Gateway, principal: Principal, action: str, call_id: str) -> None:
    """The audit trail's entry for a read or deletion of a call's recording or data (one place: the
    tamper-evident audit log hooks in here)."""
    await gateway.calls.audit(principal.key_id, action, call_id)


def _not_found() -> Response:
    return problem(404, "call_not_found", "No call with that id.")


def _no_recording() -> Response:
    return problem(404, "recording_not_found", "That call has no recording.")


@operator_route("recordings.read")
async def get_recording(request: Request, principal: Principal) -> Response:
    gateway = gateway_of(request)
    call_id = request.path_params["call_id"]
    row = await gateway.recordings.get(call_id, visible_to=principal.owner)
    if row is None or not row.path.is_file():
        return _no_recording()
    await audit_recording_access(gateway, principal, "recording.read", call_id)
    fmt: RecordingFormat = "wav" if row.format == "wav" else "opus"
    return FileResponse(row.path, media_type=CONTENT_TYPES[fmt], filename=f"{call_id}{row.path.suffix}")


@operator_route("recordings.delete")
async def delete_recording(request: Request, principal: Principal) -> Response:
    gateway = gateway_of(request)
    call_id = request.path_params["call_id"]
    if await gateway.recordings.get(call_id, visible_to=principal.owner) is None:
        return _no_recording()
    await gateway.retention.delete_recording(call_id)
    await audit_recording_access(gateway, principal, "recording.deleted", call_id)
    return Response(status_code=204)


@operator_route("calls.delete")
async def delete_call(request: Request, principal: Principal) -> Response:
    gateway = gateway_of(request)
    call_id = request.path_params["call_id"]
    if not await gateway.recordings.call_visible(call_id, visible_to=principal.owner):
        return _not_found()
    if call_id in gateway.sessions:
        return problem(409, "call_active", "The call is still live: hang it up first.")
    await gateway.retention.delete_call(call_id)
    await audit_recording_access(gateway, principal, "call.deleted", call_id)
    return Response(status_code=204)


@operator_route("calls.control")
async def mark_sensitive(request: Request, principal: Principal) -> Response:
    gateway = gateway_of(request)
    session = gateway.sessions.get(request.path_params["call_id"])
    if session is None or not principal.sees(session.recorder.owner if session.recorder else None):
        return problem(404, "call_not_found", "No live call with that id.")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("sensitive"), bool):
        return problem(400, "invalid_value", "The body must be {\"sensitive\": true} or {\"sensitive\": false}.",
                       param="sensitive")
    session.mark_sensitive(body["sensitive"])
    return JSONResponse({"call_id": session.id, "sensitive": session.marked_sensitive,
                         "recording": session.recording is not None})


def routes() -> list[Route]:
    return [
        Route("/v1/calls/{call_id}/recording", get_recording, methods=["GET"]),
        Route("/v1/calls/{call_id}/recording", delete_recording, methods=["DELETE"]),
        Route("/v1/calls/{call_id}/sensitive", mark_sensitive, methods=["POST"]),
        Route("/v1/calls/{call_id}", delete_call, methods=["DELETE"]),
    ]

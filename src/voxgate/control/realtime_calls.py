"""OpenAI's call-control routes, `POST /v1/realtime/calls/{call_id}/{accept,reject,refer,hangup}`: the thin
HTTP shell over `control/call_control.py` for SIP calls an app controls, and over the WebRTC calls.

Each answers 200 with an empty body, as OpenAI does, so `client.realtime.calls.*` of the official SDK
works by changing its base URL. Every route needs an API key that may act on the call (`Principal.sees`:
a key's own calls and the gateway's; another key's call is answered 404 as if it did not exist).

    accept  SIP: the body is the session (`type: "realtime"`, instructions, tools, ...), checked as a
            `session.update` for the route's agent would be (400 naming the field); answers once the
            caller has the 200 OK. WebRTC: 409, the call was accepted when it was created.
    reject  SIP: `{status_code?}` (default 603) to the INVITE. WebRTC: 409.
    refer   SIP: `{target_uri}` (tel:/sip:) as a REFER's Refer-To; 200 once it is handed to the line.
            WebRTC: 400 `refer_not_supported` (a browser has no phone line to transfer).
    hangup  both: the call ends (SIP: BYE; a ringing SIP call is declined 603).
    unknown 404; ended lately or already decided: 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxgate.control.auth import Endpoint, require_api_key
from voxgate.control.call_control import CallControlError, refer_target, reject_status, session_of
from voxgate.control.ephemeral import validate_session
from voxgate.control.problems import problem
from voxgate.gateway import Gateway, gateway_of
from voxgate.protocol.errors import RealtimeError
from voxgate.transports.controlled_sip_calls import ControlledSipCall
from voxgate.transports.webrtc import WebRtcCall, calls_of

__all__ = ["routes"]

MAX_BODY_BYTES = 256 * 1024  # a session config with many tools: tens of KiB


def _find(request: Request, gateway: Gateway, call_id: str) -> WebRtcCall | ControlledSipCall:
    """The call on either transport; CallControlError 404 (or 409 for a SIP call that ended lately)."""
    webrtc = calls_of(request.app.state).get(call_id)
    if webrtc is not None:
        return webrtc
    if gateway.sip is None:
        raise CallControlError(404, "call_id_not_found", f"No call {call_id!r}.")
    return gateway.sip.controlled.find(call_id)


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise CallControlError(413, "request_too_large", f"The body is over {MAX_BODY_BYTES} bytes.")
    return body


Action = Callable[[Request, Gateway, WebRtcCall | ControlledSipCall, bytes], Awaitable[None]]
AUDITED = {"accept": "call.accepted", "reject": "call.rejected", "refer": "call.referred", "hangup": "call.hung_up"}


def _route(action: Action) -> Endpoint:
    """The shared shell: the key, the call (and whether this key may act on it), the body, the problem."""

    async def endpoint(request: Request) -> Response:
        principal = await require_api_key(request)
        if isinstance(principal, JSONResponse):
            return principal
        gateway = gateway_of(request)
        call_id = request.path_params["call_id"]
        try:
            call = _find(request, gateway, call_id)
            if not principal.sees(call.owner):
                raise CallControlError(404, "call_id_not_found", f"No call {call_id!r}.")
            before = getattr(call, "session", None)  # a call lets go of its session once it has ended
            await action(request, gateway, call, await _body(request))
            # Who steered which call, in the audit log (the call record's id: a WebRTC call's session's).
            session = getattr(call, "session", None) or before
            await gateway.calls.audit(principal.key_id, AUDITED[action.__name__],
                                      session.id if session is not None else call.id,
                                      {"transport": "webrtc" if isinstance(call, WebRtcCall) else "sip"})
        except CallControlError as exc:
            return problem(exc.status, exc.code, exc.message, param=exc.param)
        except RealtimeError as exc:  # the session config failed validation
            return problem(400, exc.code, exc.message, param=exc.param)
        return Response(status_code=200)

    return endpoint


def _already_accepted(call: WebRtcCall) -> CallControlError:
    return CallControlError(409, "call_not_pending", f"Call {call.id} is a WebRTC call: it was accepted when "
                            "it was created.")


async def accept(request: Request, gateway: Gateway, call: WebRtcCall | ControlledSipCall, body: bytes) -> None:
    if isinstance(call, WebRtcCall):
        raise _already_accepted(call)
    session = session_of(body)
    patch, _ = await validate_session(gateway, session, "ga", call.agent_name)
    patch.pop("type", None)  # the session's own field, not a setting
    await call.accept(patch)


async def reject(request: Request, gateway: Gateway, call: WebRtcCall | ControlledSipCall, body: bytes) -> None:
    if isinstance(call, WebRtcCall):
        raise _already_accepted(call)
    call.reject(reject_status(body))


async def refer(request: Request, gateway: Gateway, call: WebRtcCall | ControlledSipCall, body: bytes) -> None:
    if isinstance(call, WebRtcCall):
        raise CallControlError(400, "refer_not_supported", f"Call {call.id} is a WebRTC call: there is no phone "
                               "line to transfer. Refer works on SIP calls.")
    await call.refer(refer_target(body))


async def hangup(request: Request, gateway: Gateway, call: WebRtcCall | ControlledSipCall, body: bytes) -> None:
    if isinstance(call, WebRtcCall):
        await call.close("hangup_requested")
    else:
        call.hang_up()


def routes(around: Callable[[Endpoint], Endpoint] = lambda endpoint: endpoint) -> list[Route]:
    """The four routes; `around` wraps each (the cluster's `on_holding_node`: a call is steered on its node)."""
    return [Route(f"/v1/realtime/calls/{{call_id}}/{action.__name__}", around(_route(action)), methods=["POST"])
            for action in (accept, reject, refer, hangup)]

"""The operators' API: calls (filtered, paged by cursor, hung up or transferred while live), KPIs against
their targets, and cost in money.

    GET  /v1/calls?since=&until=&agent=&transport=&status=&limit=&cursor=   newest first
    GET  /v1/calls/{id}                                   record, transcript, tools, latency, barge-ins
    POST /v1/calls/{id}/hangup    {"reason": "..."}       a live call on any transport
    POST /v1/calls/{id}/transfer  {"target": "...", "reason": "..."}   a live phone call
    GET  /v1/stats?since=&until=&agent=&transport=        KPIs, each with its target and whether it is met
    GET  /v1/stats/cost?since=&until=&agent=&transport=   cost totals, per agent, transport and day

Requests and answers are the models of control/schema.py, which /openapi.json is made from. Every route
has one auth check, `operator_route(action)`, where roles on keys will plug in.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxgate.control import schema
from voxgate.control.auth import Endpoint, operator_route
from voxgate.control.problems import problem
from voxgate.gateway import Gateway, Principal, gateway_of
from voxgate.observability.cost import CostModel, cost_report
from voxgate.observability.kpi_targets import judged
from voxgate.session.session import PHONE_TRANSPORTS, Session

__all__ = ["routes"]

Model = TypeVar("Model", bound=BaseModel)


class InvalidRequestError(ValueError):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def parsed(model: type[Model], data: Any) -> Model:
    """`data` as `model`, or InvalidRequestError naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(f"{param or 'request'}: {first['msg']}", param) from None


def answer(model: type[BaseModel], data: Any, status: int = 200) -> JSONResponse:
    """`data` shaped by its response model: what leaves is what /openapi.json promises."""
    return JSONResponse(model.model_validate(data).model_dump(mode="json"), status_code=status)


async def body_of(request: Request, model: type[Model]) -> Model:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise InvalidRequestError("The body must be JSON.", None) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The body must be a JSON object.", None)
    return parsed(model, data)


def encode_cursor(call: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps([call["started_at"], call["id"]]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        started_at, call_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(started_at), str(call_id)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidRequestError("cursor: not a cursor this API gave out.", "cursor") from None


def invalid(exc: InvalidRequestError) -> JSONResponse:
    return problem(400, "invalid_request", str(exc), param=exc.param)


# -- calls -------------------------------------------------------------------------------------------


@operator_route("calls.read")
async def list_calls(request: Request, principal: Principal) -> Response:
    try:
        query = parsed(schema.CallsQuery, dict(request.query_params))
        after = decode_cursor(query.cursor) if query.cursor else None
    except InvalidRequestError as exc:
        return invalid(exc)
    calls = await gateway_of(request).calls.list_calls(
        limit=query.limit + 1, status=query.status, agent=query.agent, transport=query.transport,
        since=query.since, until=query.until, after=after, visible_to=principal.owner)
    page, has_more = calls[:query.limit], len(calls) > query.limit
    return answer(schema.CallList, {"data": page, "has_more": has_more,
                                    "next_cursor": encode_cursor(page[-1]) if has_more else None})


@operator_route("calls.read")
async def get_call(request: Request, principal: Principal) -> Response:
    # Another key's call is answered as if it did not exist.
    gateway = gateway_of(request)
    call_id = request.path_params["call_id"]
    call = await gateway.calls.get_call(call_id, visible_to=principal.owner)
    if call is None:
        dialing = gateway.sip.dialer.view(call_id) if gateway.sip is not None else None
        if dialing is None or not principal.sees(dialing.owner):
            return problem(404, "call_not_found", "No call with that id.")
        return answer(schema.DialingCall, dialing.view())  # an outbound call still ringing: no record yet
    await gateway.calls.audit(principal.key_id, "transcript.read", call_id)
    return answer(schema.CallDetail, call)


async def live_session(gateway: Gateway, principal: Principal, call_id: str) -> Session | JSONResponse:
    """The live call's session, or the problem to answer: unknown (or another key's), or already over."""
    session = gateway.sessions.get(call_id)
    if session is not None and principal.sees(session.recorder.owner if session.recorder else None):
        return session
    if session is None and await gateway.calls.get_call(call_id, visible_to=principal.owner) is not None:
        return problem(409, "call_not_live", "The call has ended.")
    return problem(404, "call_not_found", "No call with that id.")


async def live_call_request(request: Request, principal: Principal,
                            model: type[Model]) -> tuple[Session, Model] | JSONResponse:
    """The body of a request on a live call, and the call's session; or the problem to answer."""
    try:
        body = await body_of(request, model)
    except InvalidRequestError as exc:
        return invalid(exc)
    session = await live_session(gateway_of(request), principal, request.path_params["call_id"])
    return session if isinstance(session, JSONResponse) else (session, body)


@operator_route("calls.control")
async def hang_up(request: Request, principal: Principal) -> Response:
    live = await live_call_request(request, principal, schema.HangupRequest)
    if isinstance(live, JSONResponse):
        return live
    session, body = live
    await gateway_of(request).calls.audit(principal.key_id, "call.hung_up", session.id,
                                          {"transport": session.caller.transport})
    await session.hang_up(f"operator hang-up: {body.reason}")
    return answer(schema.CallAction, {"id": session.id, "status": "hanging_up"}, status=202)


@operator_route("calls.control")
async def transfer(request: Request, principal: Principal) -> Response:
    live = await live_call_request(request, principal, schema.TransferRequest)
    if isinstance(live, JSONResponse):
        return live
    session, body = live
    if session.caller.transport not in PHONE_TRANSPORTS:  # an app or browser has no line to move
        return problem(409, "transfer_unsupported",
                       f"A {session.caller.transport} call cannot be transferred: only phone calls can.")
    await session.transfer(body.target, f"operator transfer: {body.reason}")
    return answer(schema.CallAction, {"id": session.id, "status": "transferring"}, status=202)


# -- KPIs and cost -------------------------------------------------------------------------------------


@operator_route("stats.read")
async def stats(request: Request, principal: Principal) -> Response:
    try:
        window = parsed(schema.Window, dict(request.query_params))
    except InvalidRequestError as exc:
        return invalid(exc)
    targets = gateway_of(request).settings.kpi_targets
    figures = await gateway_of(request).calls.kpis(
        window.since, until=window.until, agent=window.agent, transport=window.transport,
        visible_to=principal.owner, interruption_stop_ms=targets.interruption_stop_ms)
    return answer(schema.Stats, {**figures, "targets": judged(figures, targets)})


@operator_route("stats.read")
async def cost(request: Request, principal: Principal) -> Response:
    try:
        window = parsed(schema.Window, dict(request.query_params))
    except InvalidRequestError as exc:
        return invalid(exc)
    gateway = gateway_of(request)
    calls = await gateway.calls.finished_calls(window.since, until=window.until, agent=window.agent,
                                               transport=window.transport, visible_to=principal.owner)
    return answer(schema.CostReport, cost_report(calls, CostModel(gateway.settings.prices)))


def routes(around: Callable[[Endpoint], Endpoint] = lambda endpoint: endpoint) -> list[Route]:
    """In app order: the literal paths before `/v1/calls/{call_id}`. `around` wraps the routes that act on
    a live call (the cluster's `on_holding_node`: run on the node holding it)."""
    return [
        Route("/v1/calls", list_calls, methods=["GET"]),
        Route("/v1/calls/{call_id}", get_call, methods=["GET"]),
        Route("/v1/calls/{call_id}/hangup", around(hang_up), methods=["POST"]),
        Route("/v1/calls/{call_id}/transfer", around(transfer), methods=["POST"]),
        Route("/v1/stats", stats, methods=["GET"]),
        Route("/v1/kpis", stats, methods=["GET"]),  # the older name of /v1/stats
        Route("/v1/stats/cost", cost, methods=["GET"]),
    ]

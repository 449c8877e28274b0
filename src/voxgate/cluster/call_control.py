"""Call control on any node: a route naming a call runs on the node that holds the call.

    Route("/v1/realtime/calls/{call_id}/hangup", on_holding_node(hangup_call), methods=["POST"])

Any HTTP route with a `{call_id}` path parameter can be wrapped: refer, accept, reject, transfer, hangup.
The route runs here when there is no cluster (no `redis_url`), when this node holds the call, or when no
live node does (the route's own "no such call" answer); otherwise the request is carried to the holder
(`ClusterNode.relay`), run there by the same route, and its answer is this node's answer. The caller
cannot tell which node held the call. When the registry or the holder cannot be reached the answer is
503 with Retry-After: the call may well be alive there, so "not found" would be a lie.

A WebSocket naming a call (the sideband, `/v1/realtime?call_id=...`) is the same, frames both ways:

    await attach_on_holding_node(websocket, call_id, lambda: attach_sideband(websocket, principal))

runs the attach here, or carries the socket to the holder (`ClusterNode.carry`), whose own route decides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from voxgate.cluster.node import RelayFailed
from voxgate.cluster.relay import RELAYED, unreachable
from voxgate.control.auth import Endpoint
from voxgate.gateway import gateway_of

__all__ = ["attach_on_holding_node", "on_holding_node", "run_on_holding_node"]

log = logging.getLogger("voxgate.cluster")

async def run_on_holding_node(request: Request, endpoint: Endpoint) -> Response:
    """`endpoint(request)` on the node holding the call that `request.path_params["call_id"]` names."""
    cluster = gateway_of(request).cluster
    call_id = str(request.path_params.get("call_id", ""))
    if cluster is None or request.scope.get(RELAYED) or cluster.holds(call_id):
        return await endpoint(request)
    try:
        node = await cluster.holder(call_id)
        answer = await cluster.relay(request, node) if node is not None and node != cluster.node else None
    except RelayFailed as exc:
        log.warning("call %s: control request not carried to its node: %s", call_id, exc)
        return unreachable()
    return answer.response() if answer is not None else await endpoint(request)


async def attach_on_holding_node(websocket: WebSocket, call_id: str, attach: Callable[[], Awaitable[None]]) -> None:
    """`attach()` here, or `websocket` served by the node holding `call_id` (see the module's docs)."""
    cluster = gateway_of(websocket).cluster
    if cluster is None or websocket.scope.get(RELAYED) or cluster.holds(call_id):
        await attach()
        return
    try:
        node = await cluster.holder(call_id)
        carried = node is not None and node != cluster.node and await cluster.carry(websocket, node)
    except RelayFailed as exc:
        log.warning("call %s: WebSocket not carried to its node: %s", call_id, exc)
        await websocket.send_denial_response(unreachable())
        return
    if not carried:
        await attach()


def on_holding_node(endpoint: Endpoint) -> Endpoint:
    """`endpoint` as a route that runs on the node holding the call it names (see the module's docs)."""

    async def routed(request: Request) -> Response:
        return await run_on_holding_node(request, endpoint)

    return routed

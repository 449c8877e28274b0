"""Who is calling: the key on a request (header or browser subprotocol), and what it may do."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxgate.control.problems import problem
from voxgate.gateway import Principal, gateway_of


def bearer_token(headers: Any, subprotocols: list[str] | None = None) -> str | None:
    """`Authorization: Bearer <key>`, or a browser's `openai-insecure-api-key.<key>` subprotocol."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return str(auth[7:].strip())
    for proto in subprotocols or []:
        if proto.startswith("openai-insecure-api-key."):
            return proto[len("openai-insecure-api-key."):]
    return None


async def require_api_key(request: Request) -> Principal | JSONResponse:
    """An operator's API key; ephemeral keys may only open a realtime session."""
    principal = await gateway_of(request).authenticate(bearer_token(request.headers))
    if principal is None:
        return problem(401, "invalid_api_key", "Missing or invalid API key.")
    if principal.kind == "ephemeral":
        return problem(403, "ephemeral_key_not_allowed", "Ephemeral keys can only open a realtime session.")
    return principal


# An operator route: (request, the key's principal) -> response.
OperatorHandler = Callable[[Request, Principal], Awaitable[Response]]


def operator_route(action: str) -> Callable[[OperatorHandler], Callable[[Request], Awaitable[Response]]]:
    """The one auth check of an operator route: an API key (`require_api_key`) allowed to do `action`
    ("calls.read", "calls.control", "stats.read", "dashboard.read"). Every operator key may do every action
    today; roles on keys plug in here, naming the actions each role allows."""

    def wrap(handler: OperatorHandler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def route(request: Request) -> Response:
            principal = await require_api_key(request)
            if isinstance(principal, JSONResponse):
                return principal
            return await handler(request, principal)

        route.action = action  # type: ignore[attr-defined]  # what the route needs, for roles and docs
        return route

    return wrap

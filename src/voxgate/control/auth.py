"""Who is calling: the key on a request (header or browser subprotocol), and what it may do."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from voxgate.control.problems import problem
from voxgate.control.route_roles import ACCESS_SCOPE_KEY, ADMIN_ONLY, Needs
from voxgate.gateway import Principal, gateway_of

_PRINCIPAL_SCOPE_KEY = "voxgate.principal"  # a request's key, once checked: routes ask more than once


def bearer_token(headers: Any, subprotocols: list[str] | None = None) -> str | None:
    """`Authorization: Bearer <key>`, or a browser's `openai-insecure-api-key.<key>` subprotocol."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return str(auth[7:].strip())
    for proto in subprotocols or []:
        if proto.startswith("openai-insecure-api-key."):
            return proto[len("openai-insecure-api-key."):]
    return None


async def principal_of(conn: Request | WebSocket) -> Principal | JSONResponse:
    """The request's key, if it holds one of the roles its route declares (control/route_roles.py): else a
    401 problem (no or unknown key) or a 403 one (a key without the role, audited)."""
    checked = conn.scope.get(_PRINCIPAL_SCOPE_KEY)
    if isinstance(checked, Principal):
        return checked
    gateway = gateway_of(conn)
    subprotocols = list(conn.scope.get("subprotocols") or [])
    principal = await gateway.authenticate(bearer_token(conn.headers, subprotocols))
    if principal is None:
        return problem(401, "invalid_api_key", "Missing, invalid, expired or already used key.")
    # A public route asks no roles of a key it is given; an app built without `declared` routes, only admin's.
    needs = conn.scope.get(ACCESS_SCOPE_KEY, Needs(ADMIN_ONLY, route=f"{conn.url.path} (no declared roles)"))
    if isinstance(needs, Needs) and principal.roles.isdisjoint(needs.roles):
        wanted = ", ".join(sorted(needs.roles))
        await gateway.calls.audit(principal.key_id, "access.denied", needs.route,
                                  {"roles": sorted(principal.roles), "needs": sorted(needs.roles)})
        return problem(403, "role_forbidden", f"This key's roles ({', '.join(sorted(principal.roles)) or 'none'}) "
                       f"do not allow {needs.route}; it needs one of: {wanted}.")
    conn.scope[_PRINCIPAL_SCOPE_KEY] = principal
    return principal


async def require_api_key(request: Request) -> Principal | JSONResponse:
    """An operator's API key holding one of the route's roles; ephemeral keys may only open a realtime session."""
    principal = await principal_of(request)
    if isinstance(principal, JSONResponse):
        return principal
    if principal.kind == "ephemeral":
        return problem(403, "ephemeral_key_not_allowed", "Ephemeral keys can only open a realtime session.")
    return principal


# An operator route: (request, the key's principal) -> response.
Endpoint = Callable[[Request], Awaitable[Response]]  # an HTTP route's handler
OperatorHandler = Callable[[Request, Principal], Awaitable[Response]]


def operator_route(action: str) -> Callable[[OperatorHandler], Callable[[Request], Awaitable[Response]]]:
    """The one auth check of an operator route: an API key (`require_api_key`) allowed to do `action`
    ("calls.read", "calls.control", "calls.delete", "recordings.read", "recordings.delete", "stats.read"),
    recorded on the route for docs. Which roles may call the route is control/route_roles.py's, checked with
    the key."""

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

"""Who is calling: the key on a request (header or browser subprotocol), and what it may do."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

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

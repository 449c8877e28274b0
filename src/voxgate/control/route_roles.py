"""Which roles may use each route: one line per route in `ROUTE_ROLES`, checked when the key is.

    "GET /v1/calls/{call_id}": READERS,          # any one of these roles (voxgate/roles.py)
    "POST /twilio/voice": Public("Twilio's signature"),  # no key: who checks the caller instead

Keys are "METHOD path" for HTTP routes, "WS path" for WebSocket routes and "MOUNT path" for mounts, the
path as the route declares it. `declared(routes)` marks each route's requests with its entry; the key
check (`control/auth.py`, `principal_of`) refuses a key holding none of the route's roles with a 403
problem and audits the refusal. A route missing from the table is admin-only (and logged at start-up);
tests/integration/test_route_roles.py fails for it, so adding a route means adding its line here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voxgate.roles import ANY_ROLE, CALLERS, READERS, Role

log = logging.getLogger("voxgate")

ACCESS_SCOPE_KEY = "voxgate.access"  # where a request carries its route's entry


@dataclass(frozen=True)
class Public:
    """A route that takes no API key; `why` says who checks the caller instead (or that nobody needs to)."""

    why: str


@dataclass(frozen=True)
class Needs:
    """A route that takes a key holding one of `roles`. `open_when` names a boolean setting that, when
    true, opens the route to callers without a key (a key given is still checked)."""

    roles: frozenset[str]
    open_when: str | None = None
    route: str = ""  # the table's key, for messages and the audit log


Access = Public | Needs

ADMIN_ONLY = frozenset({Role.ADMIN})
OPERATORS = frozenset({Role.ADMIN, Role.OPERATOR})  # what deletes a caller's data

ROUTE_ROLES: dict[str, frozenset[str] | Public | Needs] = {
    "GET /": Public("the console page; what it may do is checked by /console/token"),
    "POST /console/token": Needs(CALLERS),  # or, without a key, the dev-mode console session
    "GET /console/calls/{call_id}": Needs(READERS),  # or, without a key, the dev-mode console session
    "MOUNT /static": Public("the console's static files"),
    "GET /healthz": Public("liveness: says nothing about calls"),
    "GET /readyz": Public("readiness for load balancers: call counts, no call data"),
    "GET /metrics": Needs(READERS, open_when="metrics_public"),
    "WS /v1/realtime": CALLERS,  # sessions, and sideband joins of a key's own WebRTC calls
    "POST /v1/realtime": CALLERS,
    "POST /v1/realtime/calls": CALLERS,
    "POST /v1/realtime/calls/{call_id}/accept": CALLERS,  # OpenAI's SIP call control, served (#12)
    "POST /v1/realtime/calls/{call_id}/reject": CALLERS,
    "POST /v1/realtime/calls/{call_id}/refer": CALLERS,
    "POST /v1/realtime/calls/{call_id}/hangup": CALLERS,
    "POST /v1/realtime/client_secrets": CALLERS,
    "POST /v1/realtime/client_secrets/revoke": CALLERS,
    "POST /v1/realtime/sessions": CALLERS,
    "GET /v1/calls": READERS,
    "POST /v1/calls": CALLERS,
    "GET /v1/calls/{call_id}": READERS,  # the transcript
    "POST /v1/calls/{call_id}/hangup": CALLERS,  # a key's own calls (an operator's: the gateway's too)
    "POST /v1/calls/{call_id}/transfer": CALLERS,
    "GET /v1/stats": READERS,
    "GET /v1/stats/cost": READERS,
    "GET /openapi.json": Public("the API's schema: no call data"),
    "GET /dashboard": Public("the page alone: every number on it comes from routes that take a key"),
    "GET /v1/calls/{call_id}/recording": READERS,  # the audio: audited as recording.read
    "DELETE /v1/calls/{call_id}/recording": OPERATORS,
    "DELETE /v1/calls/{call_id}": OPERATORS,  # the call's record, items, tool calls and recording
    "POST /v1/calls/{call_id}/sensitive": CALLERS,  # silences a span of the recording: protective, so an app may
    "GET /v1/escalations": READERS,
    "GET /v1/escalations/{call_id}": READERS,
    "POST /v1/escalations/{call_id}/take_over": OPERATORS,  # the operator's voice replaces the agent's
    "GET /v1/kpis": READERS,
    "GET /v1/agents": ANY_ROLE,
    "POST /v1/audio/transcriptions": CALLERS,
    "POST /v1/audio/speech": CALLERS,
    "POST /v1/chat/completions": CALLERS,
    "POST /twilio/voice": Public("Twilio's request signature (X-Twilio-Signature)"),
    "WS /twilio/media": Public("a single-use media token minted by the signed voice webhook"),
    "POST /twilio/whisper/{token}": Public("Twilio's request signature and a single-use whisper token"),
    "POST /twilio/dial-ended": Public("Twilio's request signature (and a dial ends once)"),
    "POST /openai/sip/webhook": Public("OpenAI's Standard Webhooks signature (openai_webhook_secret)"),
    "POST /telnyx/webhook": Public("Telnyx's Ed25519 webhook signature"),
    "WS /telnyx/media": Public("a single-use media token minted by the signed call webhook"),
    "GET /telnyx/whisper/{token}.wav": Public("an unguessable whisper token, a few fetches within minutes"),
}


def route_keys(route: BaseRoute) -> list[str]:
    """The table keys a route answers to: one per method (HEAD goes with GET)."""
    if isinstance(route, Mount):
        return [f"MOUNT {route.path}"]
    if isinstance(route, WebSocketRoute):
        return [f"WS {route.path}"]
    if isinstance(route, Route):
        return [f"{method} {route.path}" for method in sorted(route.methods or {"GET"}) if method != "HEAD"]
    return [f"? {route!r}"]


def access_of(key: str) -> Access | None:
    entry = ROUTE_ROLES.get(key)
    if entry is None or isinstance(entry, Public):
        return entry
    needs = entry if isinstance(entry, Needs) else Needs(frozenset(entry))
    return Needs(needs.roles, needs.open_when, key)


def _marked_http(endpoint: Callable[[Request], Awaitable[Response]],
                 by_method: dict[str, Access]) -> Callable[[Request], Awaitable[Response]]:
    async def marked(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        request.scope[ACCESS_SCOPE_KEY] = by_method.get(method, Needs(ADMIN_ONLY, route=f"{method} ?"))
        return await endpoint(request)

    return marked


def _marked_websocket(endpoint: Callable[[WebSocket], Awaitable[None]],
                      access: Access) -> Callable[[WebSocket], Awaitable[None]]:
    async def marked(websocket: WebSocket) -> None:
        websocket.scope[ACCESS_SCOPE_KEY] = access
        await endpoint(websocket)

    return marked


def declared(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """`routes`, each marking its requests with its `ROUTE_ROLES` entry; undeclared ones admin-only."""
    out: list[BaseRoute] = []
    for route in routes:
        keys = route_keys(route)
        missing = [key for key in keys if key not in ROUTE_ROLES]
        if missing:
            log.warning("no role declared for %s in control/route_roles.py: admin keys only", ", ".join(missing))
        accesses = {key: access_of(key) or Needs(ADMIN_ONLY, route=key) for key in keys}
        if isinstance(route, Route) and route.methods is not None:
            by_method = {key.split(" ", 1)[0]: access for key, access in accesses.items()}
            out.append(Route(route.path, _marked_http(route.endpoint, by_method), methods=sorted(route.methods),
                             name=route.name))
        elif isinstance(route, WebSocketRoute):
            out.append(WebSocketRoute(route.path, _marked_websocket(route.endpoint, accesses[keys[0]]),
                                      name=route.name))
        else:  # mounts serve files: declared public, or refused at merge by the test
            out.append(route)
    return out

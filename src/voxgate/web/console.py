"""The voice console at `/`: a page that talks to an agent from the browser, and the routes it needs.

The page does what the docs tell users to do: it never holds an API key, it asks its own server for
an ephemeral key (`POST /console/token`), then posts its SDP offer to `/v1/realtime/calls` with that
key. In dev mode the token route is open (anyone who can reach the gateway may mint a console key);
otherwise it needs the operator's API key as a Bearer token, which the page asks for and keeps only
in memory.

While a call is live, `GET /console/calls/{call_id}` returns its tool calls (gateway tools run inside
the session and are hidden from Realtime clients). The call id from the `Location` header is the
credential: it is random, known only to the peer that created the call, and dies with the call.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from voxgate.control.auth import require_api_key
from voxgate.control.ephemeral import mint, validate_session
from voxgate.control.problems import problem
from voxgate.gateway import Principal, gateway_of
from voxgate.transports.webrtc import calls_of

STATIC_DIR = Path(__file__).resolve().parent / "static"
# What a console call binds: the agent's defaults, with the caller's words transcribed for the page.
CONSOLE_SESSION = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


async def console_index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def console_token(request: Request) -> Response:
    """`POST /console/token`: an ephemeral key for one console call (open in dev mode)."""

    gateway = gateway_of(request)
    principal: Principal | JSONResponse
    if gateway.settings.dev_mode and not request.headers.get("authorization"):
        principal = Principal(key_id="console-dev", kind="static")
    else:
        principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    if not gateway.ready:
        return problem(503, "not_ready", "The gateway is starting.")
    ga_patch, config = await validate_session(gateway, CONSOLE_SESSION, "ga")
    secret, expires_at = await mint(gateway, principal, ga_patch, gateway.settings.ephemeral_ttl_s, "ga")
    config.expires_at = expires_at
    return JSONResponse({"value": secret, "expires_at": expires_at, "session": config.to_ga(),
                         "ice_servers": gateway.settings.ice_servers},
                        headers={"Cache-Control": "no-store"})


async def console_call(request: Request) -> Response:
    """`GET /console/calls/{call_id}`: the live call's tool calls, for the page to show as they happen."""

    call = calls_of(request.app.state).get(request.path_params["call_id"])
    if call is None or call.session is None:
        return problem(404, "call_id_not_found", "No live call with that id.")
    record = await gateway_of(request).calls.get_call(call.session.id)
    tool_calls = record["tool_calls"] if record else []
    return JSONResponse({"id": call.id, "session_id": call.session.id, "status": "live",
                         "tool_calls": tool_calls}, headers={"Cache-Control": "no-store"})

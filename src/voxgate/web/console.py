"""The voice console at `/`: a page that talks to an agent from the browser, and the routes it needs.

The page does what the docs tell users to do: it never holds an API key, it asks its own server for
an ephemeral key (`POST /console/token`), then posts its SDP offer to `/v1/realtime/calls` with that
key. The token route takes the operator's API key as a Bearer token (the page asks for it and keeps
it only in memory), or, in dev mode, the console session of a page this gateway served: a per-process
secret set as an HttpOnly, SameSite=Strict cookie with the page, and an Origin that is the gateway's
own. A page on another origin gets neither (its browser withholds the cookie and names its own
Origin), so it cannot mint a key; with the cookie but a foreign Origin the answer is 403.

While a call is live, `GET /console/calls/{call_id}` returns its tool calls (gateway tools run inside
the session and are hidden from Realtime clients), to the key that owns the call or, for a call the
dev console started, to the console session.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from voxgate.control.auth import require_api_key
from voxgate.control.ephemeral import mint, validate_session
from voxgate.control.origin_policy import OriginPolicy
from voxgate.control.problems import problem
from voxgate.gateway import Principal, gateway_of
from voxgate.roles import Role
from voxgate.transports.webrtc import calls_of

STATIC_DIR = Path(__file__).resolve().parent / "static"
# What a console call binds: the agent's defaults, with the caller's words transcribed for the page.
CONSOLE_SESSION = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
COOKIE = "voxgate_console"
# The dev console's calls are the gateway's own (no key owns them), like phone calls.
# The dev-mode console page: an operator at this machine trying agents out.
CONSOLE_PRINCIPAL = Principal(key_id="console", kind="console", owner=None, roles=frozenset({Role.OPERATOR}))


class ConsoleAccess:
    """The dev-mode console session: a secret made once per process, held by pages this gateway served."""

    def __init__(self, policy: OriginPolicy, *, dev_mode: bool) -> None:
        self.policy = policy
        self.dev_mode = dev_mode
        self._secret = secrets.token_urlsafe(32)

    def hand_out(self, request: Request, response: Response) -> None:
        """Give the page its session (dev mode only): script on the page cannot read it, other sites never send it."""
        if self.dev_mode:
            response.set_cookie(COOKIE, self._secret, path="/console", httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")

    def refusal(self, request: Request, *, origin_required: bool) -> JSONResponse | None:
        """Why this request does not come from a console page of ours; None when it does.

        Browsers send Origin on every POST, so the token route requires it; a same-origin GET has none.
        """
        if not self.dev_mode:
            return problem(401, "invalid_api_key", "This gateway is not in dev mode: the console needs an "
                           "operator API key (Authorization: Bearer ...).")
        origin = request.headers.get("origin")
        if (origin is None and origin_required) or (
                origin is not None and not self.policy.same_origin(origin, request.headers.get("host"))):
            return problem(403, "cross_origin_refused", "Only the console page this gateway serves may use it "
                           "without an API key. Another app's page gets keys from its own server, which mints "
                           "them with an API key (POST /v1/realtime/client_secrets).")
        cookie = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(cookie.encode(), self._secret.encode()):
            return problem(401, "console_session_required", "Open the console page at / on this gateway first: "
                           "it holds the session that lets it ask for a key. Other clients need an API key.")
        return None


def console_access(request: Request) -> ConsoleAccess:
    access: ConsoleAccess = request.app.state.console
    return access


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


async def console_index(request: Request) -> Response:
    response = FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
    console_access(request).hand_out(request, response)
    return response


async def _console_principal(request: Request, *, origin_required: bool) -> Principal | JSONResponse:
    """The operator's API key when one is given, else the dev console session."""
    if request.headers.get("authorization"):
        return await require_api_key(request)
    return console_access(request).refusal(request, origin_required=origin_required) or CONSOLE_PRINCIPAL


async def console_token(request: Request) -> Response:
    """`POST /console/token`: an ephemeral key for one console call, for an API key or the dev console session."""

    gateway = gateway_of(request)
    principal = await _console_principal(request, origin_required=True)
    if isinstance(principal, JSONResponse):
        return principal
    if not gateway.ready:
        return problem(503, "not_ready", "The gateway is starting.")
    agent = gateway.settings.default_agent
    ga_patch, config = await validate_session(gateway, CONSOLE_SESSION, "ga", agent)
    secret, expires_at = await mint(gateway, principal, ga_patch, gateway.settings.ephemeral_ttl_s, "ga", agent)
    config.expires_at = expires_at
    return JSONResponse({"value": secret, "expires_at": expires_at, "session": config.to_ga(),
                         "ice_servers": gateway.settings.ice_servers},
                        headers={"Cache-Control": "no-store"})


async def console_call(request: Request) -> Response:
    """`GET /console/calls/{call_id}`: the live call's tool calls, for the page to show as they happen."""

    principal = await _console_principal(request, origin_required=False)
    if isinstance(principal, JSONResponse):
        return principal
    call = calls_of(request.app.state).get(request.path_params["call_id"])
    if call is None or call.session is None or not principal.sees(call.owner):
        return problem(404, "call_id_not_found", "No live call with that id.")
    gateway = gateway_of(request)
    record = await gateway.calls.get_call(call.session.id)
    await gateway.calls.audit(principal.key_id, "tool_calls.read", call.session.id)
    tool_calls = record["tool_calls"] if record else []
    return JSONResponse({"id": call.id, "session_id": call.session.id, "status": "live",
                         "tool_calls": tool_calls}, headers={"Cache-Control": "no-store"})

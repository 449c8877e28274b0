"""Wiring: the Starlette app that serves a Gateway: its routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voxgate.admission import Refusal
from voxgate.chat_service import chat_completions
from voxgate.cluster.call_control import attach_on_holding_node, on_holding_node
from voxgate.config import Settings
from voxgate.control import escalations, operators, outbound_calls, realtime_calls, recordings
from voxgate.control.auth import principal_of, require_api_key
from voxgate.control.ephemeral import (
    create_beta_session,
    create_client_secret,
    redeem,
    revoke_client_secret,
    session_agent,
)
from voxgate.control.openapi import openapi_json
from voxgate.control.origin_policy import BrowserGuard, OriginPolicy
from voxgate.control.problems import problem
from voxgate.control.rate_limit import RateLimits, SharedRateLimits, rate_limited, rate_limited_websocket
from voxgate.control.route_roles import declared
from voxgate.garbage_collection import BeatCollector
from voxgate.gateway import Gateway, gateway_of
from voxgate.observability.logs import guard_credentials, withhold_call_content
from voxgate.protocol.dialect import dialect_from_handshake
from voxgate.protocol.errors import RealtimeError
from voxgate.server.http_connection import ClientDisconnected
from voxgate.speech_service import speech, transcriptions
from voxgate.transports import openai_sip, telnyx, twilio
from voxgate.transports.realtime_ws import WebSocketCaller, refuse_call, run_websocket_session
from voxgate.transports.sideband import attach_sideband
from voxgate.transports.webrtc import create_beta_call, create_call
from voxgate.web.console import ConsoleAccess, console_call, console_index, console_token, static_files
from voxgate.web.dashboard import dashboard_page

log = logging.getLogger("voxgate")


# -- routes ----------------------------------------------------------------------------------------


async def realtime_websocket(websocket: WebSocket) -> None:
    gateway = gateway_of(websocket)
    subprotocols = list(websocket.scope.get("subprotocols") or [])
    principal = await principal_of(websocket)
    if isinstance(principal, JSONResponse):
        await websocket.send_denial_response(principal)
        return
    if not gateway.ready:
        await websocket.send_denial_response(problem(503, "not_ready", "The gateway is starting."))
        return
    if "call_id" in websocket.query_params:  # sideband: join a live WebRTC or SIP call, on whichever node holds it
        await attach_on_holding_node(websocket, websocket.query_params["call_id"],
                                     lambda: attach_sideband(websocket, principal))
        return
    params = websocket.query_params
    try:
        agent = session_agent(gateway, principal, params.get("agent"))
    except RealtimeError as exc:
        await websocket.send_denial_response(problem(403, exc.code, exc.message, param=exc.param))
        return
    # Admitted before the key is spent: a refused browser may retry with it. Counted against the key that
    # owns the call (an ephemeral key's minter), or the gateway's limit only for its own calls.
    ticket = gateway.admission.try_admit(principal.owner, "realtime_ws")
    if isinstance(ticket, Refusal):
        await refuse_call(websocket, ticket)
        return
    try:
        if not await redeem(gateway, principal, "realtime_ws"):  # an ephemeral key opens one session only
            await websocket.send_denial_response(problem(401, "invalid_api_key", "This key has already been used."))
            return
        headers = {k.lower(): v for k, v in websocket.headers.items()}
        dialect = dialect_from_handshake(headers, subprotocols)
        await websocket.accept(subprotocol="realtime" if "realtime" in subprotocols else None)
        caller = WebSocketCaller(websocket)
        session = await gateway.open_session(agent=agent, caller=caller, dialect=dialect, model=params.get("model"),
                                             initial_config=principal.session_config, owner=principal.owner,
                                             opened_by=principal)
        try:
            await session.start(caller_id=websocket.client.host if websocket.client else None)
            await run_websocket_session(session, websocket, caller, gateway.settings.session_max_seconds,
                                        gateway.settings.ws_idle_timeout_s)
        finally:
            gateway.session_closed(session)
    finally:
        ticket.release()


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 while the gateway takes calls; 503 while it starts or drains. `calls` tells a load balancer how
    much room is left (`active`, `limit`, `available`, `per_key_limit`, `accepting`); `tasks` (the event
    loop's live asyncio tasks) lets a soak see that calls leave nothing behind."""
    gateway = gateway_of(request)
    if not gateway.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    calls = gateway.admission.snapshot()
    if gateway.draining:
        return JSONResponse({"status": "draining", "calls": calls}, status_code=503)
    ready = {"status": "ready", "engine": gateway.settings.engine, "sessions": len(gateway.sessions),
             "calls": calls, "tasks": len(asyncio.all_tasks())}
    if gateway.sip is not None and gateway.sip.trunk is not None:  # registered with the upstream trunk?
        ready["sip_trunk"] = gateway.sip.trunk.snapshot()
    return JSONResponse(ready)


async def metrics_endpoint(request: Request) -> Response:
    if not gateway_of(request).settings.metrics_public:  # call volumes, agents and tools are the operator's
        principal = await require_api_key(request)
        if isinstance(principal, JSONResponse):
            return principal
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def list_agents(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    agents = gateway_of(request).agents
    return JSONResponse({"object": "list", "data": [
        {"name": a.name, "description": a.description, "voice": a.voice, "engine": a.engine,
         "tools": [t.name for t in a.tools]} for a in agents.values()]})


async def not_found(request: Request, exc: Exception) -> Response:
    return problem(404, "not_found", f"No route for {request.method} {request.url.path}.")


async def server_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ClientDisconnected):  # the answer found the client gone (a cancelled turn): not a fault
        log.debug("%s %s: the client left before the answer", request.method, request.url.path)
    else:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(500, "server_error", "Internal server error.")


def drain_on_sigterm(gateway: Gateway, stop_server: Callable[[], None]) -> Callable[[], None]:
    """From now on SIGTERM drains the gateway (`Gateway.drain`), then calls `stop_server`; a second
    SIGTERM stops at once. Returns the undo. Signals reach the main thread only: elsewhere (an embedded
    gateway) this does nothing."""
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    async def drain_then_stop() -> None:
        try:
            await gateway.drain()
        finally:
            stop_server()

    def on_sigterm() -> None:
        if draining:
            log.info("second SIGTERM: stopping now")
            stop_server()
            return
        log.info("SIGTERM: draining")
        draining.append(loop.create_task(drain_then_stop()))

    try:  # replaces uvicorn's handler, which would close every call at once
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (ValueError, RuntimeError, NotImplementedError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        for task in draining:
            task.cancel()

    return undo


def create_app(settings: Settings, gateway: Gateway | None = None) -> Starlette:
    """The app; raises UnsafeSettingsError for dev mode on a gateway others can reach (unless allowed).
    Whoever runs its server sets `app.state.stop_server` (a callable) so that SIGTERM can stop the server
    once the gateway has drained."""
    settings.check_exposure()
    exposure = settings.exposure()
    if settings.dev_mode and exposure:
        log.warning("DEV MODE IS ON BEYOND LOOPBACK (%s; allow_dev_mode_beyond_loopback is set): the console "
                    "page mints keys for anyone who can load it. Turn dev_mode off before real callers or "
                    "real data reach this gateway.", exposure)
    guard_credentials()
    if settings.zero_retention:
        withhold_call_content()
    gw = gateway or Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = time.monotonic()
        await gw.start()
        if gw.cluster is not None:  # control requests other nodes relay for this node's calls run here
            gw.cluster.serve(app)
        # What start-up built (models, agents, routes) lives as long as the process: out of the collector's
        # way, a full collection no longer walks it and stalls every call's 20 ms audio tick. Its garbage is
        # freed first: frozen, a cycle would never be.
        gc.collect()
        gc.freeze()
        collector = BeatCollector()
        if settings.gc_on_beat:
            collector.start()
        stop_server: Callable[[], None] | None = getattr(app.state, "stop_server", None)
        undo_drain = drain_on_sigterm(gw, stop_server) if stop_server is not None else (lambda: None)
        log.info("gateway ready in %.1f s", time.monotonic() - started)
        try:
            yield
        finally:
            undo_drain()
            await openai_sip.calls_of(app.state, settings).close()
            await collector.stop()
            await gw.stop()
            # What start-up and the beat's collector froze goes back to the collector, so the cycles among it
            # are freed (a frozen cycle is not, even at exit, where its native parts are then reported leaked).
            gc.unfreeze()

    policy = OriginPolicy(settings)
    app = Starlette(
        routes=declared([  # each route's roles: control/route_roles.py
            Route("/", console_index),
            Route("/console/token", rate_limited(console_token, "console_token"), methods=["POST"]),
            Route("/console/calls/{call_id}", console_call),
            Mount("/static", app=static_files(), name="static"),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            WebSocketRoute("/v1/realtime", rate_limited_websocket(realtime_websocket, "realtime_ws")),
            Route("/v1/realtime", rate_limited(create_beta_call, "realtime_calls"), methods=["POST"]),
            Route("/v1/realtime/calls", rate_limited(create_call, "realtime_calls"), methods=["POST"]),
            *realtime_calls.routes(around=on_holding_node),  # accept, reject, refer, hangup, on the call's node
            Route("/v1/realtime/client_secrets", rate_limited(create_client_secret, "client_secrets"),
                  methods=["POST"]),
            Route("/v1/realtime/client_secrets/revoke", revoke_client_secret, methods=["POST"]),
            Route("/v1/realtime/sessions", rate_limited(create_beta_session, "client_secrets"), methods=["POST"]),
            *outbound_calls.routes(),
            *recordings.routes(),
            *escalations.routes(),
            *operators.routes(around=on_holding_node),  # calls, stats, cost: the operators' API
            Route("/openapi.json", openapi_json),
            Route("/dashboard", dashboard_page),
            Route("/v1/agents", list_agents),
            Route("/v1/audio/transcriptions", rate_limited(transcriptions, "speech"), methods=["POST"]),
            Route("/v1/audio/speech", rate_limited(speech, "speech"), methods=["POST"]),
            Route("/v1/chat/completions", rate_limited(chat_completions, "chat"), methods=["POST"]),
            *twilio.routes(gateway_of),
            *telnyx.routes(gateway_of),
            *openai_sip.routes(),
        ]),
        middleware=[Middleware(BrowserGuard, policy=policy),
                    Middleware(CORSMiddleware, **policy.cors_options(), allow_methods=["*"], allow_headers=["*"],
                               expose_headers=["Location"])],
        exception_handlers={404: not_found, 500: server_error},
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.state.console = ConsoleAccess(policy, dev_mode=settings.dev_mode)
    # Shared by every node when there is a cluster: a client spreading requests over nodes gets no more.
    limits = RateLimits.from_settings(settings)
    app.state.rate_limits = limits if gw.cluster is None else SharedRateLimits(gw.cluster.redis, limits)
    return app


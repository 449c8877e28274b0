"""Wiring: the Gateway (process-wide services) and the Starlette app that serves it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voxgate.agents import AgentConfig, load_agents
from voxgate.config import Settings
from voxgate.control.ephemeral import create_beta_session, create_client_secret, redeem, revoke_client_secret
from voxgate.engines.base import Engine
from voxgate.engines.echo import EchoEngine
from voxgate.engines.local.vad import GatedVadStream, SileroModel
from voxgate.protocol.dialect import dialect_from_handshake
from voxgate.protocol.items import Dialect
from voxgate.session.recorder import CallRecorder
from voxgate.session.session import Caller, Session
from voxgate.store.calls import CallStore
from voxgate.store.database import Database
from voxgate.store.keys import KeyRecord, KeyStore
from voxgate.tools.registry import ToolRegistry
from voxgate.transports import telnyx, twilio
from voxgate.transports.realtime_ws import WebSocketCaller, run_websocket_session
from voxgate.transports.webrtc import attach_sideband, create_beta_call, create_call, hangup_call
from voxgate.web.console import console_call, console_index, console_token, static_files

log = logging.getLogger("voxgate")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator's API key, or an ephemeral key bound to one session config."""

    key_id: str
    kind: str  # "api" | "ephemeral" | "static"
    session_config: dict[str, Any] | None = None


class Gateway:
    """Everything shared by all calls in the process: settings, agents, engines, storage, keys."""

    def __init__(self, settings: Settings, agents: dict[str, AgentConfig] | None = None) -> None:
        self.settings = settings
        self.agents = agents if agents is not None else load_agents(settings.agents_dir)
        if settings.default_agent not in self.agents:
            raise ValueError(f"default agent {settings.default_agent!r} not found in {settings.agents_dir}")
        self.db = Database(settings.database_url)
        self.calls = CallStore(self.db)
        self.keys = KeyStore(self.db)
        self.http = httpx.AsyncClient(timeout=settings.tool_timeout_s)
        self.tools = {
            name: ToolRegistry(agent, timeout_s=settings.tool_timeout_s,
                               max_output_bytes=settings.tool_max_output_bytes, http=self.http)
            for name, agent in self.agents.items()
        }
        self._engines: dict[str, Engine] = {}
        self._engine_lock = asyncio.Lock()
        self.vad_model: SileroModel | None = None
        self.ready = False
        self.sessions: dict[str, Session] = {}

    async def start(self) -> None:
        await self.db.connect()
        await self.db.upgrade()
        self.vad_model = SileroModel.shared()
        await self.engine(self.settings.engine)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for session in list(self.sessions.values()):
            await session.close("server_shutdown")
        for engine in self._engines.values():
            await engine.aclose()
        await self.http.aclose()
        await self.calls.drain()
        await self.db.aclose()

    async def engine(self, name: str) -> Engine:
        """The named engine, started on first use and shared by every session after that."""
        async with self._engine_lock:
            if name not in self._engines:
                engine: Engine
                if name == "local":
                    from voxgate.engines.local.engine import LocalEngine

                    engine = LocalEngine(stt_threads=self.settings.stt_threads,
                                         stt_concurrency=self.settings.stt_max_concurrency,
                                         tts_concurrency=self.settings.tts_max_concurrency)
                elif name == "echo":
                    engine = EchoEngine()
                elif name == "openai":
                    from voxgate.engines.openai import OpenAIEngine

                    engine = OpenAIEngine.from_settings(self.settings)
                else:
                    raise ValueError(f"engine {name!r} is not available")
                await engine.start()
                self._engines[name] = engine
            return self._engines[name]

    def agent(self, name: str | None) -> AgentConfig:
        """The named agent; a call that matches no agent goes to the default one, never refused."""
        if name and name in self.agents:
            return self.agents[name]
        return self.agents[self.settings.default_agent]

    def vad_stream(self) -> GatedVadStream:
        # Silero runs only around what webrtcvad hears as voice: a listening caller's line costs ~nothing.
        assert self.vad_model is not None
        return GatedVadStream(self.vad_model)

    async def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        for index, key in enumerate(self.settings.api_key_list()):
            if hmac.compare_digest(key.encode(), token.encode()):
                return Principal(key_id=f"static-{index}", kind="static")
        record: KeyRecord | None = await self.keys.verify(token)
        if record is None:
            return None
        return Principal(key_id=record.id, kind=record.kind, session_config=record.session_config)

    async def open_session(self, *, agent: AgentConfig, caller: Caller, dialect: Dialect, model: str | None,
                           initial_config: dict[str, Any] | None = None) -> Session:
        engine_name = agent.engine or self.settings.engine
        engine = await self.engine(engine_name)
        session = Session(
            agent=agent, engine=engine, tools=self.tools[agent.name], caller=caller, dialect=dialect,
            recorder=CallRecorder(self.calls, engine_name), vad_factory=self.vad_stream,
            model=model or f"voxgate-{engine_name}", outbound_events=self.settings.outbound_queue_events,
            max_message_bytes=self.settings.max_message_bytes,
            max_input_buffer_s=self.settings.max_input_buffer_seconds, initial_config=initial_config,
            max_seconds=self.settings.session_max_seconds, audio_lead_ms=self.settings.audio_lead_ms,
        )
        self.sessions[session.id] = session
        return session

    def session_closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)


# -- HTTP helpers ----------------------------------------------------------------------------------


def problem(status: int, code: str, message: str, *, param: str | None = None) -> JSONResponse:
    """An error in OpenAI's REST shape, so SDK clients surface it properly."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"type": kind, "code": code, "message": message, "param": param}},
                        status_code=status)


def bearer_token(headers: Any, subprotocols: list[str] | None = None) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return str(auth[7:].strip())
    for proto in subprotocols or []:
        if proto.startswith("openai-insecure-api-key."):
            return proto[len("openai-insecure-api-key."):]
    return None


def gateway_of(request: Request | WebSocket) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def require_api_key(request: Request) -> Principal | JSONResponse:
    principal = await gateway_of(request).authenticate(bearer_token(request.headers))
    if principal is None:
        return problem(401, "invalid_api_key", "Missing or invalid API key.")
    if principal.kind == "ephemeral":
        return problem(403, "ephemeral_key_not_allowed", "Ephemeral keys can only open a realtime session.")
    return principal


# -- routes ----------------------------------------------------------------------------------------


async def realtime_websocket(websocket: WebSocket) -> None:
    gateway = gateway_of(websocket)
    subprotocols = list(websocket.scope.get("subprotocols") or [])
    principal = await gateway.authenticate(bearer_token(websocket.headers, subprotocols))
    if principal is None:
        await websocket.send_denial_response(problem(401, "invalid_api_key", "Missing or invalid API key."))
        return
    if not gateway.ready:
        await websocket.send_denial_response(problem(503, "not_ready", "The gateway is starting."))
        return
    if "call_id" in websocket.query_params:  # sideband: join a live WebRTC call rather than open a session
        await attach_sideband(websocket, principal)
        return
    if not await redeem(gateway, principal, "realtime_ws"):  # an ephemeral key opens one session only
        await websocket.send_denial_response(problem(401, "invalid_api_key", "This key has already been used."))
        return
    headers = {k.lower(): v for k, v in websocket.headers.items()}
    dialect = dialect_from_handshake(headers, subprotocols)
    params = websocket.query_params
    agent = gateway.agent(params.get("agent"))
    await websocket.accept(subprotocol="realtime" if "realtime" in subprotocols else None)
    caller = WebSocketCaller(websocket)
    session = await gateway.open_session(agent=agent, caller=caller, dialect=dialect, model=params.get("model"),
                                         initial_config=principal.session_config)
    try:
        await session.start(caller_id=websocket.client.host if websocket.client else None)
        await run_websocket_session(session, websocket, caller, gateway.settings.session_max_seconds)
    finally:
        gateway.session_closed(session)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    if not gateway.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ready", "engine": gateway.settings.engine, "sessions": len(gateway.sessions)})


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def list_calls(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    try:
        limit = min(int(request.query_params.get("limit", 50)), 500)
        offset = max(int(request.query_params.get("offset", 0)), 0)
    except ValueError:
        return problem(400, "invalid_value", "limit and offset must be integers.")
    calls = await gateway_of(request).calls.list_calls(limit=limit, offset=offset)
    return JSONResponse({"object": "list", "data": calls})


async def get_call(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    call = await gateway_of(request).calls.get_call(request.path_params["call_id"])
    if call is None:
        return problem(404, "call_not_found", "No call with that id.")
    return JSONResponse(call)


async def kpis(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    return JSONResponse(await gateway_of(request).calls.kpis())


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
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(500, "server_error", "Internal server error.")


def create_app(settings: Settings, gateway: Gateway | None = None) -> Starlette:
    gw = gateway or Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = time.monotonic()
        await gw.start()
        # What start-up built (models, agents, routes) lives as long as the process: out of the collector's
        # way, a full collection no longer walks it and stalls every call's 20 ms audio tick.
        gc.freeze()
        log.info("gateway ready in %.1f s", time.monotonic() - started)
        try:
            yield
        finally:
            await gw.stop()

    origins = ["*"] if settings.dev_mode and not settings.cors_origins else settings.cors_origins
    app = Starlette(
        routes=[
            Route("/", console_index),
            Route("/console/token", console_token, methods=["POST"]),
            Route("/console/calls/{call_id}", console_call),
            Mount("/static", app=static_files(), name="static"),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            WebSocketRoute("/v1/realtime", realtime_websocket),
            Route("/v1/realtime", create_beta_call, methods=["POST"]),
            Route("/v1/realtime/calls", create_call, methods=["POST"]),
            Route("/v1/realtime/calls/{call_id}/hangup", hangup_call, methods=["POST"]),
            Route("/v1/realtime/client_secrets", create_client_secret, methods=["POST"]),
            Route("/v1/realtime/client_secrets/revoke", revoke_client_secret, methods=["POST"]),
            Route("/v1/realtime/sessions", create_beta_session, methods=["POST"]),
            Route("/v1/calls", list_calls),
            Route("/v1/calls/{call_id}", get_call),
            Route("/v1/kpis", kpis),
            Route("/v1/agents", list_agents),
            *twilio.routes(gateway_of),
            *telnyx.routes(gateway_of),
        ],
        middleware=[Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                               expose_headers=["Location"])],
        exception_handlers={404: not_found, 500: server_error},
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app


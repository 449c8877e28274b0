"""Agents behind OpenAI's SIP: OpenAI answers the phone, the gateway runs the agent's side of the call.

    POST /openai/sip/webhook   OpenAI's signed `realtime.call.incoming` (Standard Webhooks)

For each incoming call the gateway picks an agent from the SIP headers (`openai_sip_routes`), accepts the
call upstream with that agent's session (`POST {openai_base_url}/realtime/calls/{call_id}/accept`:
instructions, voice, its gateway tools as function tools) and attaches to the call's sideband
(`{openai_base_url}/realtime?call_id=...`, as WebSocket). From there `SidebandAgent`
(control/sideband_agent.py) decides, and this shell carries out: gateway tools run through the agent's
ToolRegistry (validated, redacted, counted, recorded), a transfer is `/refer` to the agent's escalation
target, a hang-up is `/hangup`, and the call record is written as for the gateway's own calls.

The webhook is answered as soon as it is verified: the accept and everything after it run in the call's
own task, so a slow upstream holds no request and no other call. A sideband that drops is reattached with
the same call_id (backoff and circuit breaker as the openai engine's, engines/reconnect.py) until the
upstream says the call is gone (404). The API key goes only into the upstream requests' Authorization
header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voxgate.agents import AgentConfig
from voxgate.control.incoming_call import (
    MAX_BODY_BYTES,
    IncomingCall,
    IncomingCallError,
    choose_agent,
    parse_incoming_call,
)
from voxgate.control.problems import problem
from voxgate.control.sideband_agent import (
    Action,
    HangUp,
    RecordItem,
    RecordUsage,
    Refer,
    RunTool,
    Send,
    SidebandAgent,
)
from voxgate.control.standard_webhooks import ReplayGuard, WebhookRejected, verify
from voxgate.engines.base import EngineError
from voxgate.engines.openai import UpstreamRefused, open_upstream, realtime_url
from voxgate.engines.reconnect import ReconnectPolicy
from voxgate.gateway import gateway_of
from voxgate.observability import metrics
from voxgate.protocol.session_config import OPENAI_VOICES
from voxgate.session.recorder import CallRecorder, CallSummary
from voxgate.session.session import TOOL_ROLES
from voxgate.tools.redaction import redact
from voxgate.tools.registry import ToolContext, ToolRegistry, run_on_call

if TYPE_CHECKING:
    from voxgate.config import Settings
    from voxgate.gateway import Gateway

__all__ = ["WEBHOOK_PATH", "CallControlError", "OpenAICallControl", "OpenAISipCall", "OpenAISipCalls",
           "accept_session", "calls_of", "routes"]

log = logging.getLogger("voxgate.openai_sip")

WEBHOOK_PATH = "/openai/sip/webhook"
TRANSPORT = "openai_sip"  # the call record's transport, the sessions metric's label
REATTACH_WINDOW_S = 30.0  # a dropped sideband is tried again for this long before the call is given up
# Signature problems are 401 (who sent this?); a signed delivery that is old, ahead, odd or seen is 400.
_UNAUTHORISED = frozenset({"missing_header", "bad_signature"})


class CallControlError(Exception):
    """A call-control request the upstream did not answer 2xx (or at all)."""


class OpenAICallControl:
    """`POST {base}/realtime/calls/{call_id}/{accept|reject|refer|hangup}`; each answers 200, empty body."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str, timeout_s: float) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout_s = timeout_s

    async def _post(self, call_id: str, action: str, body: dict[str, Any] | None) -> None:
        url = f"{self._base}/realtime/calls/{quote(call_id, safe='')}/{action}"
        try:
            reply = await self._http.post(url, json=body, timeout=self._timeout_s,
                                          headers={"Authorization": f"Bearer {self._key}"})
        except httpx.TimeoutException:
            metrics.OPENAI_SIP_REQUESTS.labels(action, "timeout").inc()
            raise CallControlError(f"{action}: no answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            metrics.OPENAI_SIP_REQUESTS.labels(action, "error").inc()
            raise CallControlError(f"{action}: {type(exc).__name__}".replace(self._key, "****")) from None
        if not reply.is_success:
            metrics.OPENAI_SIP_REQUESTS.labels(action, "error").inc()
            raise CallControlError(f"{action}: HTTP {reply.status_code}{_error_code(reply)}")
        metrics.OPENAI_SIP_REQUESTS.labels(action, "ok").inc()

    async def accept(self, call_id: str, session: dict[str, Any]) -> None:
        await self._post(call_id, "accept", session)

    async def refer(self, call_id: str, target_uri: str) -> None:
        await self._post(call_id, "refer", {"target_uri": target_uri})

    async def hangup(self, call_id: str) -> None:
        await self._post(call_id, "hangup", None)


def _error_code(reply: httpx.Response) -> str:
    """` (code)` from an OpenAI error body; never its message, which can quote what was sent."""
    try:
        code = reply.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f" ({code})" if isinstance(code, str) and len(code) <= 64 else ""


def accept_session(agent: AgentConfig, tools: ToolRegistry, settings: Settings) -> dict[str, Any]:
    """The session an accept gives the call: the agent's instructions, its gateway tools as function tools,
    its voice when OpenAI knows it (a local Piper voice would fail the accept), upstream transcription."""
    session: dict[str, Any] = {
        "type": "realtime", "model": settings.openai_model, "instructions": agent.instructions,
        "tools": [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                  for t in tools.specs(TOOL_ROLES)],
        "tool_choice": "auto",
    }
    audio: dict[str, Any] = {}
    if settings.openai_sip_transcription_model:
        audio["input"] = {"transcription": {"model": settings.openai_sip_transcription_model}}
    if agent.voice in OPENAI_VOICES:
        audio["output"] = {"voice": agent.voice}
    if audio:
        session["audio"] = audio
    return session


class OpenAISipCall:
    """One call behind OpenAI's SIP: accept, then the sideband until the call ends. It is the tools'
    `CallActions`: a transfer or hang-up a tool asks for goes through the sideband core."""

    def __init__(self, gateway: Gateway, incoming: IncomingCall, agent: AgentConfig, policy: ReconnectPolicy) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.call_id = incoming.call_id
        self.agent = agent
        self.tools = gateway.tools[agent.name]
        self.policy = policy
        self._key = settings.openai_api_key.get_secret_value()
        self.control = OpenAICallControl(gateway.http, settings.openai_base_url, self._key,
                                         settings.openai_sip_api_timeout_s)
        self.url = realtime_url(settings.openai_base_url, settings.openai_model, call_id=self.call_id)
        opening = " ".join(line for line in (agent.disclosure, agent.greeting) if line) or None
        self.core = SidebandAgent(opening=opening, menu=agent.dtmf_menu)
        self.recorder = CallRecorder(gateway.calls, "openai", node=gateway.node,
                                     metadata={"transport_call_id": self.call_id})
        self.caller = incoming.caller
        self.status = "completed"
        self._ws: ClientConnection | None = None
        self._unsent: list[dict[str, Any]] = []  # events a dropped sideband did not take: sent on reattach
        self._tools: set[asyncio.Task[None]] = set()
        self._hung_up = asyncio.Event()
        self.started_at = time.monotonic()

    # -- the call ------------------------------------------------------------------------------------

    async def run(self) -> None:
        metrics.SESSIONS_STARTED.labels(TRANSPORT).inc()
        metrics.SESSIONS_ACTIVE.inc()
        self.recorder.start_call(self.call_id, agent=self.agent.name, transport=TRANSPORT, dialect="ga",
                                 caller=self.caller, model=self.gateway.settings.openai_model)
        try:
            await self._serve()
        except asyncio.CancelledError:
            self.status, self.core.end_reason = "dropped", self.core.end_reason or "server_shutdown"
            raise
        except Exception as exc:  # a bug costs this call, loudly, never another one
            log.exception("openai sip call %s failed", self.call_id)
            self.status, self.core.end_reason = "failed", f"internal error: {type(exc).__name__}"
        finally:
            for task in self._tools:
                task.cancel()
            await asyncio.gather(*self._tools, return_exceptions=True)
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._ws.close(), 2.0)
            metrics.SESSIONS_ACTIVE.dec()
            await self.recorder.end_call(CallSummary(
                status=self.status, outcome=self.core.outcome, end_reason=self.core.end_reason or "call ended",
                duration_s=time.monotonic() - self.started_at, first_response_ms=None, turns=self.core.turns,
                interruptions=self.core.interruptions))

    async def _serve(self) -> None:
        try:
            await self.control.accept(self.call_id, accept_session(self.agent, self.tools, self.gateway.settings))
        except CallControlError as exc:
            log.warning("openai sip call %s: accept failed: %s", self.call_id, exc)
            self.status, self.core.end_reason = "failed", f"accept failed: {exc}"
            return
        log.info("openai sip call %s accepted for agent %s", self.call_id, self.agent.name)
        if not await self._attach(first=True):
            return
        await self._act(self.core.start())
        while True:
            await self._read()
            if self.core.ended or self._hung_up.is_set() or not await self._attach(first=False):
                return
            await self._act(self.core.reattached())

    async def _attach(self, *, first: bool) -> bool:
        """Open the sideband (again). False when the call is over, or cannot be reached in time."""
        deadline = time.monotonic() + REATTACH_WINDOW_S
        attempt = 0
        while True:
            try:
                self._ws = await open_upstream(
                    self.url, self._key, policy=self.policy, max_retries=self.gateway.settings.openai_max_retries,
                    connect_timeout_s=self.gateway.settings.openai_connect_timeout_s,
                    final_statuses=(401, 403, 404))
            except UpstreamRefused as exc:
                if exc.status == 404 and not first:  # the call ended while the sideband was away
                    metrics.OPENAI_SIP_SIDEBANDS.labels("ended").inc()
                    return False
                metrics.OPENAI_SIP_SIDEBANDS.labels("failed").inc()
                self.status, self.core.end_reason = "failed", f"sideband refused: {exc}"
                return False
            except EngineError as exc:
                if first or time.monotonic() >= deadline:
                    metrics.OPENAI_SIP_SIDEBANDS.labels("failed").inc()
                    self.status = "failed" if first else "dropped"
                    self.core.end_reason = f"sideband {'unreachable' if first else 'lost'}: {exc}"
                    return False
                now = time.monotonic()  # past an open circuit's cool-down, or a backoff step
                await asyncio.sleep(min(max(self.policy.delay(attempt, random.random()), self.policy.wait_s(now)),
                                        max(deadline - now, 0.0)))
                attempt += 1
                continue
            metrics.OPENAI_SIP_SIDEBANDS.labels("attached" if first else "reattached").inc()
            unsent, self._unsent = self._unsent, []
            for event in unsent:
                await self._send(event)
            return True

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for raw in ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    if event.get("type") == "error":
                        log.warning("openai sip call %s: upstream error %s", self.call_id,
                                    redact(str(event.get("error"))[:300])[0].replace(self._key, "****"))
                    await self._act(self.core.receive(event))
        except ConnectionClosed:
            pass
        if not self.core.ended:
            metrics.OPENAI_SIP_SIDEBANDS.labels("lost").inc()
            log.info("openai sip call %s: the sideband closed; reattaching", self.call_id)

    async def _send(self, event: dict[str, Any]) -> None:
        ws = self._ws
        try:
            if ws is None:
                raise ConnectionError
            await ws.send(json.dumps(event))
        except (ConnectionClosed, ConnectionError):
            self._unsent.append(event)  # the reader sees the drop and reattaches; this goes then

    async def _act(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(event=event):
                    await self._send(event)
                case RunTool():
                    task = asyncio.get_running_loop().create_task(self._run_tool(action))
                    self._tools.add(task)
                    task.add_done_callback(self._tools.discard)
                case Refer(target_uri=target):
                    try:
                        await self.control.refer(self.call_id, target)
                    except CallControlError as exc:
                        log.warning("openai sip call %s: transfer failed: %s", self.call_id, exc)
                        await self._act(self.core.transfer_failed(str(exc)))
                case HangUp():
                    self._hung_up.set()
                    try:
                        await self.control.hangup(self.call_id)
                    except CallControlError as exc:
                        log.warning("openai sip call %s: hang-up failed: %s", self.call_id, exc)
                    if self._ws is not None:
                        await self._ws.close()
                case RecordItem(item=item):
                    self.recorder.item(item)
                case RecordUsage(usage=usage):
                    self.recorder.response_done(usage)

    async def _run_tool(self, call: RunTool) -> None:
        ctx = ToolContext(call_id=call.call_id, session_id=self.call_id, agent=self.agent, roles=TOOL_ROLES,
                          actions=self)
        result = await run_on_call(self.tools, call.name, call.arguments, ctx, self.recorder)
        await self._act(self.core.tool_finished(call.call_id, result.output))

    # -- CallActions: what built-in tools do to the call ------------------------------------------

    async def transfer(self, target: str, reason: str) -> None:
        if not target:
            raise ValueError(f"the agent {self.agent.name!r} has no escalation target")
        actions = self.core.transfer(target, redact(reason)[0])  # the model's words, kept in the record
        metrics.ESCALATIONS.inc()
        await self._act(actions)

    async def hang_up(self, reason: str) -> None:
        await self._act(self.core.hang_up(redact(reason)[0]))

    async def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError("OpenAI's SIP offers no way to send key presses on a call")


class OpenAISipCalls:
    """The app's calls behind OpenAI's SIP, by call id; one replay guard and one reconnect policy for all."""

    def __init__(self, tolerance_s: int) -> None:
        self.replays = ReplayGuard(tolerance_s)
        self.policy = ReconnectPolicy()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, call: OpenAISipCall) -> None:
        task = asyncio.get_running_loop().create_task(call.run())
        self._tasks[call.call_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(call.call_id, None))

    async def close(self) -> None:
        """At shutdown: end every call's record (dropped); OpenAI keeps the calls themselves up."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def calls_of(app_state: Any, settings: Settings) -> OpenAISipCalls:
    """The app's registry, made on first use."""
    registry: OpenAISipCalls | None = getattr(app_state, "openai_sip_calls", None)
    if registry is None:
        registry = OpenAISipCalls(settings.openai_webhook_tolerance_s)
        app_state.openai_sip_calls = registry
    return registry


def _refuse(status: int, result: str, message: str, client: str) -> JSONResponse:
    metrics.OPENAI_SIP_WEBHOOKS.labels(result).inc()
    log.warning("openai webhook from %s refused (%s): %s", client, result, message)
    return problem(status, result, message)


async def incoming_call_webhook(request: Request) -> Response:
    """`POST /openai/sip/webhook`: verify, then accept the call in its own task; 200 at once."""
    gateway = gateway_of(request)
    settings = gateway.settings
    client = request.client.host if request.client else "?"
    secrets = [s.strip() for s in settings.openai_webhook_secret.get_secret_value().split(",") if s.strip()]
    if not secrets or not settings.openai_api_key.get_secret_value():
        return _refuse(503, "not_configured", "Set openai_webhook_secret and openai_api_key to take calls "
                                              "from OpenAI's SIP.", client)
    if not gateway.ready or gateway.draining:
        return _refuse(503, "not_ready", "The gateway is not taking calls now.", client)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _refuse(413, "invalid_body", f"The body is larger than {MAX_BODY_BYTES} bytes.", client)
    calls = calls_of(request.app.state, settings)
    now = gateway.real_clock.time()
    try:
        delivery = verify(secrets, request.headers, body, now=now, tolerance_s=settings.openai_webhook_tolerance_s)
    except WebhookRejected as exc:
        return _refuse(401 if exc.reason in _UNAUTHORISED else 400, exc.reason, str(exc), client)
    except ValueError:  # a secret that is not one (a bad whsec_): the operator's mistake, said loudly
        log.error("openai_webhook_secret is not a valid Standard Webhooks secret")
        return _refuse(503, "not_configured", "The webhook secret is misconfigured.", client)
    try:
        incoming = parse_incoming_call(body)
    except IncomingCallError as exc:
        return _refuse(400, "invalid_body", str(exc), client)
    if not calls.replays.admit(delivery, now):
        return _refuse(400, "replayed", f"The delivery {delivery.webhook_id!r} was already received.", client)
    if incoming.event_type != "realtime.call.incoming" or incoming.call_id in calls:
        metrics.OPENAI_SIP_WEBHOOKS.labels("ignored").inc()
        return Response(status_code=200)
    name = choose_agent(incoming, settings.openai_sip_routes, gateway.agents)
    agent = gateway.agent(name or settings.openai_sip_agent)
    calls.start(OpenAISipCall(gateway, incoming, agent, calls.policy))
    metrics.OPENAI_SIP_WEBHOOKS.labels("accepted").inc()
    return Response(status_code=200)


def routes() -> list[BaseRoute]:
    return [Route(WEBHOOK_PATH, incoming_call_webhook, methods=["POST"])]

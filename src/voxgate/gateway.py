"""The Gateway: everything shared by all calls in the process — settings, agents, engines, storage, keys."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.websockets import WebSocket

from voxgate.admission import Admission
from voxgate.agents import AgentConfig, load_agents
from voxgate.audio.recording_file import SUFFIXES
from voxgate.capacity import CallLimit, CallProfile, derive_call_limit, probe_host
from voxgate.clock import Clock
from voxgate.cluster.load_report import LoadReport
from voxgate.config import Settings
from voxgate.engines.base import Engine
from voxgate.engines.echo import EchoEngine
from voxgate.engines.local.vad import GatedVadStream, SileroModel, WebRtcStream
from voxgate.escalations import EscalationQueue
from voxgate.observability.cost import CostModel
from voxgate.observability.tracing import Tracing
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import Dialect
from voxgate.retention import Retention
from voxgate.roles import GATEWAY_CALL_ROLES, Role
from voxgate.session.call_recording import CallRecording, RecordingSummary
from voxgate.session.listening import VadStream
from voxgate.session.recorder import CallRecorder
from voxgate.session.session import Caller, Session
from voxgate.store.audit_log import configuration_digest
from voxgate.store.calls import CallStore
from voxgate.store.database import Database
from voxgate.store.keys import KeyRecord, KeyStore
from voxgate.store.recordings import RecordingStore
from voxgate.tools.registry import ToolRegistry
from voxgate.transports.media_tokens import MediaTokens
from voxgate.transports.replay_cache import ReplayCache
from voxgate.transports.sip_phone import SipPhone

if TYPE_CHECKING:
    from voxgate.cluster.node import ClusterNode

log = logging.getLogger("voxgate")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator's API key, or an ephemeral key bound to one session config and agent."""

    key_id: str
    kind: str  # "api" | "ephemeral" | "static" | "console" (the dev-mode console page)
    session_config: dict[str, Any] | None = None
    # Whose calls its sessions are: the key itself, or the key that minted an ephemeral one; None: the
    # gateway's own (the dev console), like phone calls.
    owner: str | None = None
    agent: str | None = None  # the agent an ephemeral key was minted for: the only one it opens
    # What it may do (voxgate/roles.py): on the routes (control/route_roles.py), and in its sessions' tools.
    roles: frozenset[str] = GATEWAY_CALL_ROLES

    def sees(self, call_owner: str | None) -> bool:
        """Whether a call with this owner is this key's to read and steer (the gateway's own are everyone's)."""
        return call_owner is None or call_owner == self.owner


class Gateway:
    """Everything shared by all calls in the process: settings, agents, engines, storage, keys."""

    def __init__(self, settings: Settings, agents: dict[str, AgentConfig] | None = None) -> None:
        self.settings = settings
        self.clock = Clock(settings.clock_start)  # the date callers hear; pinned by clock_start
        # Real time, never pinned: webhook timestamps and media-token expiry are compared with the carriers'
        # clocks (voxgate.clock). A test swaps it to move time.
        self.real_clock = Clock()
        self.agents = agents if agents is not None else load_agents(settings.agents_dir)
        if settings.default_agent not in self.agents:
            raise ValueError(f"default agent {settings.default_agent!r} not found in {settings.agents_dir}")
        self.db = Database(settings.database_url)
        self.calls = CallStore(self.db)
        # Spans per call, turn and tool call, only when an OTLP endpoint is configured.
        self.tracing = Tracing(settings.otel_endpoint, settings.otel_service_name) if settings.otel_endpoint else None
        self.keys = KeyStore(self.db)
        self.recordings = RecordingStore(self.db)
        self.escalations = EscalationQueue()  # hand-offs to a person, for operators (GET /v1/escalations)
        self.retention = Retention(self.recordings, {a.name: a.retention_days for a in self.agents.values()
                                                     if a.retention_days is not None},
                                   settings.retention_sweep_interval_s)
        self.http = httpx.AsyncClient(timeout=settings.tool_timeout_s)
        self.tools = {
            name: ToolRegistry(agent, timeout_s=settings.tool_timeout_s,
                               max_output_bytes=settings.tool_max_output_bytes, http=self.http,
                               clock=self.clock, zero_retention=self.zero_retention(agent))
            for name, agent in self.agents.items()
        }
        self._engines: dict[str, Engine] = {}
        self._engine_lock = asyncio.Lock()
        self.vad_model: SileroModel | None = None
        self.ready = False
        self.sessions: dict[str, Session] = {}
        self._key_purger: asyncio.Task[None] | None = None
        # Carrier calls: media sockets need a token our webhook minted; webhooks already acted on are replays.
        bound = settings.carrier_replay_cache_max
        self.media_tokens = MediaTokens(settings.carrier_media_token_ttl_s, bound)
        self.twilio_calls_answered = ReplayCache(settings.twilio_replay_window_s, bound)
        self.telnyx_events_seen = ReplayCache(
            settings.telnyx_webhook_tolerance_s + settings.telnyx_webhook_max_future_s, bound)
        self._sessions_changed = asyncio.Event()
        self.node = settings.node()
        self.admission = Admission(settings.max_calls or self.call_limit().calls, settings.max_calls_per_key)
        self.sip: SipPhone | None = None  # the SIP door, once started (sip_port)
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop the gateway serves on, once started
        # One node of several (redis_url): shared call registry, lost nodes, control relayed between nodes.
        self.cluster: ClusterNode | None = None
        if settings.redis_url:
            try:  # redis is an optional extra: imported only when used
                from voxgate.cluster.node import ClusterNode
            except ImportError as exc:
                raise RuntimeError("redis_url is set but the redis package is not installed: "
                                   "pip install 'voxgate[redis]'") from exc
            self.cluster = ClusterNode(settings, self.node, self.calls,
                                       lambda: {**self.admission.snapshot(), "draining": self.draining})
        self.load_report = (LoadReport(settings.host, settings.load_report_port, self.admission)
                            if settings.load_report_port else None)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # what other threads hand work to (EmbeddedGateway.run)
        await self.db.connect()
        await self.db.upgrade()
        # Calls a crash left `active` would count as live forever and skew the KPIs.
        abandoned = await self.calls.close_abandoned(self.node, "gateway restarted")
        if abandoned:
            log.warning("closed %d call(s) left active by this node's previous run as dropped", len(abandoned))
        await self.calls.audit_configuration(self.node, configuration_digest(self.settings, self.agents))
        self.vad_model = SileroModel.shared()
        await self.engine(self.settings.engine)
        if self.settings.max_calls:
            log.info("admission: at most %d live calls (max_calls)", self.settings.max_calls)
        else:  # the models are loaded now: the memory left is what calls may use
            limit = self.call_limit()
            self.admission.set_limit(limit.calls)
            log.info("admission: at most %d live calls (derived, bound by %s; set max_calls to override)",
                     limit.calls, limit.bound)
        self._key_purger = asyncio.get_running_loop().create_task(self._purge_keys())
        self.retention.start()
        if self.settings.sip_port:
            await self._open_sip()
        if self.cluster is not None:
            await self.cluster.start()
            log.info("cluster: node %s joined through Redis", self.node)
        if self.load_report is not None:
            await self.load_report.start()
        self.ready = True

    async def _open_sip(self) -> None:
        """Open the SIP door; a port that cannot be bound leaves the other doors serving, loudly."""
        phone = SipPhone(self)
        try:
            await phone.start()
        except OSError as exc:
            await phone.stop()
            log.error("SIP is off: cannot listen on %s:%d (%s); set sip_port (0 turns SIP off)",
                      phone.host, self.settings.sip_port, exc)
            return
        self.sip = phone

    async def _purge_keys(self) -> None:
        """Delete expired keys now and then: every minted browser key would otherwise stay in the table."""
        while True:
            await asyncio.sleep(self.settings.key_purge_interval_s)
            try:
                await self.keys.purge_expired()
            except Exception:  # a database hiccup costs one sweep; the next one tries again
                log.warning("expired keys were not purged", exc_info=True)

    def call_limit(self) -> CallLimit:
        """The default `max_calls` for this host and these agents (capacity.py has the formula)."""
        profiles = [CallProfile(agent.engine or self.settings.engine, agent.turn_taking.vad)
                    for agent in self.agents.values()]
        return derive_call_limit(profiles, probe_host(), stt_concurrency=self.settings.stt_max_concurrency,
                                 tts_concurrency=self.settings.tts_max_concurrency)

    @property
    def draining(self) -> bool:
        return self.admission.draining

    async def drain(self, now: Callable[[], float] = time.monotonic) -> None:
        """Shut down gently (SIGTERM): take no new call, let live calls end on their own for
        `drain_timeout_s`, then end the rest politely (`Session.drain`: a goodbye, or a phone caller
        handed to a person) and give that `drain_goodbye_timeout_s`. Calls still up after that are
        closed by `stop()`."""
        self.admission.start_draining()
        if self.cluster is not None:  # the other nodes see this one draining now, not at its next beat
            with contextlib.suppress(Exception):
                await self.cluster.beat()
        log.info("draining: %d live call(s); new calls are refused", len(self.sessions))
        if await self._calls_ended(self.settings.drain_timeout_s, now):
            return
        log.info("drain: %d call(s) still up after %.0f s; saying goodbye", len(self.sessions),
                 self.settings.drain_timeout_s)
        for session in list(self.sessions.values()):
            session.drain()
        await self._calls_ended(self.settings.drain_goodbye_timeout_s, now)

    async def _calls_ended(self, timeout_s: float, now: Callable[[], float]) -> bool:
        """Wait until no call is live or admitted (True), or for `timeout_s` (False)."""
        deadline = now() + timeout_s
        while self.sessions or self.admission.in_use:
            remaining = deadline - now()
            if remaining <= 0:
                return False
            self._sessions_changed.clear()
            # Woken by every call's end; a lapsing phone reservation is seen on the next half second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sessions_changed.wait(), min(remaining, 0.5))
        return True

    async def stop(self) -> None:
        self.ready = False
        if self.sip is not None:
            await self.sip.stop()
        await self.retention.stop()
        if self._key_purger is not None:
            self._key_purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._key_purger
        for session in list(self.sessions.values()):  # cut off: dropped, unless a drain said goodbye already
            await session.close("server_shutdown", status="completed" if session.draining else "dropped")
        for engine in self._engines.values():
            await engine.aclose()
        await self.http.aclose()
        if self.load_report is not None:
            await self.load_report.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.calls.drain()
        await self.db.aclose()
        if self.tracing is not None:  # flushes the spans still queued (in the exporter's thread)
            await asyncio.to_thread(self.tracing.shutdown)

    async def engine(self, name: str) -> Engine:
        """The named engine, started on first use and shared by every session after that."""
        return await self._started(name, lambda: self._make_engine(name))

    async def engine_for(self, agent: AgentConfig) -> tuple[str, Engine]:
        """The engine an agent's calls run on, and its name. A cascade agent with its own services gets an
        engine of its own (shared by that agent's calls); every other agent shares the named engine."""
        name = agent.engine or self.settings.engine
        services = agent.cascade
        if name != "cascade" or services is None:
            return name, await self.engine(name)

        def make() -> Engine:
            from voxgate.engines.cascade import CascadeEngine

            return CascadeEngine(self.settings.model_copy(update=services.settings_update()))

        return name, await self._started(f"cascade:{agent.name}", make)

    async def _started(self, key: str, make: Callable[[], Engine]) -> Engine:
        """The engine kept under `key`, made and started by the first caller (the others wait for it)."""
        async with self._engine_lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = make()
                await engine.start()
                self._engines[key] = engine
            return engine

    def _make_engine(self, name: str) -> Engine:
        if name == "local":
            from voxgate.engines.local.brains.flow import FlowBrain
            from voxgate.engines.local.engine import LocalEngine

            return LocalEngine(stt_threads=self.settings.stt_threads,
                               stt_concurrency=self.settings.stt_max_concurrency,
                               tts_concurrency=self.settings.tts_max_concurrency,
                               stt_model=self.settings.stt_model,
                               tts_variation=self.settings.tts_variation,
                               brain=FlowBrain(today=self.clock.today))
        if name == "echo":
            return EchoEngine()
        if name == "openai":
            from voxgate.engines.openai import OpenAIEngine

            return OpenAIEngine.from_settings(self.settings)
        if name == "cascade":
            from voxgate.engines.cascade import CascadeEngine

            return CascadeEngine(self.settings)
        raise ValueError(f"engine {name!r} is not available")

    def agent(self, name: str | None) -> AgentConfig:
        """The named agent; a call that matches no agent goes to the default one, never refused."""
        if name and name in self.agents:
            return self.agents[name]
        return self.agents[self.settings.default_agent]

    def vad_stream(self, agent: AgentConfig) -> VadStream:
        if agent.turn_taking.vad == "webrtc":
            return WebRtcStream()
        # Silero runs only around what webrtcvad hears as voice: a listening caller's line costs ~nothing.
        assert self.vad_model is not None
        return GatedVadStream(self.vad_model)

    async def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        for index, key in enumerate(self.settings.api_key_list()):
            if hmac.compare_digest(key.encode(), token.encode()):
                return Principal(key_id=f"static-{index}", kind="static", owner=f"static-{index}",
                                 roles=frozenset({Role.ADMIN}))  # the operator's own configured keys
        record: KeyRecord | None = await self.keys.verify(token)
        if record is None:
            return None
        if record.kind == "ephemeral":
            return Principal(key_id=record.id, kind=record.kind, session_config=record.session_config,
                             owner=record.owner, agent=record.agent, roles=record.roles)
        return Principal(key_id=record.id, kind=record.kind, owner=record.id, roles=record.roles)

    async def open_session(self, *, agent: AgentConfig, caller: Caller, dialect: Dialect, model: str | None,
                           initial_config: dict[str, Any] | None = None, owner: str | None = None,
                           session_id: str | None = None, record_metadata: dict[str, Any] | None = None,
                           opened_by: Principal | None = None) -> Session:
        """A session for `caller`; `session_id` when the call's id was given out before (an outbound call),
        `record_metadata` added to its call record's metadata; `opened_by` the key whose roles its tools run
        with (None: a call the gateway answered, a phone's)."""
        engine_name, engine = await self.engine_for(agent)
        # A call the gateway plays out (phone, browser) is never left silent if a remote engine fails.
        remote = engine_name in ("openai", "cascade")
        fallback = await self.engine("local") if remote and caller.playback.server_side else None
        session_id = session_id or new_id("sess")
        session = Session(
            agent=agent, engine=engine, tools=self.tools[agent.name], caller=caller, dialect=dialect,
            recorder=CallRecorder(self.calls, engine_name, CostModel(self.settings.prices), owner=owner,
                                  node=self.node, metadata=record_metadata, tracing=self.tracing,
                                  actor=opened_by.key_id if opened_by is not None else "gateway",
                                  zero_retention=self.zero_retention(agent)),
            vad_factory=functools.partial(self.vad_stream, agent),
            model=model or f"voxgate-{engine_name}", outbound_events=self.settings.outbound_queue_events,
            max_message_bytes=self.settings.max_message_bytes, max_item_text_chars=self.settings.max_item_text_chars,
            max_input_buffer_s=self.settings.max_input_buffer_seconds, initial_config=initial_config,
            max_seconds=self.settings.session_max_seconds, audio_lead_ms=self.settings.audio_lead_ms,
            fallback_engine=fallback, session_id=session_id, recording=self._recording(agent, session_id),
            roles=opened_by.roles if opened_by is not None else GATEWAY_CALL_ROLES,
        )
        session.escalated = self.escalations.add
        self.sessions[session.id] = session
        if self.cluster is not None:
            await self.cluster.hold(session.id)
        return session

    @property
    def recordings_dir(self) -> Path:
        return self.settings.recordings_dir or self.settings.data_dir / "recordings"

    def _recording(self, agent: AgentConfig, session_id: str) -> CallRecording | None:
        """The call's recording, when its agent records (the file is opened with its first block)."""
        policy = agent.recording
        if not policy.enabled or self.zero_retention(agent):  # zero retention keeps no audio either
            return None
        path = (self.recordings_dir / f"{session_id}{SUFFIXES[policy.format]}").resolve()
        recording = CallRecording(path, policy.format)

        async def saved(summary: RecordingSummary) -> None:
            await self.recordings.add(session_id, path=summary.path, format=summary.format,
                                      duration_s=summary.duration_s, bytes=summary.bytes,
                                      meta={"silenced": summary.silenced, "consent": summary.consent},
                                      retention_days=agent.retention_days)

        recording.saved = saved
        return recording
    def zero_retention(self, agent: AgentConfig) -> bool:
        """Whether this agent's calls leave no words behind: gateway-wide or the agent's own setting."""
        return self.settings.zero_retention or agent.zero_retention

    def session_closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.escalations.call_ended(session.id)
        if self.cluster is not None:
            self.cluster.release(session.id)
        self._sessions_changed.set()


def gateway_of(request: Request | WebSocket) -> Gateway:
    """The gateway serving this request's app."""
    gateway: Gateway = request.app.state.gateway
    return gateway

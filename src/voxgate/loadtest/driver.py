"""The load test's asyncio driver: renders what callers say, ramps calls up over the chosen transports,
samples the gateway while they run, and stops by itself.

Every run is bounded: no call starts after `duration_s` or beyond `max_calls`, live calls are hung up at
`duration_s`, and a call that has not ended `STOP_GRACE_S` later is abandoned (and counted as dropped).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from voxgate.loadtest import phone_caller, realtime_caller
from voxgate.loadtest.call_socket import MicrophoneLag
from voxgate.loadtest.conversation import Conversation, Timing
from voxgate.loadtest.gateway_process import GatewayProcess, ProcessReading
from voxgate.loadtest.phone_caller import CarrierCommands, PhoneCaller
from voxgate.loadtest.realtime_caller import RealtimeCaller
from voxgate.loadtest.report import CallRecord, Report, Sample, Timeline
from voxgate.loadtest.scenario import DEFAULT_MIX, LINES, Mix, Ramp, Transport
from voxgate.loadtest.speech import Lines
from voxgate.loadtest.statistics import Ending, LatencyWindow, classify
from voxgate.loadtest.target import Target

__all__ = ["Caller", "LoadPlan", "run_load"]

log = logging.getLogger("voxgate.loadtest")

STOP_GRACE_S = 25.0  # after the run's end: time for live calls to hang up (a connect may take 15 s)
P95_WINDOW_S = 10.0  # the timeline's first-response p95 is over the turns of this many seconds
TICK_S = 0.05


class Caller(Protocol):
    """One transport's way of placing a call. A new transport (SIP, when the gateway answers it) is a class
    of this shape and an entry in `_callers`."""

    frame_s: float

    def line_frames(self, text: str) -> int: ...

    async def call(self, conversation: Conversation, record: CallRecord) -> Ending: ...


@dataclass(frozen=True)
class LoadPlan:
    target: Target
    transports: tuple[Transport, ...] = (Transport.REALTIME,)
    mix: Mix = field(default_factory=lambda: Mix.parse(DEFAULT_MIX))
    concurrency: int = 10
    rate: float = 2.0  # calls started per second
    hold_s: float = 30.0  # how long each call stays on the line
    duration_s: float = 60.0
    max_calls: int | None = None  # None: enough to hold `concurrency` for the whole run
    agent: str | None = None
    gateway_pid: int | None = None
    sample_interval_s: float = 1.0
    reply_timeout_s: float = 15.0
    carrier_api_port: int = 8090  # where the gateway's twilio_api_base / telnyx_api_base must point
    twilio_auth_token: str | None = None
    telnyx_private_key: bytes | None = None  # raw Ed25519 seed, when the gateway checks Telnyx signatures

    def __post_init__(self) -> None:
        if not self.transports:
            raise ValueError("choose at least one transport")
        if not (0 < self.hold_s <= 24 * 3600) or not (0 < self.sample_interval_s <= 60):
            raise ValueError("the hold time and the sample interval must be positive (and sane)")
        if not 0 <= self.carrier_api_port <= 65535:
            raise ValueError("the carrier API port must be 0-65535")

    @property
    def call_limit(self) -> int:
        if self.max_calls is not None:
            return self.max_calls
        return self.concurrency * (math.ceil(self.duration_s / self.hold_s) + 1)

    def as_dict(self) -> dict[str, Any]:
        """The plan as the report shows it (no secrets)."""
        return {"target": self.target.base_url, "transports": [t.value for t in self.transports],
                "mix": self.mix.as_dict(), "concurrency": self.concurrency, "rate": self.rate, "hold_s": self.hold_s,
                "duration_s": self.duration_s, "max_calls": self.call_limit, "agent": self.agent,
                "gateway_pid": self.gateway_pid, "reply_timeout_s": self.reply_timeout_s,
                "twilio_signed": bool(self.twilio_auth_token), "telnyx_signed": self.telnyx_private_key is not None}


class _Run:
    def __init__(self, plan: LoadPlan, lines: Lines, http: httpx.AsyncClient, commands: CarrierCommands | None,
                 on_sample: Callable[[Sample], None] | None) -> None:
        self.plan, self.http, self.on_sample = plan, http, on_sample
        self.lag = MicrophoneLag()
        self.callers = {t: self._caller(t, lines, commands) for t in plan.transports}
        self.process = GatewayProcess(plan.gateway_pid) if plan.gateway_pid is not None else None
        self.records: list[CallRecord] = []
        self.live: dict[int, Conversation] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.timeline = Timeline()
        self.window = LatencyWindow(P95_WINDOW_S)
        self._seen: dict[int, int] = {}  # record index -> latencies already in the window
        self.t0 = time.monotonic()

    def _caller(self, transport: Transport, lines: Lines, commands: CarrierCommands | None) -> Caller:
        plan = self.plan
        if transport is Transport.REALTIME:
            return RealtimeCaller(plan.target, lines, plan.agent, self.lag)
        assert commands is not None
        return PhoneCaller(transport, plan.target, lines, plan.agent, self.lag, self.http, commands,
                           plan.twilio_auth_token, plan.telnyx_private_key)

    async def run(self) -> Report:
        plan = self.plan
        ramp = Ramp(plan.rate, plan.concurrency, plan.call_limit, plan.duration_s)
        next_sample = self.t0
        stop_at = self.t0 + plan.duration_s
        while True:
            now = time.monotonic()
            elapsed = now - self.t0
            if now >= stop_at:
                for conversation in self.live.values():
                    conversation.stop()
            for _ in range(ramp.due(elapsed, len(self.tasks), len(self.records))):
                self._start_call()
            if now >= next_sample:
                await self._sample(now)
                next_sample += plan.sample_interval_s
            if not self.tasks and (ramp.over(elapsed, len(self.records)) or now >= stop_at):
                break
            if now >= stop_at + STOP_GRACE_S:
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                break
            await asyncio.sleep(TICK_S)
        await self._sample(time.monotonic())
        return Report(plan.as_dict(), self.records, self.timeline.samples, time.monotonic() - self.t0,
                      plan.gateway_pid, generator=self.lag.as_dict())

    def _start_call(self) -> None:
        index = len(self.records)
        # Transports take turns, and each goes through the whole mix (not one scenario per transport).
        turns = len(self.plan.transports)
        transport = self.plan.transports[index % turns]
        record = CallRecord(index, transport, self.plan.mix.pick(index // turns), time.monotonic() - self.t0)
        self.records.append(record)
        task = asyncio.create_task(self._call(record, self.callers[transport]), name=f"loadtest-call-{index}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _call(self, record: CallRecord, caller: Caller) -> None:
        timing = Timing(frame_s=caller.frame_s, hold_s=self.plan.hold_s, reply_timeout_s=self.plan.reply_timeout_s)
        conversation = Conversation(record.scenario, {text: caller.line_frames(text) for text in LINES}, timing,
                                    time.monotonic(), first_response_ms=record.first_response_ms,
                                    barge_in_ms=record.barge_in_ms)
        self.live[record.index] = conversation
        ending = Ending(error="abandoned")  # still on the line when the run gave up on it
        try:
            ending = await caller.call(conversation, record)
        except Exception as exc:  # a fault of the generator's, not the gateway's: count it, keep the run going
            log.exception("call %d failed inside the load generator", record.index)
            ending = Ending(error=f"generator_{type(exc).__name__}")
        finally:
            del self.live[record.index]
            record.outcome, record.reason = classify(ending)
            record.ended_s = time.monotonic() - self.t0
            record.unanswered, record.barge_ins_missed = conversation.unanswered, conversation.barge_ins_missed

    async def _sample(self, now: float) -> None:
        for record in self.records:
            seen = self._seen.get(record.index, 0)
            if len(record.first_response_ms) > seen:
                self.window.add(now, record.first_response_ms[seen:])
                self._seen[record.index] = len(record.first_response_ms)
        reading: ProcessReading | None = None
        if self.process is not None:
            try:
                reading = self.process.read()
            except ProcessLookupError:
                log.warning("the gateway process %d has ended; no more samples of it", self.process.pid)
                self.process = None
        sample = self.timeline.add(now - self.t0, self.records, len(self.live), self.window.percentile(now, 95),
                                   reading, await self._ready())
        if self.on_sample is not None:
            self.on_sample(sample)

    async def _ready(self) -> dict[str, Any] | None:
        """The gateway's /readyz, which says how many sessions it serves (and more, where it does)."""
        try:
            response = await self.http.get(f"{self.plan.target.base_url}/readyz", timeout=2.0)
            ready = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return ready if isinstance(ready, dict) else None


async def run_load(plan: LoadPlan, on_sample: Callable[[Sample], None] | None = None) -> Report:
    """Run the plan against its target and return the report."""
    rates = {realtime_caller.RATE if t is Transport.REALTIME else phone_caller.RATE for t in plan.transports}
    lines = await asyncio.to_thread(Lines, LINES, sorted(rates))  # Piper, before the clock starts
    phones = any(t is not Transport.REALTIME for t in plan.transports)
    commands = CarrierCommands(plan.carrier_api_port) if phones else None
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        if commands is not None:
            commands.start()
        try:
            return await _Run(plan, lines, http, commands, on_sample).run()
        finally:
            if commands is not None:
                commands.stop()

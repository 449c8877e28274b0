"""Writes a session's call record (items, tool calls, outcome) without ever slowing the call.

Writes go through one queue per call, drained by one task, so they land in order while the
session never awaits the database. Text is redacted before it is stored. The recorder is fed ids,
items and a closing `CallSummary`, never the session itself, so it imports nothing of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxgate.observability import metrics
from voxgate.observability.cost import CostModel
from voxgate.observability.latency_budget import BargeIn, TurnLatency
from voxgate.observability.tracing import CallTrace, Tracing
from voxgate.protocol.items import Dialect, Item
from voxgate.protocol.usage import add_usage
from voxgate.tools.redaction import redact, redact_offloaded, redact_value

if TYPE_CHECKING:
    from voxgate.agents import ToolDefinition
    from voxgate.store.calls import CallStore
    from voxgate.tools.registry import ToolResult

log = logging.getLogger("voxgate.recorder")

MAX_PENDING_WRITES = 2000
# At hang-up the call waits this long for its record to land (so a client that asks for it at once finds
# it), then hands the rest to the store: the call's admission slot is not held hostage by a slow disk.
END_WAIT_S = 1.0


@dataclass(frozen=True)
class CallSummary:
    """How a call ended, as its record keeps it."""

    status: str  # completed, drained, dropped... ("transferred" when the outcome is escalated)
    outcome: str  # "escalated", or "" for the recorder to decide from the tools that ran
    end_reason: str
    duration_s: float
    first_response_ms: float | None
    turns: int
    interruptions: int
    metadata: dict[str, Any] | None = None  # added to the record's metadata (e.g. a SIP call's media quality)
    fallthroughs: int = 0  # turns answered with the agent's fallback line
    buffer_overflow: bool = False  # the call was cut because its peer stopped reading


class CallRecorder:
    def __init__(self, store: CallStore, engine: str, cost: CostModel | None = None, owner: str | None = None,
                 node: str | None = None, metadata: dict[str, Any] | None = None,
                 tracing: Tracing | None = None, actor: str = "gateway", zero_retention: bool = False) -> None:
        self.store = store
        # Only counters and timings: no caller, text, tool argument or result, nor a client's metadata.
        self.zero_retention = zero_retention
        self.actor = actor  # who the audit log says acted in this call: the key that opened it, or the gateway
        self.engine = engine
        self.owner = owner  # the key whose call this is; None: the gateway's own (phones, the dev console)
        self.node = node  # the gateway serving the call: crash recovery closes its own calls only
        self.extra_metadata = metadata or {}  # the transport's facts from the start (an outbound call's dial)
        self.cost = cost or CostModel()
        self._queue: asyncio.Queue[Callable[[], Awaitable[Any]] | None] = asyncio.Queue(MAX_PENDING_WRITES)
        self._writer: asyncio.Task[None] | None = None
        self._ended = False  # no write after this: the writer stops once the queue is empty
        self.usage: dict[str, Any] = {}
        self.task_completed = False
        self.call_id = ""  # set by start_call
        self.transport = ""  # set by start_call: its minutes have a price
        self.metadata: dict[str, Any] = {}  # what start_call stored; end_call adds the summary's to it
        self._timings = 0  # turns and barge-ins recorded, in order
        self._tracing = tracing
        self.trace: CallTrace | None = None  # the call's spans, when the gateway exports traces

    def _write(self, make: Callable[[], Awaitable[Any]]) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        try:
            self._queue.put_nowait(make)
        except asyncio.QueueFull:
            metrics.STORE_FAILURES.inc()  # a call record is never worth stalling a call for

    async def _drain(self) -> None:
        while not (self._ended and self._queue.empty()):
            make = await self._queue.get()
            if make is None:
                return
            try:
                await make()  # a write the database lost is counted by the store; a slow one goes on there
            except Exception:
                metrics.STORE_FAILURES.inc()
                log.exception("call record write failed")

    # -- what the session reports -----------------------------------------------------------------

    def start_call(self, call_id: str, *, agent: str, transport: str, dialect: Dialect, caller: str | None,
                   model: str) -> None:
        self.call_id = call_id
        self.transport = transport
        if self._tracing is not None:
            self.trace = self._tracing.call(call_id, transport=transport, agent=agent, engine=self.engine, model=model)
        extra = {"zero_retention": True} if self.zero_retention else self.extra_metadata
        self.metadata = {"model": model, **({"node": self.node} if self.node else {}), **extra}
        caller = None if self.zero_retention else caller
        self._write(lambda: self.store.start_call(
            call_id, agent=agent, engine=self.engine, transport=transport, dialect=dialect, caller=caller,
            owner=self.owner, metadata=self.metadata))
        if self.actor != "gateway":  # a key's use: it opened this call
            self.audit("session.opened", {"transport": transport, "agent": agent})

    def item(self, item: Item, truncated_at_ms: int | None = None) -> None:
        text = item.text if item.type == "message" else item.arguments or item.output or ""
        audio_ms = sum(p.audio_ms for p in item.content) or None

        async def write() -> Any:
            # Redacted by the writer, so a long item is masked in a thread while the call goes on.
            return await self.store.upsert_item(
                self.call_id, item.id, role=item.role or "tool", type=item.type,
                text=None if self.zero_retention else await redact_offloaded(text),
                audio_ms=audio_ms, truncated_at_ms=truncated_at_ms, status=item.status)

        self._write(write)

    def client_tool_call(self, item: Item) -> None:
        self.item(item)
        arguments = item.arguments or ""

        async def write() -> Any:
            return await self.store.record_tool_call(
                self.call_id, tool_call_id=item.call_id or "", name=item.name or "", side="client",
                arguments=None if self.zero_retention else await redact_offloaded(arguments), status="delegated",
                output=None, duration_ms=None)

        self._write(write)

    def gateway_tool_call(self, result: ToolResult, definition: ToolDefinition | None) -> None:
        """`definition`: the agent's tool that ran (a PCI one is stored masked)."""
        if result.ok and definition is not None and definition.builtin is None:
            self.task_completed = True  # a business tool did its job; transfers and hang-ups are not tasks
        kept = not self.zero_retention
        if self.trace is not None:
            self.trace.tool_call(result.name, result.call_id, ok=result.ok, status=result.status,
                                 duration_ms=result.duration_ms)
        self._write(lambda: self.store.record_tool_call(
            self.call_id, tool_call_id=result.call_id, name=result.name, side="server",
            arguments=redact_args(pci_masked(result.arguments) if definition is not None and definition.pci
                                  else result.arguments) if kept else None,
            status="completed" if result.ok else result.status,
            # stored records never hold PII, even from tools allowed to return it
            output=redact(result.output)[0] if kept else None,
            duration_ms=result.duration_ms))

    def audit(self, action: str, detail: dict[str, Any]) -> None:
        """An audit row about this call (a transfer, a PII/PHI tool call, a refused tool), in call order."""
        self._write(lambda: self.store.audit(self.actor, action, self.call_id, detail))
    def turn(self, turn: TurnLatency) -> None:
        """An answered turn's latency budget."""
        self._timings += 1
        seq = self._timings
        if self.trace is not None:
            self.trace.turn(turn, turn.started)
        self._write(lambda: self.store.record_turn(self.call_id, seq=seq, stages=turn.stages,
                                                   total_ms=turn.total_ms, heard=turn.heard))

    def barge_in(self, barge_in: BargeIn) -> None:
        self._timings += 1
        seq = self._timings
        self._write(lambda: self.store.record_barge_in(self.call_id, seq=seq, stop_ms=barge_in.stop_ms))

    def response_done(self, usage: dict[str, Any]) -> None:
        add_usage(self.usage, usage)

    async def end_call(self, summary: CallSummary) -> None:
        outcome = summary.outcome or ("task_completed" if self.task_completed else "no_task")
        usage = dict(self.usage)
        cost = self.cost.call_cost(self.engine, summary.duration_s, usage, self.transport)
        status = "transferred" if summary.outcome == "escalated" else summary.status
        metadata = {**self.metadata, **summary.metadata} if summary.metadata else None
        end_reason = summary.end_reason
        if self.zero_retention:  # "transferred: <the model's words>" keeps its kind only; numbers only
            end_reason = end_reason.split(":", 1)[0]
            metadata = {k: v for k, v in (metadata or self.metadata).items()
                        if k in self.metadata or isinstance(v, int | float)}
        metrics.SESSIONS_ENDED.labels(status).inc()
        metrics.CALL_OUTCOMES.labels(outcome).inc()
        if self.trace is not None:
            self.trace.end(status=status, outcome=outcome, usage=usage)
        self._write(lambda: self.store.end_call(
            self.call_id, status=status, outcome=outcome, end_reason=redact(end_reason)[0],
            first_response_ms=summary.first_response_ms, turns=summary.turns,
            interruptions=summary.interruptions, usage=usage, cost_usd=cost, metadata=metadata,
            fallthroughs=summary.fallthroughs, buffer_overflow=summary.buffer_overflow))
        self._ended = True
        with contextlib.suppress(asyncio.QueueFull):  # full: the writer stops when it has emptied it
            self._queue.put_nowait(None)
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=END_WAIT_S)
            self.store.finish_later(self._writer)


def redact_args(arguments: dict[str, Any] | None) -> str | None:
    if arguments is None:
        return None
    return json.dumps(redact_value(arguments)[0])  # masks card numbers given as JSON numbers too


def pci_masked(arguments: dict[str, Any] | None) -> dict[str, Any] | None:
    """A PCI tool's arguments as a record may hold them: every value masked but its last 4 characters."""
    if arguments is None:
        return None
    return {key: mask_secret(str(value)) for key, value in arguments.items()}


def mask_secret(value: str) -> str:
    return "****" + value[-4:] if len(value) > 4 else "****"



"""OpenTelemetry spans per call, turn and tool call, exported over OTLP/HTTP when `otel_endpoint` is set.

Nothing here runs (nor is the SDK imported) unless an exporter is configured. Spans are built from what the
call already measured, with explicit start and end times, so tracing adds no timing code to the call path:

- `voxgate.call` (one per session): transport, agent, engine, model, status, outcome, token usage
  (`gen_ai.usage.input_tokens` / `output_tokens`);
- `voxgate.turn` (one per answered turn, a child of its call) from the end of the caller's speech to the first
  audio heard (or sent), with one child span per stage of the latency budget; the first-token stage carries
  `gen_ai.operation.name` "chat" (time to first chunk) and the engine as `gen_ai.system`;
- `execute_tool {name}` (GenAI semantic conventions: `gen_ai.operation.name` "execute_tool",
  `gen_ai.tool.name`, `gen_ai.tool.call.id`), error status when the tool did not succeed.

The batch processor exports from its own thread: no span ever waits on the network in the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voxgate.observability.latency_budget import STAGES, TurnLatency

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["CallTrace", "Tracing"]


def _wall_clock_offset_ns() -> int:
    """What to add to time.monotonic() (as ns) for the wall clock's ns, the unit spans are stamped in; read
    once per span tree, so that spans meant to touch do touch."""
    return time.time_ns() - int(time.monotonic() * 1e9)


class Tracing:
    """The gateway's tracer provider, made once at start; `shutdown()` flushes what is still queued."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:  # said at start, not at the first call
            raise RuntimeError("otel_endpoint is set but OpenTelemetry is not installed: "
                               "pip install 'voxgate[otel]'") from exc
        self.provider: TracerProvider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer: Tracer = self.provider.get_tracer("voxgate")

    def call(self, call_id: str, *, transport: str, agent: str, engine: str, model: str) -> CallTrace:
        return CallTrace(self.tracer, call_id, transport=transport, agent=agent, engine=engine, model=model)

    def shutdown(self) -> None:
        self.provider.shutdown()


class CallTrace:
    """One call's spans: opened at the start, its turns and tool calls added as they finish."""

    def __init__(self, tracer: Tracer, call_id: str, *, transport: str, agent: str, engine: str, model: str) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._engine = engine
        self._span: Span = tracer.start_span(f"voxgate.call {agent}", attributes={
            "voxgate.call.id": call_id, "voxgate.transport": transport, "voxgate.agent": agent,
            "gen_ai.system": engine, "gen_ai.request.model": model})
        self._context = trace.set_span_in_context(self._span)

    def turn(self, turn: TurnLatency, started: float) -> None:
        """`started`: the monotonic time the caller's speech ended."""
        offset = _wall_clock_offset_ns()

        def _epoch_ns(monotonic_s: float) -> int:
            return offset + int(monotonic_s * 1e9)

        at = started
        span = self._tracer.start_span("voxgate.turn", context=self._context, start_time=_epoch_ns(at),
                                       attributes={"voxgate.turn.seq": turn.seq, "voxgate.turn.heard": turn.heard,
                                                   "voxgate.turn.total_ms": turn.total_ms})
        inside = self._trace.set_span_in_context(span)
        for stage in STAGES:
            ms = turn.stages[stage]
            if ms is None:
                continue
            attributes: dict[str, Any] = {"voxgate.stage": stage, "voxgate.stage.ms": ms}
            if stage == "first_token":  # the model's time to first chunk
                attributes |= {"gen_ai.operation.name": "chat", "gen_ai.system": self._engine}
            child = self._tracer.start_span(f"voxgate.turn.{stage}", context=inside, start_time=_epoch_ns(at),
                                            attributes=attributes)
            at += ms / 1000.0
            child.end(end_time=_epoch_ns(at))
        span.end(end_time=_epoch_ns(started + turn.total_ms / 1000.0))

    def tool_call(self, name: str, call_id: str, *, ok: bool, status: str, duration_ms: float | None) -> None:
        ended = time.time_ns()
        span = self._tracer.start_span(
            f"execute_tool {name}", context=self._context,
            start_time=ended - int((duration_ms or 0.0) * 1e6),
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                        "gen_ai.tool.call.id": call_id, "voxgate.tool.status": status})
        if not ok:
            span.set_status(self._trace.StatusCode.ERROR, status)
        span.end(end_time=ended)

    def end(self, *, status: str, outcome: str, usage: Mapping[str, Any] | None) -> None:
        self._span.set_attributes({"voxgate.call.status": status, "voxgate.call.outcome": outcome})
        if usage:
            self._span.set_attributes({"gen_ai.usage.input_tokens": int(usage.get("input_tokens", 0)),
                                       "gen_ai.usage.output_tokens": int(usage.get("output_tokens", 0))})
        self._span.end()

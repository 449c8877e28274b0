"""The tools one agent may use, and the one door through which every tool call passes.

    registry = ToolRegistry(agent)                        # raises ToolConfigError on a bad tool definition
    result = await registry.call("lookup_order", '{"order_id": "A12"}', ctx)
    send_to_model(result.output)                          # always a JSON string, never an exception

A call goes: known tool? -> caller's roles allowed? -> arguments parse and fit the schema? -> run under
a timeout -> result serialised to JSON -> PII redacted (unless the tool declares `returns_pii`) -> capped
at the output size limit. Each failure stops the chain and becomes a ToolResult whose output is
{"error": {"type": ..., "message": ...}}, so the model hears what went wrong and can recover; only
cancellation (barge-in, hang-up) propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

from voxgate.agents import AgentConfig, ToolDefinition
from voxgate.clock import Clock, current_clock, using_clock
from voxgate.engines.base import ToolSpec
from voxgate.observability import metrics
from voxgate.tools.builtins import BUILTINS
from voxgate.tools.python_tool import HandlerError, PythonTool, resolve_handler
from voxgate.tools.redaction import redact, redact_value
from voxgate.tools.validation import (
    ArgumentsError,
    ArgumentsValidator,
    ToolSchemaError,
    parse_arguments,
)
from voxgate.tools.webhook import WebhookError, WebhookTool

if TYPE_CHECKING:
    from voxgate.session.recorder import CallRecorder

__all__ = ["CallActions", "ToolConfigError", "ToolContext", "ToolRegistry", "ToolResult", "ToolStatus",
           "run_on_call"]

logger = logging.getLogger(__name__)

ToolStatus = Literal["ok", "invalid_arguments", "error", "timeout", "forbidden", "unknown_tool"]

# Below this a truncated result or an error could not say anything useful.
_MIN_OUTPUT_BYTES = 128


class ToolConfigError(ValueError):
    """An agent's tool definition cannot work: bad schema, unknown handler, output limit too small."""


class CallActions(Protocol):
    """What built-in tools may do to the live call; the session or transport implements it."""

    async def transfer(self, target: str, reason: str) -> None: ...

    async def hang_up(self, reason: str) -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...


@dataclass(frozen=True)
class ToolContext:
    """Who is calling a tool, and on which call."""

    call_id: str  # the model's function-call id; also the webhook Idempotency-Key
    session_id: str
    agent: AgentConfig
    roles: frozenset[str]
    actions: CallActions


@dataclass(frozen=True)
class ToolResult:
    name: str
    call_id: str
    status: ToolStatus
    output: str  # JSON text for the function_call_output item
    arguments: dict[str, Any] | None  # as the model sent them (unredacted: redact before storing)
    duration_ms: float
    redactions: int = 0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _fit(build: Callable[[str], str], text: str, max_bytes: int) -> str:
    """build(longest prefix of text) such that the result fits in max_bytes (deterministic)."""
    whole = build(text)
    if _utf8_len(whole) <= max_bytes:
        return whole
    lo, hi = 0, min(len(text), max_bytes)  # every character costs at least one byte
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _utf8_len(build(text[:mid])) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return build(text[:lo])


def _truncated(output: str, max_bytes: int) -> str:
    return _fit(lambda part: _dumps({"truncated": True, "partial": part}), output, max_bytes)


@dataclass
class _Tool:
    definition: ToolDefinition
    spec: ToolSpec
    validator: ArgumentsValidator
    max_output_bytes: int
    python: PythonTool | None = None
    webhook: WebhookTool | None = None


class ToolRegistry:
    """Built once per agent (per session is fine: handler modules and schemas are cached cheaply)."""

    def __init__(self, agent: AgentConfig, *, timeout_s: float = 5.0, max_output_bytes: int = 4096,
                 http: httpx.AsyncClient | None = None, webhook_backoff_s: float = 0.25,
                 clock: Clock | None = None) -> None:
        if max_output_bytes < _MIN_OUTPUT_BYTES:
            raise ToolConfigError(f"max_output_bytes must be at least {_MIN_OUTPUT_BYTES}")
        self.agent = agent
        self.clock = clock or current_clock()  # what "today" is for the tools this registry runs
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self._http = http
        self._owns_http = http is None
        self._webhook_backoff_s = webhook_backoff_s
        self._tools: dict[str, _Tool] = {}
        for definition in agent.tools:
            if definition.name in self._tools:
                raise ToolConfigError(f"agent {agent.name!r}: tool {definition.name!r} is defined twice")
            self._tools[definition.name] = self._build(definition)

    def _build(self, definition: ToolDefinition) -> _Tool:
        where = f"agent {self.agent.name!r}, tool {definition.name!r}"
        description, parameters = definition.description, definition.parameters
        if definition.builtin is not None:
            builtin = BUILTINS[definition.builtin]
            description = description or builtin.description
            if "parameters" not in definition.model_fields_set:
                parameters = builtin.parameters
        try:
            validator = ArgumentsValidator(definition.name, parameters)
        except ToolSchemaError as exc:
            raise ToolConfigError(f"agent {self.agent.name!r}: {exc}") from None
        max_bytes = definition.max_output_bytes or self.max_output_bytes
        if max_bytes < _MIN_OUTPUT_BYTES:
            raise ToolConfigError(f"{where}: max_output_bytes must be at least {_MIN_OUTPUT_BYTES}")
        tool = _Tool(definition=definition, validator=validator, max_output_bytes=max_bytes,
                     spec=ToolSpec(name=definition.name, description=description, parameters=parameters,
                                   server=True))
        if definition.handler is not None:
            base_dir = self.agent.source.parent if self.agent.source is not None else None
            try:
                tool.python = PythonTool(resolve_handler(definition.handler, base_dir))
            except HandlerError as exc:
                raise ToolConfigError(f"{where}: {exc}") from exc
        elif definition.webhook is not None:
            tool.webhook = WebhookTool(definition.webhook, self._client, backoff_s=self._webhook_backoff_s)
        return tool

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client the registry opened for webhooks (not one passed in)."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> ToolRegistry:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def has(self, name: str) -> bool:
        return name in self._tools

    def specs(self, roles: frozenset[str] | None = None) -> list[ToolSpec]:
        """The tools to offer the model; given `roles`, only those these roles may run."""
        return [t.spec for t in self._tools.values() if roles is None or self._allowed(t.definition, roles)]

    @staticmethod
    def _allowed(definition: ToolDefinition, roles: frozenset[str]) -> bool:
        return not definition.roles or not roles.isdisjoint(definition.roles)

    async def call(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        """Run a tool call from the model. Never raises, except CancelledError."""
        started = time.perf_counter()
        tool = self._tools.get(name)

        def fail(status: ToolStatus, kind: str, message: str, args: dict[str, Any] | None,
                 param: str | None = None) -> ToolResult:
            returns_pii = tool is not None and tool.definition.returns_pii
            redactions = 0
            if not returns_pii:
                message, redactions = redact(message)
            max_bytes = tool.max_output_bytes if tool is not None else self.max_output_bytes
            extra = {"param": param} if param else {}
            output = _fit(lambda m: _dumps({"error": {"type": kind, "message": m, **extra}}),
                          message, max_bytes)
            # Logs never carry PII, whatever the tool declares.
            logger.warning("tool call failed: %s", output[:300] if not returns_pii else redact(output[:300])[0],
                           extra={"tool": name, "call_id": ctx.call_id, "session_id": ctx.session_id,
                                  "tool_status": status})
            return ToolResult(name=name, call_id=ctx.call_id, status=status, output=output, arguments=args,
                              duration_ms=(time.perf_counter() - started) * 1000, redactions=redactions)

        if tool is None:
            return fail("unknown_tool", "unknown_tool", f"there is no tool named {name!r}",
                        _try_parse(arguments))
        if not self._allowed(tool.definition, ctx.roles):
            return fail("forbidden", "forbidden", f"this caller may not use the tool {name!r}",
                        _try_parse(arguments))
        args: dict[str, Any] | None = None
        try:
            args = parse_arguments(arguments)
            tool.validator.validate(args)
        except ArgumentsError as exc:
            return fail("invalid_arguments", "invalid_arguments", exc.message, args, exc.param)

        try:
            value = await self._run(tool, args, ctx)
        except TimeoutError as exc:
            return fail("timeout", "timeout", str(exc) or f"the tool {name!r} did not finish in "
                        f"{self.timeout_s:g} s", args)
        except WebhookError as exc:
            return fail("error", "webhook_error", str(exc), args)
        except Exception as exc:
            logger.exception("tool %r raised", name, extra={"call_id": ctx.call_id})
            return fail("error", "tool_error", f"{type(exc).__name__}: {exc}", args)

        redactions = 0
        try:
            if not tool.definition.returns_pii:
                value, redactions = redact_value(value)
            output = _dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            return fail("error", "invalid_output", f"the tool returned a value that is not JSON: {exc}", args)
        truncated = _utf8_len(output) > tool.max_output_bytes
        if truncated:
            output = _truncated(output, tool.max_output_bytes)
        return ToolResult(name=name, call_id=ctx.call_id, status="ok", output=output, arguments=args,
                          duration_ms=(time.perf_counter() - started) * 1000, redactions=redactions,
                          truncated=truncated)

    async def _run(self, tool: _Tool, args: dict[str, Any], ctx: ToolContext) -> Any:
        if tool.webhook is not None:
            # Webhooks bound each attempt by their own timeout_s and retry on their own schedule.
            return await tool.webhook.run(args, ctx.call_id)
        async with asyncio.timeout(self.timeout_s):
            if tool.python is not None:
                with using_clock(self.clock):  # threads started inside copy it too
                    return await tool.python.run(args)
            assert tool.definition.builtin is not None
            return await BUILTINS[tool.definition.builtin].run(args, ctx)


async def run_on_call(tools: ToolRegistry, name: str, arguments: str, ctx: ToolContext,
                      recorder: CallRecorder | None) -> ToolResult:
    """A tool call the model made on a live call: run, counted, and kept in the call record (masked)."""
    started = time.monotonic()
    result = await tools.call(name, arguments, ctx)
    metrics.TOOL_CALLS.labels(name, result.status).inc()
    metrics.TOOL_SECONDS.observe(time.monotonic() - started)
    if recorder is not None:
        recorder.gateway_tool_call(result, ctx.agent.tool(result.name))
    return result


def _try_parse(arguments: str) -> dict[str, Any] | None:
    try:
        return parse_arguments(arguments)
    except ArgumentsError:
        return None

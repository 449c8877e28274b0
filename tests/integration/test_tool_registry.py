"""ToolRegistry end to end: Python tools from real files, webhooks against a real server on loopback,
builtins acting on a recording call."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from voxgate.agents import AgentConfig, load_agent
from voxgate.tools.registry import ToolConfigError, ToolContext, ToolRegistry, ToolResult

# --- a webhook server on loopback ----------------------------------------------------------------------


@dataclass
class Hooks:
    base_url: str
    attempts: Counter[str] = field(default_factory=Counter)
    keys: dict[str, list[str]] = field(default_factory=dict)
    bodies: dict[str, list[Any]] = field(default_factory=dict)


def _hooks_app(hooks: Hooks) -> Starlette:
    async def record(request: Request) -> tuple[str, int]:
        key = request.path_params["key"]
        hooks.attempts[key] += 1
        hooks.keys.setdefault(key, []).append(request.headers.get("idempotency-key", ""))
        body = await request.body()
        hooks.bodies.setdefault(key, []).append(json.loads(body) if body else dict(request.query_params))
        return key, hooks.attempts[key]

    async def flaky(request: Request) -> Response:
        _, attempt = await record(request)
        if attempt <= 2:
            return PlainTextResponse("busy", status_code=503)
        return JSONResponse({"booked": True, "attempt": attempt})

    async def throttled(request: Request) -> Response:
        _, attempt = await record(request)
        if attempt == 1:
            return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "0"})
        return JSONResponse({"ok": True})

    async def hang(request: Request) -> Response:
        await record(request)
        await asyncio.sleep(1)
        return JSONResponse({"late": True})

    async def bad(request: Request) -> Response:
        await record(request)
        return JSONResponse({"detail": "order_id must be numeric"}, status_code=400)

    async def echo(request: Request) -> Response:
        await record(request)
        return JSONResponse({"method": request.method, "query": dict(request.query_params),
                             "content_type": request.headers.get("content-type")})

    async def text(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("Your order ships Tuesday.")

    async def customer(request: Request) -> Response:
        await record(request)
        return JSONResponse({"name": "Jane", "email": "jane@example.com", "card": "4111 1111 1111 1111"})

    async def huge(request: Request) -> Response:
        await record(request)
        size = int(request.query_params["size"])
        if request.query_params.get("chunked"):  # no Content-Length: the bound must hold while reading
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(size // 65536 + 1):
                    yield b"x" * 65536
            return StreamingResponse(chunks(), media_type="text/plain")
        return PlainTextResponse("x" * size)

    async def deep(request: Request) -> Response:
        await record(request)
        return Response("[" * 5000 + "]" * 5000, media_type="application/json")

    return Starlette(routes=[
        Route("/huge/{key}", huge, methods=["POST"]),
        Route("/deep/{key}", deep, methods=["POST"]),
        Route("/flaky/{key}", flaky, methods=["POST"]),
        Route("/throttled/{key}", throttled, methods=["POST"]),
        Route("/hang/{key}", hang, methods=["POST"]),
        Route("/bad/{key}", bad, methods=["POST"]),
        Route("/echo/{key}", echo, methods=["GET", "POST"]),
        Route("/text/{key}", text, methods=["POST"]),
        Route("/customer/{key}", customer, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hooks = Hooks(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    config = uvicorn.Config(_hooks_app(hooks), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "webhook server did not start"
        time.sleep(0.01)
    yield hooks
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a call that records what builtins did ---------------------------------------------------------------


@dataclass
class RecordingCall:
    done: list[tuple[str, ...]] = field(default_factory=list)

    async def transfer(self, target: str, reason: str) -> None:
        self.done.append(("transfer", target, reason))

    async def hang_up(self, reason: str) -> None:
        self.done.append(("hang_up", reason))

    async def send_dtmf(self, digits: str) -> None:
        self.done.append(("send_dtmf", digits))


TOOLS_PY = '''
import asyncio
import time

def lookup_order(order_id: str) -> dict:
    return {"order_id": order_id, "status": "shipped", "contact": "jane@example.com"}

async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b

def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"

async def slow_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"

def broken() -> None:
    raise RuntimeError("database unavailable for card 4111 1111 1111 1111")

def not_json() -> object:
    return {"when": object()}

def big(n: int) -> list:
    return ["é" * 10 for _ in range(n)]

def card_on_file() -> dict:
    return {"card": "4111-1111-1111-1111", "ssn": "123-45-6789"}
'''


def make_agent(tmp_path: Path, tools: list[dict[str, Any]], **extra: Any) -> AgentConfig:
    (tmp_path / "tools").mkdir(exist_ok=True)
    (tmp_path / "tools" / "shop.py").write_text(TOOLS_PY)
    return AgentConfig.model_validate({"name": "shop", "tools": tools, "source": tmp_path / "agent.yaml",
                                       **extra})


def ctx_for(agent: AgentConfig, roles: frozenset[str] = frozenset(), call_id: str = "call_1",
            actions: RecordingCall | None = None) -> ToolContext:
    return ToolContext(call_id=call_id, session_id="sess_1", agent=agent, roles=roles,
                       actions=actions or RecordingCall())


def handler(name: str, func: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "handler": f"tools/shop.py:{func}", **extra}


def webhook(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "webhook": {"url": url, **spec}}


def error_of(result: ToolResult) -> dict[str, Any]:
    body = json.loads(result.output)
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


OBJ = {"type": "object"}


# --- Python tools ------------------------------------------------------------------------------------


async def test_python_tools_run_sync_and_async(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [
        handler("lookup_order", "lookup_order", returns_pii=True, parameters={
            **OBJ, "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
        handler("add", "add", parameters={**OBJ, "properties": {"a": {"type": "integer"},
                                                                 "b": {"type": "integer"}}}),
    ])
    registry = ToolRegistry(agent)
    assert registry.has("add") and not registry.has("nope")
    assert [s.name for s in registry.specs()] == ["lookup_order", "add"]
    assert all(s.server for s in registry.specs())

    result = await registry.call("lookup_order", '{"order_id": "A12"}', ctx_for(agent))
    assert result.ok and result.status == "ok"
    assert json.loads(result.output) == {"order_id": "A12", "status": "shipped", "contact": "jane@example.com"}
    assert result.arguments == {"order_id": "A12"} and result.call_id == "call_1"
    assert result.redactions == 0 and not result.truncated and result.duration_ms >= 0

    result = await registry.call("add", '{"a": 2, "b": 3}', ctx_for(agent))
    assert (result.status, result.output) == ("ok", "5")


async def test_pii_in_results_is_redacted_unless_the_tool_returns_pii(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [handler("card", "card_on_file"),
                                  handler("card_raw", "card_on_file", returns_pii=True),
                                  handler("lookup", "lookup_order")])
    registry = ToolRegistry(agent)
    result = await registry.call("card", "{}", ctx_for(agent))
    assert json.loads(result.output) == {"card": "**** **** **** 1111", "ssn": "***-**-****"}
    assert result.redactions == 2

    result = await registry.call("card_raw", "{}", ctx_for(agent))
    assert json.loads(result.output) == {"card": "4111-1111-1111-1111", "ssn": "123-45-6789"}
    assert result.redactions == 0

    result = await registry.call("lookup", '{"order_id": "A12"}', ctx_for(agent))
    assert json.loads(result.output)["contact"] == "[email redacted]"


async def test_failures_become_structured_errors(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [
        handler("lookup", "lookup_order", parameters={
            **OBJ, "properties": {"order_id": {"type": "string", "pattern": "^[A-Z][0-9]+$"}},
            "required": ["order_id"], "additionalProperties": False}),
        handler("broken", "broken"),
        handler("not_json", "not_json"),
    ])
    registry = ToolRegistry(agent)
    ctx = ctx_for(agent)

    result = await registry.call("missing", "{}", ctx)
    assert result.status == "unknown_tool" and error_of(result)["type"] == "unknown_tool"

    result = await registry.call("lookup", '{"order_id": ', ctx)
    assert result.status == "invalid_arguments" and result.arguments is None
    assert "not valid JSON" in error_of(result)["message"]

    result = await registry.call("lookup", '{"order_id": "12"}', ctx)
    error = error_of(result)
    assert result.status == "invalid_arguments" and result.arguments == {"order_id": "12"}
    assert error["param"] == "order_id" and "does not match" in error["message"]

    result = await registry.call("lookup", '{"order_id": "12", "x": 1}', ctx)
    message = error_of(result)["message"]
    assert "'x' was unexpected" in message and "order_id: '12' does not match" in message

    result = await registry.call("broken", "{}", ctx)
    error = error_of(result)
    assert result.status == "error" and error["type"] == "tool_error"
    # The exception's text reaches the model, redacted like any output.
    assert error["message"] == "RuntimeError: database unavailable for card **** **** **** 1111"
    assert result.redactions == 1

    result = await registry.call("not_json", "{}", ctx)
    assert result.status == "error" and error_of(result)["type"] == "invalid_output"

    result = await registry.call("lookup", '{"order_id": "A1", "unexpected_kwarg": 1}', ctx)
    assert result.status == "invalid_arguments"


async def test_slow_tools_time_out_and_cancellation_propagates(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [handler("slow", "slow"), handler("slow_async", "slow_async")])
    registry = ToolRegistry(agent, timeout_s=0.2)
    for name in ("slow", "slow_async"):
        result = await registry.call(name, '{"seconds": 0.6}', ctx_for(agent))
        assert result.status == "timeout", result
        assert error_of(result)["type"] == "timeout"

    task = asyncio.create_task(registry.call("slow_async", '{"seconds": 5}', ctx_for(agent)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outputs_over_the_size_cap_are_truncated_into_valid_json(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [handler("big", "big"), handler("big_small", "big", max_output_bytes=300)])
    registry = ToolRegistry(agent, max_output_bytes=1000)

    result = await registry.call("big", '{"n": 3}', ctx_for(agent))
    assert not result.truncated and len(json.loads(result.output)) == 3

    for name, cap in (("big", 1000), ("big_small", 300)):
        result = await registry.call(name, '{"n": 500}', ctx_for(agent))
        assert result.ok and result.truncated
        size = len(result.output.encode())
        assert cap - 4 <= size <= cap  # fills the cap, less at most one multi-byte character
        body = json.loads(result.output)
        assert body["truncated"] is True and body["partial"].startswith('["éééééééééé","é')
        # Deterministic: the same result truncates the same way.
        assert (await registry.call(name, '{"n": 500}', ctx_for(agent))).output == result.output


async def test_roles_restrict_who_may_run_a_tool(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [handler("refund", "add", roles=["operator"]), handler("add", "add")])
    registry = ToolRegistry(agent)
    result = await registry.call("refund", '{"a": 1, "b": 2}', ctx_for(agent, roles=frozenset({"app"})))
    assert result.status == "forbidden" and error_of(result)["type"] == "forbidden"
    assert "needs the operator role" in error_of(result)["message"]  # words the model can pass on
    result = await registry.call("refund", '{"a": 1, "b": 2}',
                                 ctx_for(agent, roles=frozenset({"app", "operator"})))
    assert result.ok and result.output == "3"
    assert [s.name for s in registry.specs(frozenset({"app"}))] == ["add"]
    assert [s.name for s in registry.specs(frozenset({"operator"}))] == ["refund", "add"]
    with pytest.raises(ValueError, match="supervisor"):  # a misspelt role is refused at load, not a silent lock
        make_agent(tmp_path, [handler("refund", "add", roles=["supervisor"])])


async def test_handlers_load_from_a_yaml_relative_path_and_from_a_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pkgroot" / "acme_tools"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "billing.py").write_text("def balance(account: str) -> dict:\n    return {'balance': 42}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgroot"))
    make_agent(tmp_path, [])  # writes tools/shop.py
    yaml_path = tmp_path / "agent.yaml"
    yaml_path.write_text(textwrap.dedent("""
        name: shop
        tools:
          - name: add
            handler: tools/shop.py:add
          - name: balance
            handler: acme_tools.billing:balance
    """))
    agent = load_agent(yaml_path)
    registry = ToolRegistry(agent)
    assert (await registry.call("add", '{"a": 1, "b": 1}', ctx_for(agent))).output == "2"
    assert json.loads((await registry.call("balance", '{"account": "x"}', ctx_for(agent))).output) == {
        "balance": 42}


@pytest.mark.parametrize(
    ("tool", "fragment"),
    [
        ({"name": "t", "handler": "tools/missing.py:f"}, "does not exist"),
        ({"name": "t", "handler": "tools/shop.py:nope"}, "has no attribute 'nope'"),
        ({"name": "t", "handler": "no_such_package_xyz.mod:f"}, "cannot import"),
        ({"name": "t", "handler": "lookup_order"}, "must look like"),
        ({"name": "t", "handler": "tools/shop.py:add", "parameters": {"type": "object", "required": 3}},
         "invalid parameters schema"),
        ({"name": "t", "handler": "tools/shop.py:add", "max_output_bytes": 10}, "max_output_bytes"),
    ],
)
def test_bad_tool_definitions_fail_when_the_registry_is_built(
        tmp_path: Path, tool: dict[str, Any], fragment: str) -> None:
    agent = make_agent(tmp_path, [tool])
    with pytest.raises(ToolConfigError, match=fragment):
        ToolRegistry(agent)


def test_a_broken_tool_file_fails_when_the_registry_is_built(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import no_such_module_xyz\n")
    agent = make_agent(tmp_path, [{"name": "t", "handler": "bad.py:f"}])
    with pytest.raises(ToolConfigError, match=r"importing tool file .* failed: ModuleNotFoundError"):
        ToolRegistry(agent)


# --- builtins ----------------------------------------------------------------------------------------


async def test_builtins_act_on_the_call(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [
        {"name": "transfer_to_human", "builtin": "transfer_to_human"},
        {"name": "end_call", "builtin": "end_call", "description": "Hang up."},
        {"name": "press", "builtin": "send_dtmf"},
    ], escalation={"target": "sip:queue@example.com"})
    registry = ToolRegistry(agent)
    specs = {s.name: s for s in registry.specs()}
    assert specs["press"].parameters["required"] == ["digits"]  # the builtin's schema, as none was given
    assert specs["end_call"].description == "Hang up."
    assert specs["transfer_to_human"].description.startswith("Transfer the caller")

    call = RecordingCall()
    ctx = ctx_for(agent, actions=call)
    result = await registry.call("transfer_to_human", '{"reason": "billing dispute"}', ctx)
    assert json.loads(result.output) == {"status": "transferring", "target": "sip:queue@example.com"}
    result = await registry.call("press", '{"digits": "12#"}', ctx)
    assert json.loads(result.output) == {"status": "sent", "digits": "12#"}
    bad = await registry.call("press", '{"digits": "12x"}', ctx)
    assert bad.status == "invalid_arguments" and error_of(bad)["param"] == "digits"
    result = await registry.call("end_call", "", ctx)
    assert json.loads(result.output) == {"status": "ending_call"}
    assert call.done == [("transfer", "sip:queue@example.com", "billing dispute"), ("send_dtmf", "12#"),
                         ("hang_up", "")]


# --- webhooks ----------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


async def test_webhook_retries_5xx_with_one_idempotency_key(hooks: Hooks, tmp_path: Path,
                                                            http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [webhook("book", f"{hooks.base_url}/flaky/a", retries=2)])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    result = await registry.call("book", '{"date": "2025-03-14"}', ctx_for(agent, call_id="call_flaky"))
    assert result.ok, result
    assert json.loads(result.output) == {"booked": True, "attempt": 3}
    assert hooks.attempts["a"] == 3
    assert hooks.keys["a"] == ["call_flaky"] * 3
    assert hooks.bodies["a"] == [{"date": "2025-03-14"}] * 3


async def test_webhook_gives_up_when_retries_run_out(hooks: Hooks, tmp_path: Path,
                                                     http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [webhook("book", f"{hooks.base_url}/flaky/b", retries=1)])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    result = await registry.call("book", "{}", ctx_for(agent))
    assert result.status == "error" and error_of(result)["type"] == "webhook_error"
    assert "HTTP 503" in error_of(result)["message"]
    assert hooks.attempts["b"] == 2


async def test_webhook_retries_429_after_retry_after(hooks: Hooks, tmp_path: Path,
                                                     http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [webhook("book", f"{hooks.base_url}/throttled/c")])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    result = await registry.call("book", "{}", ctx_for(agent))
    assert result.ok and hooks.attempts["c"] == 2


async def test_webhook_4xx_is_not_retried(hooks: Hooks, tmp_path: Path, http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [webhook("book", f"{hooks.base_url}/bad/d", retries=3)])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    result = await registry.call("book", "{}", ctx_for(agent))
    assert result.status == "error"
    assert error_of(result)["message"].endswith('HTTP 400: {"detail":"order_id must be numeric"}')
    assert hooks.attempts["d"] == 1


async def test_a_hanging_webhook_times_out(hooks: Hooks, tmp_path: Path, http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [webhook("book", f"{hooks.base_url}/hang/e", timeout_s=0.3, retries=2)])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    result = await registry.call("book", "{}", ctx_for(agent))
    assert result.status == "timeout" and error_of(result)["type"] == "timeout"
    assert hooks.attempts["e"] == 1  # a hung endpoint is not asked again


async def test_an_unreachable_webhook_is_retried_then_reported(tmp_path: Path, http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [webhook("book", f"http://127.0.0.1:{closed_port()}/x", retries=2)])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    result = await registry.call("book", "{}", ctx_for(agent))
    assert result.status == "error" and "cannot reach" in error_of(result)["message"]


async def test_webhook_answers_over_the_size_bound_fail_the_tool_unread(hooks: Hooks, tmp_path: Path,
                                                                       http: httpx.AsyncClient) -> None:
    agent = make_agent(tmp_path, [
        webhook("declared", f"{hooks.base_url}/huge/j?size=3000000", retries=2),
        webhook("streamed", f"{hooks.base_url}/huge/k?size=3000000&chunked=1", retries=2),
        webhook("bounded", f"{hooks.base_url}/huge/l?size=5000", max_response_bytes=4096),
        webhook("small", f"{hooks.base_url}/huge/m?size=4000", max_response_bytes=4096),
        webhook("deep", f"{hooks.base_url}/deep/n"),
    ])
    registry = ToolRegistry(agent, http=http, webhook_backoff_s=0.01)
    for name, key in (("declared", "j"), ("streamed", "k"), ("bounded", "l")):
        result = await registry.call(name, "{}", ctx_for(agent))
        assert result.status == "error" and error_of(result)["type"] == "webhook_error", name
        assert "limit" in error_of(result)["message"]
        assert hooks.attempts[key] == 1  # a size refusal is final: no retry
    result = await registry.call("small", "{}", ctx_for(agent))  # the control: under the bound, it works
    assert result.status == "ok" and json.loads(result.output) == {"text": "x" * 4000}
    result = await registry.call("deep", "{}", ctx_for(agent))  # too deep for JSON: kept as text
    assert result.status == "ok" and "[[[" in result.output, result.output[:300]


async def test_webhook_get_text_and_pii(hooks: Hooks, tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [
        webhook("status", f"{hooks.base_url}/echo/f", method="GET", headers={"X-Api-Key": "k"}),
        webhook("eta", f"{hooks.base_url}/text/g"),
        webhook("customer", f"{hooks.base_url}/customer/h"),
        {**webhook("customer_raw", f"{hooks.base_url}/customer/i"), "returns_pii": True},
    ])
    async with ToolRegistry(agent) as registry:  # opens and closes its own HTTP client
        result = await registry.call("status", '{"order": "A12", "n": 2, "gift": true, "opts": {"a": 1}}',
                                     ctx_for(agent))
        assert json.loads(result.output) == {
            "method": "GET", "query": {"order": "A12", "n": "2", "gift": "true", "opts": '{"a": 1}'},
            "content_type": None}

        result = await registry.call("eta", "{}", ctx_for(agent))
        assert json.loads(result.output) == {"text": "Your order ships Tuesday."}

        result = await registry.call("customer", "{}", ctx_for(agent))
        assert json.loads(result.output) == {"name": "Jane", "email": "[email redacted]",
                                             "card": "**** **** **** 1111"}
        assert result.redactions == 2
        result = await registry.call("customer_raw", "{}", ctx_for(agent))
        assert json.loads(result.output)["card"] == "4111 1111 1111 1111"

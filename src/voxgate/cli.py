"""The `voxgate` command: serve, keys, db, agents, config, audit, call, loadtest, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from voxgate import compiled
from voxgate.config import Settings, UnsafeSettingsError, load_settings
from voxgate.loadtest.scenario import DEFAULT_MIX

if TYPE_CHECKING:
    import httpx

    from voxgate.store.database import Database

app = typer.Typer(help="voxgate: a self-hosted realtime voice-agent gateway.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database.", no_args_is_help=True)
agents_app = typer.Typer(help="Agents.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
report_app = typer.Typer(help="Reports on recorded calls.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")
app.add_typer(config_app, name="config")
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.", exists=True)]


def _settings(config: Path | None, **overrides: object) -> Settings:
    return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    engine: Annotated[str | None, typer.Option(help="Default engine: local, echo or openai.")] = None,
    sip_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="SIP port, UDP and TCP (default 5060; 0 turns SIP off).")] = None,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="One JSON object per log line.")] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM): serve https:// and wss://.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
    tls_self_signed: Annotated[bool, typer.Option(
        "--tls-self-signed", help="Serve TLS with a self-signed localhost certificate made in data_dir.")] = False,
) -> None:
    """Start the gateway."""
    from voxgate.app import create_app
    from voxgate.certificates import TlsSettingsError, server_context, sip_tls_files, tls_files
    from voxgate.observability.logs import configure_logging
    from voxgate.server.listener import Listener, run

    configure_logging(log_level, json_lines=json_logs)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from installed packages, never a hub
    settings = _settings(config, host=host, port=port, engine=engine, tls_cert=tls_cert, tls_key=tls_key,
                         tls_self_signed=tls_self_signed or None, sip_port=sip_port)
    try:
        settings.check_exposure()
        tls = tls_files(settings)
        context = server_context(tls)
        sip_tls = server_context(sip_tls_files(settings)) if settings.sip_port else None
    except (UnsafeSettingsError, TlsSettingsError) as exc:
        typer.echo(f"voxgate: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    dev_key = asyncio.run(_ensure_dev_key(settings))
    base = settings.base_url()
    ws = base.replace("http", "ws", 1)
    typer.echo(f"voxgate on {base}  (engine: {settings.engine}, default agent: {settings.default_agent}, "
               f"media path: {compiled.state()})")
    typer.echo(f"  Voice console:      {base}/")
    typer.echo(f"  Realtime WebSocket: {ws}/v1/realtime?model=voxgate")
    typer.echo(f"  WebRTC (GA):        {base}/v1/realtime/calls   ephemeral keys: {base}/v1/realtime/client_secrets")
    typer.echo(f"  Phones:             {base}/twilio/voice  {base}/telnyx/webhook")
    if settings.sip_port:
        sip_host = settings.sip_public_address or settings.sip_host or settings.host
        typer.echo(f"  SIP (UDP and TCP):  sip:<agent>@{sip_host}:{settings.sip_port}   calls from "
                   f"{', '.join(settings.sip_allowed_sources) or 'loopback'}"
                   f"{' or with digest auth' if settings.sip_digest_password.get_secret_value() else ' only'}")
        if sip_tls is not None:
            typer.echo(f"  SIP over TLS:       sips:<agent>@{sip_host}:{settings.sip_tls_port}")
    typer.echo(f"  Health / metrics:   {base}/readyz  {base}/metrics")
    if dev_key:
        typer.echo(f"  API key (shown once, only its hash is stored): {dev_key}")
    if tls and settings.tls_self_signed:
        typer.echo(f"  TLS certificate (self-signed; have clients trust this file): {tls[0].resolve()}")
    if settings.dev_mode:
        typer.echo("  Dev mode: the console page here mints keys without an API key (docs/operations.md)")
    app = create_app(settings)
    listener = Listener(app, settings, tls=context)
    app.state.stop_server = listener.stop_soon  # SIGTERM drains, then this
    if run(listener) != 0:
        raise typer.Exit(3)  # it could not start: the log says why


async def _ensure_dev_key(settings: Settings) -> str | None:
    """With no VOXGATE_API_KEYS, mint a key for this run and revoke the previous run's."""
    if settings.api_key_list():
        return None
    from voxgate.store.database import Database
    from voxgate.store.keys import KeyStore

    db = Database(settings.database_url)
    await db.connect()
    await db.upgrade()
    try:
        keys = KeyStore(db)
        for row in await keys.list(kind="api"):
            if row.get("name") == "serve" and not row.get("revoked_at"):
                await keys.revoke(row["id"])
        key_id, secret = await keys.create("serve", kind="api", roles=["admin"])
        await _audit_key_created(db, key_id, ["admin"])
        return secret
    finally:
        await db.aclose()


async def _audit_key_created(db: Database, key_id: str, roles: list[str]) -> None:
    """Issuance goes in the audit log like every other key event."""
    from voxgate.store.calls import CallStore

    calls = CallStore(db)
    await calls.audit("cli", "key.created", key_id, {"roles": roles})
    await calls.drain()


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
                role: Annotated[list[str] | None, typer.Option(
                    help="admin, operator, app or read-only (repeatable); default: app.")] = None,
                config: ConfigOption = None) -> None:
    """Create an API key; prints it once (only its hash is stored)."""
    from voxgate.roles import DEFAULT_KEY_ROLES, parse_roles

    try:
        roles = list(parse_roles(role or DEFAULT_KEY_ROLES))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from None

    async def run() -> str:
        from voxgate.store.database import Database
        from voxgate.store.keys import KeyStore

        db = Database(_settings(config).database_url)
        await db.connect()
        await db.upgrade()
        try:
            key_id, secret = await KeyStore(db).create(name, kind="api", roles=roles)
            await _audit_key_created(db, key_id, roles)
            return secret
        finally:
            await db.aclose()

    typer.echo(asyncio.run(run()))


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (never their secrets)."""
    async def run() -> list[dict[str, object]]:
        from voxgate.store.database import Database
        from voxgate.store.keys import KeyStore

        db = Database(_settings(config).database_url)
        await db.connect()
        await db.upgrade()
        try:
            return list(await KeyStore(db).list())
        finally:
            await db.aclose()

    for row in asyncio.run(run()):
        typer.echo(json.dumps(row, default=str))


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOption = None) -> None:
    """Revoke a key by id."""
    async def run() -> bool:
        from voxgate.store.database import Database
        from voxgate.store.keys import KeyStore

        db = Database(_settings(config).database_url)
        await db.connect()
        try:
            return await KeyStore(db).revoke(key_id)
        finally:
            await db.aclose()

    if not asyncio.run(run()):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to the latest version."""
    async def run() -> None:
        from voxgate.store.database import Database

        db = Database(_settings(config).database_url)
        await db.connect()
        await db.upgrade()
        await db.aclose()

    asyncio.run(run())
    typer.echo("database is at the latest schema")


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None) -> None:
    """Check the audit log's hash chain; exits 1 naming the first row that does not fit."""
    from voxgate.store.audit_log import Verdict, verify

    async def run() -> Verdict:
        from voxgate.store.database import Database

        db = Database(_settings(config).database_url)
        await db.connect()
        await db.upgrade()
        try:
            return await verify(db)
        finally:
            await db.aclose()

    verdict = asyncio.run(run())
    if not verdict.ok:
        typer.echo(f"audit log broken at row {verdict.bad_row}: {verdict.problem} "
                   f"({verdict.rows} row(s) before it hold)", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit log holds: {verdict.rows} row(s); head row {verdict.head_id} hash {verdict.head_hash}")


@audit_app.command("export")
def audit_export(output: Annotated[Path | None, typer.Option(
                     "--output", "-o", help="File to write (default: standard output).")] = None,
                 config: ConfigOption = None) -> None:
    """Write the audit log as JSON lines, oldest first, each row with its hashes."""
    import sys

    from voxgate.store.audit_log import export

    async def run(out: TextIO) -> int:
        from voxgate.store.database import Database

        db = Database(_settings(config).database_url)
        await db.connect()
        await db.upgrade()
        rows = 0
        try:
            async for row in export(db):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                rows += 1
        finally:
            await db.aclose()
        return rows

    with open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout) as out:
        rows = asyncio.run(run(out))
    if output:
        typer.echo(f"{rows} audit row(s) written to {output}", err=True)


@agents_app.command("list")
def agents_list(config: ConfigOption = None) -> None:
    """List the agents found in the agents directory."""
    from voxgate.agents import load_agents

    settings = _settings(config)
    for agent in load_agents(settings.agents_dir).values():
        default = " (default)" if agent.name == settings.default_agent else ""
        tools = ", ".join(t.name for t in agent.tools) or "-"
        typer.echo(f"{agent.name}{default}: {agent.description}  [tools: {tools}]")


@app.command("compile")
def compile_media_path(force: Annotated[bool, typer.Option(help="Build even when the build is current.")] = False,
                       ) -> None:
    """Compile the media path's modules with mypyc (`make install` does); a no-op when they are current."""
    built = compiled.build(force=force)
    typer.echo(f"media path: {'compiled' if built else 'source'} ({len(compiled.MODULES)} modules)")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective settings, secrets masked."""
    typer.echo(json.dumps(_settings(config).shown(), indent=2))


def _moment(text: str, now: datetime) -> datetime:
    """A time on the command line: an ISO date or time (UTC unless it says), or a span back from now
    ("30d", "12h", "90m")."""
    spans = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in spans and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * spans[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither an ISO date or time nor a span like 30d, 12h, 90m") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@report_app.command("cost")
def report_cost(
    since: Annotated[str, typer.Option(help="From: an ISO date or time, or a span back from now (30d, 12h).")] = "30d",
    until: Annotated[str | None, typer.Option(help="Until (excluded): an ISO date or time; default now.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's calls.")] = None,
    transport: Annotated[str | None, typer.Option(help="Only calls on this transport.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Cost of the finished calls in a window: totals, per agent, per transport and break-even against a
    human agent (prices: the `prices` settings)."""
    from voxgate.observability.cost import CostModel, cost_report, cost_table
    from voxgate.store.calls import CallStore
    from voxgate.store.database import Database

    settings = _settings(config)
    now = datetime.now(UTC)
    start, end = _moment(since, now), _moment(until, now) if until else None

    async def run() -> list[dict[str, object]]:
        db = Database(settings.database_url)
        await db.connect()
        await db.upgrade()
        try:
            return await CallStore(db).finished_calls(start, until=end, agent=agent, transport=transport)
        finally:
            await db.aclose()

    report = cost_report(asyncio.run(run()), CostModel(settings.prices))
    window = f"calls started {start:%Y-%m-%d %H:%M} to {(end or now):%Y-%m-%d %H:%M} UTC"
    typer.echo(json.dumps(report, indent=2) if as_json else cost_table(report, window))


@app.command()
def call(
    to: Annotated[str, typer.Argument(help="Whom to call: a sip: or tel: URI, or a number (through the trunk).")],
    url: Annotated[str, typer.Option(help="The running gateway's base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="VOXGATE_API_KEY", help="An API key of that gateway.",
                                         show_default=False)] = "",
    agent: Annotated[str | None, typer.Option(help="The agent who talks (default: the gateway's).")] = None,
    caller_id: Annotated[str | None, typer.Option("--from", help="Our number or SIP user (From).")] = None,
    metadata: Annotated[list[str] | None, typer.Option(
        help="key=value kept in the call record's metadata (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the outcome and print it.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds --wait waits at most.")] = 120.0,
) -> None:
    """Place an outbound call through a running gateway (POST /v1/calls); print the call id."""
    import time

    import httpx

    if not api_key:
        raise typer.BadParameter("an API key is needed: --api-key or VOXGATE_API_KEY", param_hint="--api-key")
    fields: dict[str, str] = {}
    for pair in metadata or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--metadata")
        fields[key] = value
    body: dict[str, object] = {"to": to, **({"agent": agent} if agent else {}),
                               **({"from": caller_id} if caller_id else {}), **({"metadata": fields} if fields else {})}
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10.0) as http:
            placed = http.post("/v1/calls", json=body)
            if placed.status_code != 202:
                typer.echo(f"refused ({placed.status_code}): {_problem_text(placed)}", err=True)
                raise typer.Exit(1)
            call_id = placed.json()["id"]
            typer.echo(call_id)
            if not wait:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                shown = http.get(f"/v1/calls/{call_id}")
                if shown.status_code == 200:
                    record = shown.json()
                    dial = (record.get("metadata") or {}).get("dial")
                    if dial not in (None, "dialing", "ringing"):
                        # `busy`, `no_answer`, `failed: 503 Service Unavailable` once recorded
                        typer.echo("answered" if dial == "answered" else record.get("outcome") or dial)
                        raise typer.Exit(0 if dial == "answered" else 1)
                time.sleep(0.25)  # a person watching: a quarter second is prompt enough
    except httpx.HTTPError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"still ringing after {timeout:g} s", err=True)
    raise typer.Exit(1)


def _problem_text(response: httpx.Response) -> str:
    """The message of a problem response (the project's shape), else its body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="The gateway's base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="VOXGATE_API_KEY", help="API key (Realtime WebSocket calls).",
                                         show_default=False)] = "",
    transport: Annotated[str, typer.Option(help="realtime, twilio, telnyx; several, comma-separated, take turns.")]
        = "realtime",
    calls: Annotated[int, typer.Option(min=1, max=10000, help="Calls live at once, once ramped up.")] = 10,
    rate: Annotated[float, typer.Option(min=0.01, help="Calls started per second.")] = 2.0,
    hold: Annotated[float, typer.Option(min=1, help="Seconds each call stays on the line.")] = 30.0,
    duration: Annotated[float, typer.Option(min=1, max=7 * 24 * 3600, help="Seconds the run lasts.")] = 60.0,
    max_calls: Annotated[int | None, typer.Option(min=1, help="Calls started at most (default: enough to hold "
                                                              "--calls for --duration).")] = None,
    mix: Annotated[str, typer.Option(help="Scenario weights: speak, tool, barge_in, listen.")] = DEFAULT_MIX,
    agent: Annotated[str | None, typer.Option(help="Agent to call (?agent=); default: the gateway's.")] = None,
    gateway_pid: Annotated[int | None, typer.Option(help="Sample this local process's RSS, CPU and fds.")] = None,
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON report.")]
        = Path("loadtest.json"),
    png: Annotated[Path, typer.Option(help="Where to write the plot (needs the loadtest extra: matplotlib).")]
        = Path("loadtest.png"),
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a target that is not on loopback.")]
        = False,
    carrier_api_port: Annotated[int, typer.Option(min=0, max=65535, help="Loopback port standing in for the "
                                                  "carriers' REST APIs (the gateway's telnyx_api_base).")] = 8090,
    twilio_auth_token: Annotated[str, typer.Option(envvar="VOXGATE_TWILIO_AUTH_TOKEN", show_default=False,
                                                   help="Sign Twilio webhooks and media sockets with it.")] = "",
    telnyx_private_key: Annotated[str, typer.Option(envvar="VOXGATE_LOADTEST_TELNYX_PRIVATE_KEY", show_default=False,
                                                    help="Sign Telnyx webhooks: base64 Ed25519 seed.")] = "",
    reply_timeout: Annotated[float, typer.Option(min=1, help="Seconds a turn waits for the agent.")] = 15.0,
) -> None:
    """Load a running gateway with scripted calls and report latency, drops, refusals and its cost per call."""
    import base64
    import binascii

    from voxgate.loadtest.driver import LoadPlan, run_load
    from voxgate.loadtest.plot import PlotUnavailable, write_plot
    from voxgate.loadtest.report import Sample
    from voxgate.loadtest.scenario import Mix, Transport
    from voxgate.loadtest.target import RemoteTargetRefused, Target

    try:
        transports = tuple(Transport(t.strip()) for t in transport.split(",") if t.strip())
        target = Target.parse(url, api_key, allow_remote)
        seed = base64.b64decode(telnyx_private_key, validate=True) if telnyx_private_key else None
        if seed is not None and len(seed) != 32:
            raise ValueError("the Telnyx private key must be a base64 32-byte Ed25519 seed")
        if Transport.REALTIME in transports and not api_key:
            raise ValueError("Realtime calls need an API key: --api-key or VOXGATE_API_KEY")
        plan = LoadPlan(target, transports, Mix.parse(mix), calls, rate, hold, duration, max_calls, agent,
                        gateway_pid, reply_timeout_s=reply_timeout, carrier_api_port=carrier_api_port,
                        twilio_auth_token=twilio_auth_token or None, telnyx_private_key=seed)
    except RemoteTargetRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, binascii.Error) as exc:
        raise typer.BadParameter(str(exc)) from None

    if gateway_pid is not None:
        from voxgate.loadtest.gateway_process import GatewayProcess

        try:
            GatewayProcess(gateway_pid)
        except ProcessLookupError as exc:
            raise typer.BadParameter(str(exc), param_hint="--gateway-pid") from None
    printed = [-10.0]

    def progress(sample: Sample) -> None:
        if sample.t - printed[0] >= 10:
            printed[0] = sample.t
            typer.echo(f"  t={sample.t:5.0f}s live {sample.live:4d}  completed {sample.completed}  dropped "
                       f"{sample.dropped}  refused {sample.refused}")

    typer.echo(f"voxgate loadtest -> {target.base_url}: {calls} calls over {', '.join(transports)}, {rate:g}/s, "
               f"held {hold:g} s, for {duration:g} s (at most {plan.call_limit} calls)")
    import gc

    gc.freeze()  # what start-up imported lives to the end: keep full collections off the callers' clocks
    try:
        report = asyncio.run(run_load(plan, progress))
    except OSError as exc:  # the carrier API port is taken, say
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: no report", err=True)
        raise typer.Exit(130) from None
    for line in report.summary():
        typer.echo(line)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.as_dict(), indent=2))
    typer.echo(f"report: {json_path}")
    try:
        typer.echo(f"plot:   {write_plot(report.samples, png, f'voxgate loadtest: {target.base_url}')}")
    except PlotUnavailable as exc:
        typer.echo(str(exc), err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

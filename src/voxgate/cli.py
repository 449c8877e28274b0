"""The `voxgate` command: serve, keys, db, agents, config."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from voxgate.config import Settings, UnsafeSettingsError, load_settings

app = typer.Typer(help="voxgate: a self-hosted realtime voice-agent gateway.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database.", no_args_is_help=True)
agents_app = typer.Typer(help="Agents.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")
app.add_typer(config_app, name="config")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.", exists=True)]


def _settings(config: Path | None, **overrides: object) -> Settings:
    return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    engine: Annotated[str | None, typer.Option(help="Default engine: local, echo or openai.")] = None,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="One JSON object per log line.")] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM): serve https:// and wss://.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
    tls_self_signed: Annotated[bool, typer.Option(
        "--tls-self-signed", help="Serve TLS with a self-signed localhost certificate made in data_dir.")] = False,
) -> None:
    """Start the gateway."""
    import uvicorn

    from voxgate.app import create_app
    from voxgate.certificates import TlsSettingsError, tls_files
    from voxgate.observability.logs import configure_logging
    from voxgate.transports.direct_socket import UVICORN_WS

    configure_logging(log_level, json_lines=json_logs)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from installed packages, never a hub
    settings = _settings(config, host=host, port=port, engine=engine, tls_cert=tls_cert, tls_key=tls_key,
                         tls_self_signed=tls_self_signed or None)
    try:
        settings.check_exposure()
        tls = tls_files(settings)
    except (UnsafeSettingsError, TlsSettingsError) as exc:
        typer.echo(f"voxgate: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    dev_key = asyncio.run(_ensure_dev_key(settings))
    base = settings.base_url()
    ws = base.replace("http", "ws", 1)
    typer.echo(f"voxgate on {base}  (engine: {settings.engine}, default agent: {settings.default_agent})")
    typer.echo(f"  Voice console:      {base}/")
    typer.echo(f"  Realtime WebSocket: {ws}/v1/realtime?model=voxgate")
    typer.echo(f"  WebRTC (GA):        {base}/v1/realtime/calls   ephemeral keys: {base}/v1/realtime/client_secrets")
    typer.echo(f"  Phones:             {base}/twilio/voice  {base}/telnyx/webhook")
    typer.echo(f"  Health / metrics:   {base}/readyz  {base}/metrics")
    if dev_key:
        typer.echo(f"  API key (shown once, only its hash is stored): {dev_key}")
    if tls and settings.tls_self_signed:
        typer.echo(f"  TLS certificate (self-signed; have clients trust this file): {tls[0].resolve()}")
    if settings.dev_mode:
        typer.echo("  Dev mode: the console page here mints keys without an API key (docs/operations.md)")
    cert, key = tls or (None, None)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                ws_max_size=settings.max_message_bytes * 2, ws=UVICORN_WS, log_config=None,
                ssl_certfile=cert, ssl_keyfile=key)


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
        _, secret = await keys.create("serve", kind="api")
        return secret
    finally:
        await db.aclose()


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
                config: ConfigOption = None) -> None:
    """Create an API key; prints it once (only its hash is stored)."""
    async def run() -> str:
        from voxgate.store.database import Database
        from voxgate.store.keys import KeyStore

        db = Database(_settings(config).database_url)
        await db.connect()
        await db.upgrade()
        try:
            return (await KeyStore(db).create(name, kind="api"))[1]
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


@agents_app.command("list")
def agents_list(config: ConfigOption = None) -> None:
    """List the agents found in the agents directory."""
    from voxgate.agents import load_agents

    settings = _settings(config)
    for agent in load_agents(settings.agents_dir).values():
        default = " (default)" if agent.name == settings.default_agent else ""
        tools = ", ".join(t.name for t in agent.tools) or "-"
        typer.echo(f"{agent.name}{default}: {agent.description}  [tools: {tools}]")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective settings, secrets masked."""
    typer.echo(json.dumps(_settings(config).shown(), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

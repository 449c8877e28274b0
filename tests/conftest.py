"""Shared fixtures: a live gateway on loopback, and strict validators for server events."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

API_KEY = "sk-test-voxgate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT
    api_key: str
    app: Any

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway


def start_server(tmp: Path, **overrides: Any) -> tuple[LiveServer, Any, threading.Thread]:
    import uvicorn

    from voxgate.app import create_app
    from voxgate.config import Settings

    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, api_keys=API_KEY,
                        database_url=f"sqlite+aiosqlite:///{tmp / 'voxgate.db'}", **overrides)
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio",
                            ws_max_size=settings.max_message_bytes * 2, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"voxgate-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    live = LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", API_KEY, app)
    return live, server, thread


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One gateway with the local engine and the demo agent for the whole run (models load once)."""
    tmp = tmp_path_factory.mktemp("gateway")
    os.environ["ACME_DB"] = str(tmp / "acme.db")
    live, server, thread = start_server(tmp, engine="local")
    yield live
    server.should_exit = True
    thread.join(timeout=30)


def _adapter(union: Any) -> TypeAdapter[Any]:
    return TypeAdapter(Annotated[union, Field(discriminator="type")])


@pytest.fixture(scope="session")
def ga_server_events() -> TypeAdapter[Any]:
    from openai.types.realtime.realtime_server_event import RealtimeServerEvent

    return _adapter(RealtimeServerEvent)


@pytest.fixture(scope="session")
def beta_server_events() -> TypeAdapter[Any]:
    from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent

    return _adapter(RealtimeServerEvent)

"""Shared fixtures: a live gateway on loopback, and strict validators for server events."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter

from voxgate.embedded import EmbeddedGateway

os.environ.setdefault("HF_HUB_OFFLINE", "1")

API_KEY = "sk-test-voxgate"


@dataclass
class LiveServer:
    base_url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT
    api_key: str
    embedded: EmbeddedGateway

    @property
    def app(self) -> Any:
        return self.embedded.app

    @property
    def gateway(self) -> Any:
        return self.embedded.gateway


def start_server(tmp: Path, **overrides: Any) -> LiveServer:
    """A gateway on a free loopback port; stop it with `live.embedded.stop()`."""
    overrides.setdefault("api_keys", API_KEY)
    embedded = EmbeddedGateway(tmp, **overrides).start()
    return LiveServer(embedded.base_url, embedded.ws_url, overrides["api_keys"], embedded)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One gateway with the local engine and the demo agent for the whole run (models load once)."""
    tmp = tmp_path_factory.mktemp("gateway")
    os.environ["ACME_DB"] = str(tmp / "acme.db")
    live = start_server(tmp, engine="local")
    yield live
    live.embedded.stop()


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

"""Shared fixtures: a live gateway on loopback, and strict validators for server events."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from hypothesis import settings
from pydantic import Field, TypeAdapter

if TYPE_CHECKING:  # imported where a gateway starts: unit tests never need the server, store and media stacks
    from voxgate.embedded import EmbeddedGateway

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` gates every landing, so its property tests draw the same cases on every run: a fuzzer's
# lucky find must not turn main red at random. `HYPOTHESIS_PROFILE=explore` hunts with fresh seeds.
# No deadline in either: an example's time depends on the machine's load, and timing must never fail a test.
settings.register_profile("repeatable", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

API_KEY = "sk-test-voxgate"
# Every test gateway's wall clock starts here (a Wednesday morning), so the dates it speaks are the same on
# every day of the week; tests that check a spoken date derive it from the gateway's clock.
CLOCK_START = "2026-03-11T10:00:00"


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

    @property
    def auth(self) -> dict[str, str]:
        """Headers with the API key (the control API and /metrics want one)."""
        return {"Authorization": f"Bearer {self.api_key}"}


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above that reaches the root logger, from any thread: a test gateway serves
    from its own, and a traceback it logs is a bug even when the client got a good answer."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def error_logs() -> Iterator[ErrorRecords]:
    """What was logged at ERROR or above while this module's tests ran."""
    handler = ErrorRecords()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def start_server(tmp: Path, *, under_uvicorn: bool = False, **overrides: Any) -> LiveServer:
    """A gateway on a free loopback port (voxgate's own listener, or stock uvicorn); stop it with
    `live.embedded.stop()`."""
    overrides.setdefault("api_keys", API_KEY)
    overrides.setdefault("clock_start", CLOCK_START)
    # A fixed call limit: the derived one depends on this machine's cores and memory, and tests must not.
    # Admission control has its own tests (tests/integration/test_admission.py).
    overrides.setdefault("max_calls", 64)
    # The agent's voice renders a text the same way every time: a varied rendering is now and then misheard
    # by Whisper tiny ("has shipped" as "HES"), a lucky draw no test may depend on.
    overrides.setdefault("tts_variation", False)
    from voxgate.embedded import EmbeddedGateway

    gateway: type[EmbeddedGateway] = EmbeddedGateway
    if under_uvicorn:
        from tests.uvicorn_gateway import UvicornGateway

        gateway = UvicornGateway
    embedded = gateway(tmp, **overrides).start()
    if overrides.get("sip_port") and embedded.gateway.sip is None:  # say so here, not as a 503 far away
        embedded.stop()
        raise AssertionError(f"the SIP door could not bind port {overrides['sip_port']} (see the log)")
    return LiveServer(embedded.base_url, embedded.ws_url, overrides["api_keys"], embedded)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One gateway with the local engine and the demo agent for the whole run (models load once)."""
    tmp = tmp_path_factory.mktemp("gateway")
    os.environ["ACME_DB"] = str(tmp / "acme.db")
    live = start_server(tmp, engine="local")
    yield live
    live.embedded.stop()


@dataclass
class CarrierServer:
    """A gateway that takes phone calls from Twilio and Telnyx, with their REST APIs on a local recorder."""

    live: LiveServer
    api: Any  # tests.phone_carrier.CarrierApiRecorder
    twilio_auth_token: str
    telnyx_api_key: str
    telnyx_private_key: bytes  # raw Ed25519 seed: the test carrier signs its webhooks with it


def start_carrier_server(tmp: Path, **overrides: Any) -> CarrierServer:
    """Local engine, demo and echo agents, carriers' signatures enforced (dev_mode off), Telnyx in A-law,
    and the SIP door on a free loopback port; `overrides` are further settings. Stop it with
    `server.live.embedded.stop()` and `server.api.stop()`."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tests.phone_carrier import CarrierApiRecorder

    os.environ.setdefault("ACME_DB", str(tmp / "acme.db"))
    api = CarrierApiRecorder().start()
    seed = bytes(range(32))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    secrets = {"twilio_auth_token": "twilio-test-token", "telnyx_api_key": "KEYtelnyx-test"}
    # SIP too, on a free port, ringing 300 ms before answering (a CANCEL must find the call unanswered)
    from tests.sipp_caller import free_port

    sip_port = free_port()
    live = start_server(tmp, engine="local", dev_mode=False, twilio_api_base=api.url, telnyx_api_base=api.url,
                        telnyx_public_key=base64.b64encode(public).decode(), telnyx_codec="PCMA",
                        carrier_stall_timeout_s=2.0, sip_port=sip_port, sip_ring_ms=300, **secrets, **overrides)
    return CarrierServer(live, api, secrets["twilio_auth_token"], secrets["telnyx_api_key"], seed)


@pytest.fixture(scope="session")
def carrier_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarrierServer]:
    """A gateway that takes phone calls over Twilio, Telnyx and SIP (`start_carrier_server`)."""
    server = start_carrier_server(tmp_path_factory.mktemp("carrier-gateway"))
    yield server
    server.live.embedded.stop()
    server.api.stop()


@pytest.fixture(scope="module")
def carrier_server_asgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarrierServer]:
    """Like `carrier_server` (echo engine) but served by stock uvicorn: media sockets take the plain ASGI
    path, as under any ASGI server without voxgate's `DirectSocket` extension."""
    from tests.phone_carrier import CarrierApiRecorder

    tmp = tmp_path_factory.mktemp("carrier-gateway-asgi")
    api = CarrierApiRecorder().start()
    token = "twilio-test-token"
    live = start_server(tmp, engine="echo", default_agent="echo", dev_mode=False, twilio_api_base=api.url,
                        twilio_auth_token=token, under_uvicorn=True)
    yield CarrierServer(live, api, token, "", b"")
    live.embedded.stop()
    api.stop()


@pytest.fixture
async def http(gateway: LiveServer) -> AsyncIterator[Any]:
    """An HTTP client for the module's `gateway` fixture (each module that uses it defines one)."""
    import httpx

    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as client:
        yield client


async def finished_call(live: LiveServer, session_id: str, wait_s: float = 10.0) -> dict[str, Any]:
    """The call record of a session, once the gateway has written its end."""
    import asyncio

    import httpx

    async with httpx.AsyncClient(base_url=live.base_url, headers={"Authorization": f"Bearer {live.api_key}"}) as http:
        for _ in range(int(wait_s / 0.1)):
            call: dict[str, Any] = (await http.get(f"/v1/calls/{session_id}")).json()
            if call.get("ended_at"):
                return call
            await asyncio.sleep(0.1)
    raise AssertionError(f"call {session_id} was never ended: {call}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` (`make unit`), the tests that use the official SDK share one worker:
    importing it takes half a second and building its validators seconds, and every worker that ran one
    would pay for its own. (pytest-xdist 3.8 drops every xdist_group on pytest 9.2, pytest-xdist#1386:
    until a release fixes it, the groups are spread like other tests.)"""
    for item in items:
        if {"ga_server_events", "beta_server_events", "openai_sdk"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("openai_sdk_validators"))


@pytest.fixture(scope="session")
def openai_sdk() -> ModuleType:
    """The official SDK, imported by the tests that use it rather than at collection (by every worker)."""
    import openai

    return openai


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

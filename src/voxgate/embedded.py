"""A gateway in a background thread of this process: for tests, benchmarks, and embedding in an app."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from voxgate.app import create_app
from voxgate.certificates import server_context, tls_files
from voxgate.config import Settings
from voxgate.gateway import Gateway
from voxgate.server.listener import Listener, run


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])

T = TypeVar("T")


class EmbeddedGateway:
    """`with EmbeddedGateway(tmp_dir, api_keys="k") as gw:` serves on gw.base_url until the block ends."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        port = settings.pop("port", None) or free_port()
        settings.setdefault("database_url", f"sqlite+aiosqlite:///{data_dir / 'voxgate.db'}")
        settings.setdefault("data_dir", data_dir)
        settings.setdefault("sip_port", 0)  # no SIP door unless asked: many embedded gateways share a host
        self.settings = Settings(host="127.0.0.1", port=port, **settings)
        self.app = create_app(self.settings)
        tls = tls_files(self.settings)
        self.tls_cert = tls[0] if tls else None  # what a client trusts to reach a self-signed gateway
        self.listener = Listener(self.app, self.settings, tls=server_context(tls))
        self.app.state.stop_server = self.stop_soon
        self._thread = threading.Thread(target=run, args=(self.listener,), kwargs={"signals": False},
                                        name=f"voxgate-{port}", daemon=True)
        scheme = "https" if tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{port}"
        self.ws_url = f"{scheme.replace('http', 'ws')}://127.0.0.1:{port}"

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    def start(self, timeout_s: float = 120.0) -> EmbeddedGateway:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.listener.started.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
        return self

    def run(self, work: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run `work` on the gateway's event loop from another thread (an app steering a live call) and
        return its result."""
        loop = self.gateway.loop
        if loop is None:
            work.close()
            raise RuntimeError("the gateway has not started")
        return asyncio.run_coroutine_threadsafe(work, loop).result(timeout_s)

    def stop_soon(self) -> None:
        """Ask the server to stop (from any thread); `stop()` also waits for it."""
        self.listener.stop_soon()

    def stop(self) -> None:
        self.stop_soon()
        self._thread.join(timeout=30)

    def __enter__(self) -> EmbeddedGateway:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

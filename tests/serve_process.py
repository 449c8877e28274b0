"""`voxgate serve` in a child process, as an operator runs it, for tests of signals, crashes and clusters;
and a WebSocket session on a gateway (`open_session`).

    serve = Serve(tmp, "sqlite+aiosqlite:///.../voxgate.db", drain_timeout_s="1")
    await serve.ready(); ...; serve.process.send_signal(signal.SIGTERM); ...; serve.stop()

Settings are given as `VOXGATE_*` environment variables (keyword arguments, upper-cased).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import websockets

from voxgate.embedded import free_port

KEY = "sk-drain"


class Serve:
    """`voxgate serve` with the echo engine, on its own port and the given database."""

    def __init__(self, tmp: Path, database_url: str, **settings: str) -> None:
        self.settings = settings
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        env = {**os.environ, "VOXGATE_DATABASE_URL": database_url, "VOXGATE_API_KEYS": KEY,
               "ACME_DB": str(tmp / "acme.db"), "VOXGATE_MAX_CALLS": "8",
               **{f"VOXGATE_{k.upper()}": v for k, v in settings.items()}}
        self.log_path = tmp / f"serve-{self.port}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voxgate.cli", "serve", "--engine", "echo", "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            for _ in range(1200):
                assert self.process.poll() is None, f"the gateway exited during start-up:\n{self.log_path.read_text()}"
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the gateway never became ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


async def open_session(ws_url: str, key: str) -> tuple[websockets.ClientConnection, str]:
    """A Realtime WebSocket session with the echo agent on the gateway at `ws_url`; (socket, session id)."""
    ws = await websockets.connect(f"{ws_url}/v1/realtime?model=x&agent=echo",
                                  additional_headers={"Authorization": f"Bearer {key}"})
    created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    return ws, str(created["session"]["id"])

"""The gateway's app served by stock uvicorn instead of voxgate's listener, for the tests of ASGI's plain
path: no `DirectSocket` extension and no connection guard, as under any ASGI server an embedder may choose."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from voxgate.embedded import EmbeddedGateway


class UvicornGateway(EmbeddedGateway):
    def __init__(self, data_dir: Path, **settings: Any) -> None:
        super().__init__(data_dir, **settings)
        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.settings.port,
                                                     log_level="warning", lifespan="on", ws="websockets-sansio"))
        self._thread = threading.Thread(target=self.uvicorn.run, name="uvicorn", daemon=True)

    def start(self, timeout_s: float = 120.0) -> UvicornGateway:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop_soon(self) -> None:
        self.uvicorn.should_exit = True

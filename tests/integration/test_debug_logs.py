"""At debug level the WebSocket server prints every handshake header: no key may come out with them."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import start_server
from voxgate.observability.logs import configure_logging

STATIC_KEY = "sk-test-debug-static-key"
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "voxgate")


@contextlib.contextmanager
def debug_log() -> Iterator[io.StringIO]:
    """What `voxgate serve --log-level debug` writes, every server logger turned up; put back afterwards.

    Call it after the gateway has started: uvicorn's own logging set-up (which `serve` skips) is undone so
    that every record reaches the handler `serve` installs."""
    root = logging.getLogger()
    saved_root = root.handlers[:], root.level
    loggers = {name: logging.getLogger(name) for name in LOGGERS}
    saved = {name: (logger.level, logger.handlers[:], logger.propagate) for name, logger in loggers.items()}
    buffer = io.StringIO()
    configure_logging("debug")
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    for logger in loggers.values():
        logger.setLevel(logging.DEBUG)
        logger.handlers[:], logger.propagate = [], True
    try:
        yield buffer
    finally:
        root.handlers[:], root.level = saved_root
        for name, (level, handlers, propagate) in saved.items():
            logger = loggers[name]
            logger.setLevel(level)
            logger.handlers[:], logger.propagate = handlers, propagate


async def test_debug_logs_never_print_keys(tmp_path: Path) -> None:
    live = start_server(tmp_path, engine="echo", api_keys=STATIC_KEY)
    try:
        with debug_log() as buffer:
            headers = {"Authorization": f"Bearer {STATIC_KEY}"}
            async with httpx.AsyncClient(base_url=live.base_url) as http:
                minted = await http.post("/v1/realtime/client_secrets", headers=headers, json={})
                stored_key = (await http.post("/console/token", headers=headers)).json()["value"]
            ephemeral = minted.json()["value"]
            url = f"{live.ws_url}/v1/realtime?model=x"
            async with websockets.connect(url, additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
            # The browser's way: the key rides in a subprotocol.
            protocols = [websockets.Subprotocol("realtime"),
                         websockets.Subprotocol(f"openai-insecure-api-key.{ephemeral}")]
            async with websockets.connect(url, subprotocols=protocols) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
            # A spent key, refused at the handshake: the refusal is logged too.
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(url, additional_headers={"Authorization": f"Bearer {ephemeral}"})
    finally:
        live.embedded.stop()
    logged = buffer.getvalue()
    # The handshakes were logged, header by header: the sweep below looks at real lines.
    assert "< authorization: [redacted]" in logged.lower(), logged[-3000:]
    assert "openai-insecure-api-key.[redacted]" in logged
    for secret in (STATIC_KEY, ephemeral, ephemeral[3:], stored_key):
        assert secret not in logged, f"{secret[:6]}... in the debug log"

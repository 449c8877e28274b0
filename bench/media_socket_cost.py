"""What one WebSocket message costs the server: voxgate's listener, read by callback or through ASGI, and
ASGI through uvicorn.

The server runs in its own process pinned to CPU 0, the client on CPU 1. N connections each send bursts
of Twilio-sized media messages (390 bytes of JSON) and read as many replies (a media message back); the
figure is the server process's CPU time per message in and reply out, over the measured rounds. CPU time
rather than wall time, so a busy machine slows the run without changing the figure much.

    direct         voxgate's listener (server/), the app reading by callback (the DirectSocket
                   extension: deliver_to / send_text), as carrier calls do
    listener-asgi  voxgate's listener, the app reading through ASGI (`await receive()` / `await send()`),
                   as Realtime WebSocket sessions do
    uvicorn-asgi   uvicorn (websockets-sansio) and the same ASGI app: any ASGI server's shape

    .venv/bin/python bench/media_socket_cost.py [--connections 50] [--rounds 200] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BURST = 5
REPLY = json.dumps({"event": "media", "streamSid": "MZ" + "0" * 32,
                    "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}})
KINDS = ("direct", "listener-asgi", "uvicorn-asgi")


def serve(kind: str, port: int) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from voxgate.config import Settings
    from voxgate.server.listener import Listener, run
    from voxgate.server.websocket_connection import EXTENSION

    async def by_callback(websocket: WebSocket) -> None:
        await websocket.accept()
        media = websocket.scope["extensions"][EXTENSION]
        ended = asyncio.Event()
        media.deliver_to(lambda data: media.send_text(REPLY), lambda code: ended.set())
        await ended.wait()

    async def by_asgi(websocket: WebSocket) -> None:
        await websocket.accept()
        while (await websocket.receive())["type"] == "websocket.receive":
            await websocket.send_text(REPLY)

    app = Starlette(routes=[WebSocketRoute("/twilio/media", by_callback if kind == "direct" else by_asgi)])
    if kind == "uvicorn-asgi":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, ws="websockets-sansio", ws_per_message_deflate=False,
                    log_level="warning", lifespan="off")
        return
    raise SystemExit(run(Listener(app, Settings(host="127.0.0.1", port=port))))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, pid: int, connections: int, rounds: int) -> float:
    from websockets.asyncio.client import connect

    message = json.dumps({"event": "media", "sequenceNumber": "12", "streamSid": "MZ" + "0" * 32, "media": {
        "track": "inbound", "chunk": "11", "timestamp": "220", "payload": base64.b64encode(os.urandom(160)).decode()}})
    sockets = [await connect(f"ws://127.0.0.1:{port}/twilio/media", compression=None) for _ in range(connections)]

    async def talk(ws: Any, n: int) -> None:
        for _ in range(n):
            for _ in range(BURST):
                await ws.send(message)
            for _ in range(BURST):
                await ws.recv()

    await asyncio.gather(*(talk(ws, 20) for ws in sockets))  # warm-up
    before = cpu_seconds(pid)
    await asyncio.gather(*(talk(ws, rounds) for ws in sockets))
    used = cpu_seconds(pid) - before
    for ws in sockets:
        await ws.close()
    return used / (connections * rounds * BURST)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(kind: str, args: argparse.Namespace) -> float:
    port = free_port()
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    server = subprocess.Popen([*pin, sys.executable, __file__, "serve", kind, "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.1)
        import uvloop

        return uvloop.run(load(port, server.pid, args.connections, args.rounds))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("kind", nargs="?", default="direct", choices=KINDS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternating")
    args = parser.parse_args()
    if args.role == "serve":
        serve(args.kind, args.port)
        return
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    print(f"server CPU per message in and reply out; {args.connections} connections, {args.rounds} rounds of {BURST}")
    results: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeat):
        for kind in KINDS:
            results[kind].append(measure(kind, args) * 1e6)
            print(f"  {kind:>13}: {results[kind][-1]:5.1f} µs", flush=True)
    for kind, values in results.items():
        print(f"{kind:>13}: {min(values):5.1f}-{max(values):5.1f} µs per message in + reply")


if __name__ == "__main__":
    main()

"""What the openai engine adds to a turn: a front gateway relaying to a back one, against the back alone.

Two gateways in this process: the back with the local engine, the front with engine "openai" pointed at
the back. The same text turns (lines no tool answers, so the back speaks the same reply either way) are
sent straight to the back and through the front; it prints the time from `response.create` to the first
audio delta and to `response.done`, median and p90. The difference is the relay's own cost (mirroring
and a second hop on loopback); OpenAI's own time to first audio is not in it.

    .venv/bin/python bench/openai_relay.py [--turns 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from voxgate.embedded import EmbeddedGateway

BACK_KEY, FRONT_KEY = "bench-back", "bench-front"
LINES = ["Tell me something nice.", "Good evening to you."]  # no tool: the same reply either way


async def turns(ws_url: str, key: str, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first_audio_ms": [], "done_ms": []}
    async with websockets.connect(f"{ws_url}model=gpt-realtime",
                                  additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as ws:
        await ws.recv()
        for i in range(n):
            text = LINES[i % len(LINES)]
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "response.create"}))
            first = None
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "response.output_audio.delta" and first is None:
                    first = time.perf_counter()
                if event["type"] == "response.done":
                    break
            if first is not None:
                times["first_audio_ms"].append((first - started) * 1000)
            times["done_ms"].append((time.perf_counter() - started) * 1000)
    return times


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(ordered):7.1f} ms  p90 {ordered[int(0.9 * (len(ordered) - 1))]:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["ACME_DB"] = str(root / "acme.db")
        agents = root / "agents"
        agents.mkdir()
        (agents / "plain.yaml").write_text("name: plain\ninstructions: Answer briefly.\nvoice: joe\n")
        (root / "back").mkdir()
        (root / "front").mkdir()
        with EmbeddedGateway(root / "back", api_keys=BACK_KEY, engine="local", agents_dir=agents,
                             default_agent="plain") as back, \
                EmbeddedGateway(root / "front", api_keys=FRONT_KEY, engine="openai", openai_api_key=BACK_KEY,
                                openai_base_url=f"{back.base_url}/v1") as front:
            for name, url, key in (("back alone", back.ws_url + "/v1/realtime?", BACK_KEY),
                                   ("through front", front.ws_url + "/v1/realtime?", FRONT_KEY)):
                asyncio.run(turns(url, key, 2))  # warm-up
                times = asyncio.run(turns(url, key, args.turns))
                print(f"{name:14s} first audio: {summary(times['first_audio_ms'])}   "
                      f"done: {summary(times['done_ms'])}")


if __name__ == "__main__":
    main()

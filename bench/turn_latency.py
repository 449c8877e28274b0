"""Turn latency of the local engine, measured from a client over the Realtime WebSocket.

Spoken requests (the project's own Piper voice at several speeds) are streamed in real time with
server VAD (silence_duration_ms=300). For each turn it measures, from the end of the caller's
speech: speech_stopped, transcription completed, and the first audio delta; the engine's own STT,
brain and TTS-first-chunk times; the word error rate of the transcripts; then barge-ins (the caller
talks over the reply: speech start → last audio delta and → response.done), and peak RSS with 1
and with 10 concurrent sessions. Then the same turns through the cascade engine, each stage an HTTP
request (this gateway's speech routes, and its flow brain as the chat model or the LLM at
--cascade-llm-url), with its budget per stage beside the local engine's.

    .venv/bin/python bench/turn_latency.py [--turns 24] [--concurrent 10] [--cascade-turns 12]
        [--cascade-llm-url http://127.0.0.1:8080/v1 --cascade-llm-model ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.speech import normalise, silence, speak, wer

from voxgate.embedded import EmbeddedGateway

RATE = 24000
FRAME = RATE // 50  # 20 ms
KEY = "bench-key"
REQUESTS = [
    "what is the status of order four five six seven",
    "where is my order one two three four",
    "can you check order number four five six seven for me",
    "what time do you open on saturday",
    "I would like to book an appointment tomorrow at three pm",
    "what can you do",
    "thank you very much",
    "when are you open",
]
SPEEDS = (0.85, 1.0, 1.2)
BARGE_IN = "wait a moment please"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def row(name: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"  {name:<42} (no samples)"
    return (f"  {name:<42} p50 {pct(values, 50):7.1f} {unit}   p95 {pct(values, 95):7.1f} {unit}"
            f"   n={len(values)}")


class Client:
    """One Realtime WebSocket session that streams audio at real time and timestamps events."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            await self.events.put((time.perf_counter(), json.loads(raw)))

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def stream(self, pcm: np.ndarray) -> float:
        """Send at real time on an absolute schedule; returns the wall time the stream started."""
        start = time.perf_counter()
        for n, offset in enumerate(range(0, pcm.size, FRAME)):
            chunk = pcm[offset:offset + FRAME].astype("<i2").tobytes()
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
            delay = start + (n + 1) * 0.02 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        return start

    async def until(self, kind: str, wait_s: float = 30.0) -> list[tuple[float, dict[str, Any]]]:
        out = []
        while True:
            at, event = await asyncio.wait_for(self.events.get(), wait_s)
            out.append((at, event))
            if event["type"] == "error":
                raise RuntimeError(event)
            if event["type"] == kind:
                return out

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def connect(url: str) -> Client:
    ws = await websockets.connect(f"{url}/v1/realtime?model=bench", max_size=None,
                                  additional_headers={"Authorization": f"Bearer {KEY}"})
    client = Client(ws)
    await client.until("session.created")
    await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": RATE}, "transcription": {"model": "whisper-1"},
                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
        "output": {"format": {"type": "audio/pcm", "rate": RATE}}}}})
    await client.until("session.updated")
    return client


class StageLog:
    """The engine's stage timings split by what the bench was doing: a phase's, a turn's."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.marks: dict[str, int] = {}
        self.mark()

    def mark(self) -> None:
        self.marks = {k: len(v) for k, v in self.engine.timings.items()}

    def since_mark(self) -> dict[str, list[float]]:
        """Timings recorded since the last mark (deques hold 1,000 each: far more than a phase adds)."""
        new = {k: list(v)[self.marks.get(k, 0):] for k, v in self.engine.timings.items()}
        self.mark()
        return new


async def measure_turns(url: str, turns: int, stages: StageLog | None = None,
                        per_turn: list[dict[str, list[float]]] | None = None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("stopped", "transcribed", "first_audio", "wer")}
    client = await connect(url)
    for n in range(turns):
        if stages is not None:
            stages.mark()
        text = REQUESTS[n % len(REQUESTS)]
        speed = SPEEDS[n % len(SPEEDS)]
        lead = silence(300, RATE)
        speech = speak(text, rate=RATE, speed=speed)
        audio = np.concatenate([lead, speech, silence(1200, RATE)])
        sender = asyncio.create_task(client.stream(audio))
        got: dict[str, float] = {}
        transcript = ""
        while "first_audio" not in got or "transcribed" not in got or "done" not in got:
            at, event = await asyncio.wait_for(client.events.get(), 30.0)
            kind = event["type"]
            if kind == "input_audio_buffer.speech_stopped":
                got.setdefault("stopped", at)
            elif kind == "conversation.item.input_audio_transcription.completed":
                got.setdefault("transcribed", at)
                transcript = event["transcript"]
            elif kind == "response.output_audio.delta":
                got.setdefault("first_audio", at)
            elif kind == "response.done":
                got["done"] = at
            elif kind == "error":
                raise RuntimeError(event)
        start = await sender
        speech_end = start + (lead.size + speech.size) / RATE
        for key in ("stopped", "transcribed", "first_audio"):
            out[key].append((got[key] - speech_end) * 1000.0)
        if stages is not None and per_turn is not None:
            per_turn.append({**stages.since_mark(), "first_audio": [out["first_audio"][-1]]})
        out["wer"].append(wer(text, transcript) * len(normalise(text)))
        out.setdefault("words", []).append(len(normalise(text)))
    await client.close()
    return out


async def measure_barge_in(url: str, attempts: int) -> dict[str, list[float]]:
    """Talk over a reply as soon as it starts (response.created).

    Over a WebSocket the server generates faster than real time, so the interruption is sent in one
    burst: this measures the gateway's own decision and cancel path, not the 200 ms of speech the
    agent's barge-in threshold waits for (add that for the caller's experience).
    """
    out: dict[str, list[float]] = {"last_audio": [], "done": [], "missed": []}
    client = await connect(url)
    interruption = np.concatenate([speak(BARGE_IN, rate=RATE), silence(900, RATE)])
    for _ in range(attempts):
        request = np.concatenate([speak("what can you do", rate=RATE), silence(800, RATE)])
        sender = asyncio.create_task(client.stream(request))
        while True:
            _, event = await asyncio.wait_for(client.events.get(), 30.0)
            if event["type"] == "response.created":
                break
        speech_start = time.perf_counter()
        chunk = interruption.astype("<i2").tobytes()
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
        last_audio = speech_start
        status = ""
        while not status:
            at, event = await asyncio.wait_for(client.events.get(), 30.0)
            if event["type"] == "response.output_audio.delta":
                last_audio = at
            elif event["type"] == "response.done":
                status = event["response"]["status"]
                done_at = at
        await sender
        await client.until("response.done")  # the interruption's own reply
        if status != "cancelled":
            out["missed"].append(1.0)  # the reply had finished before the caller spoke
            continue
        out["last_audio"].append((last_audio - speech_start) * 1000.0)
        out["done"].append((done_at - speech_start) * 1000.0)
    await client.close()
    return out


async def concurrent_sessions(url: str, n: int) -> None:
    clients = await asyncio.gather(*(connect(url) for _ in range(n)))
    audio = np.concatenate([speak(REQUESTS[0], rate=RATE), silence(1000, RATE)])
    await asyncio.gather(*(c.stream(audio) for c in clients))
    await asyncio.gather(*(c.until("response.done", 60.0) for c in clients))
    await asyncio.gather(*(c.close() for c in clients))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ACME_DB"] = str(Path(tmp) / "acme.db")
        # max_calls: on a smaller host the derived limit could refuse the concurrent sessions measured here.
        with EmbeddedGateway(Path(tmp), api_keys=KEY, engine="local", max_calls=100) as gw:
            url = gw.ws_url
            engine = await_engine(gw)
            for text in [*REQUESTS, BARGE_IN, "what can you do"]:  # render test audio before timing anything
                for speed in SPEEDS:
                    speak(text, rate=RATE, speed=speed)
            rss_idle = peak_rss_mb()
            load_before = os.getloadavg()[0]
            stages = StageLog(engine)
            per_turn: list[dict[str, list[float]]] = []
            turns = await measure_turns(url, args.turns, stages, per_turn)
            timings = {k: [x for t in per_turn for x in t.get(k, [])] for k in engine.timings}
            load_after = os.getloadavg()[0]
            rss_one = peak_rss_mb()
            stages.mark()
            barge = await measure_barge_in(url, args.barge_ins)
            barge_timings = stages.since_mark()
            await concurrent_sessions(url, args.concurrent)
            concurrent_timings = stages.since_mark()
            rss_many = peak_rss_mb()
            cascade_turns: dict[str, list[float]] = {}
            cascade_timings: dict[str, list[float]] = {}
            if args.cascade_turns:
                # The same turns through the cascade engine, its STT, LLM and TTS over HTTP: this gateway's
                # own speech routes and flow brain as a chat model, or the LLM given by --cascade-llm-url.
                services = f"{gw.base_url}/v1"
                llm = args.cascade_llm_url or services
                with EmbeddedGateway(Path(tmp) / "cascade", api_keys=KEY, engine="cascade", max_calls=100,
                                     cascade_llm_base_url=llm, cascade_llm_model=args.cascade_llm_model,
                                     cascade_llm_api_key=KEY, cascade_stt_base_url=services, cascade_stt_api_key=KEY,
                                     cascade_tts_base_url=services, cascade_tts_api_key=KEY) as cascade_gw:
                    cascade_turns = await measure_turns(cascade_gw.ws_url, args.cascade_turns)
                    cascade = cascade_gw.gateway._engines["cascade"]
                    cascade_timings = {k: list(v) for k, v in cascade.timings.items()}

    words = sum(turns.pop("words"))
    errors = sum(turns.pop("wer"))
    print(f"voxgate turn latency — local engine, {args.turns} spoken turns, server VAD silence 300 ms, "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before the turns, {load_after:.1f} after")
    print("From the end of the caller's speech:")
    print(row("-> input_audio_buffer.speech_stopped", turns["stopped"]))
    print(row("-> input transcription completed", turns["transcribed"]))
    print(row("-> first response.output_audio.delta", turns["first_audio"]))
    print("Engine stages of these turns (a turn may decode more than once: speculative decodes):")
    print_stages(timings)
    print(f"  word error rate of the transcripts        {errors / max(words, 1) * 100:.1f} %"
          f" ({errors:.0f}/{words} words)")
    print(f"Barge-in ({args.barge_ins} attempts, {len(barge['missed'])} finished before the caller spoke):")
    print(row("caller speech start -> last audio delta", barge["last_audio"]))
    print(row("caller speech start -> response.done", barge["done"]))
    print(f"Peak RSS (gateway and client in one process): idle {rss_idle:.0f} MB, after 1 session "
          f"{rss_one:.0f} MB, after {args.concurrent} concurrent sessions {rss_many:.0f} MB")
    if turns["first_audio"]:
        print(f"mean first audio {statistics.mean(turns['first_audio']):.0f} ms")
    print("Engine stages during the barge-ins (the interrupted reply's pieces may still be rendering):")
    print_stages(barge_timings)
    print(f"Engine stages of {args.concurrent} concurrent sessions (one turn each, all at once):")
    print_stages(concurrent_timings)
    if args.per_turn:
        print("Per turn (ms): first audio | STT decodes: wait+decode ... | TTS first piece: wait+render (CPU)")
        for n, t in enumerate(per_turn):
            decodes = " ".join(f"{w:.0f}+{d:.0f}" for w, d in zip(t.get("stt_wait", []), t.get("stt", []),
                                                                  strict=False))
            tts = " ".join(f"{w:.0f}+{r:.0f} ({c:.0f})" for w, r, c in zip(
                t.get("tts_first_wait", []), t.get("tts_first_render", []), t.get("tts_first_cpu", []), strict=False))
            print(f"  {n:>2} {t['first_audio'][0]:7.0f} | {decodes:<24} | {tts}")
    if cascade_turns:
        cascade_words = sum(cascade_turns.pop("words"))
        cascade_errors = sum(cascade_turns.pop("wer"))
        llm = args.cascade_llm_url or "this gateway's flow brain at /v1/chat/completions"
        print(f"\nThe same turns through the cascade engine ({args.cascade_turns}): STT, LLM and TTS over HTTP "
              f"(speech: this gateway's /v1/audio routes; LLM: {llm})")
        print(row("-> input transcription completed", cascade_turns["transcribed"]))
        print(row("-> first response.output_audio.delta", cascade_turns["first_audio"]))
        print("Cascade stages (each an HTTP request):")
        print(row("STT: /v1/audio/transcriptions", cascade_timings["stt"]))
        print(row("LLM: request -> first streamed token", cascade_timings["llm_first_token"]))
        print(row("TTS: first sentence -> first pcm bytes", cascade_timings["tts_first"]))
        print(f"  word error rate of the transcripts        {cascade_errors / max(cascade_words, 1) * 100:.1f} %"
              f" ({cascade_errors:.0f}/{cascade_words} words)")


def print_stages(timings: dict[str, list[float]]) -> None:
    print(row("STT (Whisper tiny.en int8, per decode)", timings.get("stt", [])))
    if "stt_wait" in timings:  # older engines did not split their stages
        print(row("  STT: queued for the Whisper pool", timings["stt_wait"]))
    print(row("brain (flow)", timings.get("brain", [])))
    print(row("TTS first chunk (Piper joe)", timings.get("tts_first", [])))
    if "tts_first_wait" in timings:
        print(row("  TTS first piece: queued for the Piper pool", timings["tts_first_wait"]))
        print(row("  TTS first piece: rendering (wall)", timings["tts_first_render"]))
        print(row("  TTS first piece: rendering (thread CPU)", timings["tts_first_cpu"]))


def await_engine(gw: EmbeddedGateway) -> Any:
    engine = gw.gateway._engines.get("local")
    if engine is None:
        raise RuntimeError("local engine not started")
    return engine


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--barge-ins", type=int, default=6)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--per-turn", action="store_true", help="print each turn's stage timings")
    parser.add_argument("--cascade-turns", type=int, default=12, help="the same turns on the cascade engine (0: none)")
    parser.add_argument("--cascade-llm-url", default="", help="an OpenAI-compatible /v1 URL for the cascade's LLM "
                        "(default: this gateway's flow brain as a chat model)")
    parser.add_argument("--cascade-llm-model", default="acme")
    asyncio.run(main(parser.parse_args()))

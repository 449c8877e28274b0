"""CPU cost per concurrent WebRTC call, and how many calls one core holds before audio falls behind.

The gateway runs in a child process pinned to one core, with the echo engine (so the figures are the
transport's and the session's own: Opus decode and encode, SRTP, resampling, server VAD, pacing, data
channel), ICE on 127.0.0.1. This process runs N callers on the other cores; each speaks a sentence every
few seconds, the echo engine says it back, and Opus flows both ways all the time (silence is encoded and
sent too, as a browser does). The callers are full WebRTC clients (ICE, DTLS-SRTP, the `oai-events`
channel): by default `tests/webrtc_wire_caller.py` (voxgate's own stack in the browser's seat, the
sentence's Opus coded once, the agent's packets counted, not decoded), so that the callers' core is
not what runs out first; `--callers aiortc` uses aiortc's peer connection instead.

At each step it reports, over a steady window: the gateway's CPU use (% of its one core) and per call,
the event loop's lateness (p99 of a 20 ms timer), pacing re-anchors (the track missed its 20 ms grid by
more than 100 ms), and the share of the expected 50 frames/s per call that reached the callers. One
core "holds" N calls while loop p99 < 20 ms, no re-anchors happen and callers get >= 98 % of frames.
`--against PATH` runs the same steps, interleaved step by step, against the gateway of another checkout
(its `src/`, e.g. a `git worktree` of an older commit) in the same run, and prints both and the ratios.
`--realtime` runs the gateway and the callers under SCHED_FIFO (root), so that on a busy shared machine the
neighbours do not decide the result; the CPU per call at a fixed N is the figure to compare across runs.

    .venv/bin/python -m bench.webrtc_capacity --steps 1,2,4,8,12,16 --window 8 [--realtime]
    git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.webrtc_capacity --steps 8,16,24,32,48,64 --window 10 --against /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the test callers live in tests/

if TYPE_CHECKING:  # the callers' modules import voxgate: the gateway child (maybe another checkout's) must not
    from tests.webrtc_client import WebRtcCaller
    from tests.webrtc_wire_caller import WireCaller

TICKS = os.sysconf("SC_CLK_TCK")
RT_PRIORITY = 10  # --realtime: SCHED_FIFO, as bench/sip_capacity.py

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def vad_frames() -> int | None:
    """Frames Silero has scored in this process so far (0 where the model was never loaded; None where
    this checkout's model does not count them)."""
    from voxgate.engines.local.vad import SileroModel
    model = SileroModel._shared
    return 0 if model is None else getattr(model, "frames_scored", None)


async def serve(data_dir: Path) -> None:
    """The child: a gateway on this process's loop, answering `report` on stdin with its own figures."""
    from pydantic import SecretStr

    from voxgate.app import create_app
    from voxgate.config import Settings
    from voxgate.embedded import free_port
    from voxgate.server.listener import Listener
    from voxgate.transports.webrtc import calls_of

    port = free_port()
    # max_calls: the benchmark looks for the limit itself; admission control must not stop it first.
    settings = Settings(host="127.0.0.1", port=port, sip_port=0, engine="echo", api_keys=SecretStr("bench"),
                        max_calls=100_000,
                        webrtc_host_addresses=["127.0.0.1"], database_url=f"sqlite+aiosqlite:///{data_dir}/vg.db")
    app = create_app(settings)
    listener = Listener(app, settings)
    serving = asyncio.ensure_future(listener.serve())
    await asyncio.to_thread(listener.started.wait)
    lags: list[float] = []

    async def probe() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            lags.append(time.perf_counter() - t - 0.02)

    probing = asyncio.ensure_future(probe())
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "loop": type(asyncio.get_running_loop()).__module__}),
          flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "report":
        calls = list(calls_of(app.state))
        ordered = sorted(lags) or [0.0]
        print(json.dumps({"live": len(calls), "lag_p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
                          "reanchors": sum(c.playout.clock.reanchors for c in calls),
                          "dropped_ms": sum(c.playout.dropped_ms for c in calls),
                          "vad_frames": vad_frames()}), flush=True)
        lags.clear()
    probing.cancel()
    listener.stop_soon()
    await serving


class Child:
    """A gateway process: this checkout's, or with `source` (another checkout's `src/`) first on its path."""

    def __init__(self, data_dir: Path, core: int, source: Path | None = None) -> None:
        command = [sys.executable, "-m", "bench.webrtc_capacity", "--serve", str(data_dir)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=env)
        os.sched_setaffinity(self.process.pid, {core})
        assert self.process.stdout is not None
        hello = json.loads(self.process.stdout.readline())
        self.url, self.loop = hello["url"], hello["loop"].split(".")[0]  # "uvloop" or "asyncio"

    def report(self) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("report\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        self.process.wait(30)


def heard(caller: WebRtcCaller | WireCaller) -> int:
    """The agent's 20 ms frames (or packets) this caller has received so far."""
    from tests.webrtc_wire_caller import WireCaller
    return caller.received if isinstance(caller, WireCaller) else caller.audio_frames


def say(caller: WebRtcCaller | WireCaller, speech: np.ndarray) -> None:
    from tests.webrtc_client import coded
    from tests.webrtc_wire_caller import WireCaller
    if isinstance(caller, WireCaller):
        caller.mic.extend(coded(speech))
    else:
        caller.mic.say(speech)


async def run_step(child: Child, n: int, window: float, speech: np.ndarray, kind: str) -> dict:
    from tests.webrtc_client import SILENCE, WebRtcCaller
    from tests.webrtc_wire_caller import WireCaller
    async with httpx.AsyncClient(base_url=child.url, timeout=30) as http:
        callers = [WireCaller(on_audio=None, silence=SILENCE) if kind == "wire" else WebRtcCaller() for _ in range(n)]
        for c in callers:
            reply = await c.connect(http, "/v1/realtime/calls", "bench")
            assert reply.status_code == 201, reply.text
        await asyncio.gather(*(c.wait_for("session.created", 20) for c in callers))

        async def talk(c: WebRtcCaller | WireCaller, offset: float) -> None:
            await asyncio.sleep(offset)
            while True:
                say(c, speech)
                await asyncio.sleep(speech.size / 48000 + 3.0)

        talkers = [asyncio.ensure_future(talk(c, i * 0.37 % 3)) for i, c in enumerate(callers)]
        await asyncio.sleep(3.0)  # settle: ICE, DTLS, first turns
        before = child.report()
        frames0 = [heard(c) for c in callers]
        cpu0, own0, t0 = cpu_seconds(child.process.pid), time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        cpu1, own1, t1 = cpu_seconds(child.process.pid), time.process_time(), time.monotonic()
        stats = child.report()
        stats["reanchors"] -= before["reanchors"]  # only those inside the window, not the call set-up
        if stats["vad_frames"] is not None:
            stats["vad_frames"] -= before["vad_frames"]
        got = sum(heard(c) - f for c, f in zip(callers, frames0, strict=True))
        for task in talkers:
            task.cancel()
        await asyncio.gather(*(c.close() for c in callers))
        await asyncio.sleep(1.0)
    cpu = (cpu1 - cpu0) / (t1 - t0)
    return {"calls": n, "cpu_pct": 100 * cpu, "cpu_pct_per_call": 100 * cpu / n,
            "callers_cpu_pct": 100 * (own1 - own0) / (t1 - t0) / len(os.sched_getaffinity(0)),
            "frames_pct": 100 * got / (n * 50 * (t1 - t0)),
            "vad_frames_per_call_s": None if stats["vad_frames"] is None else stats["vad_frames"] / (n * (t1 - t0)),
            **stats}


def holds(r: dict) -> bool:
    return bool(r["lag_p99_ms"] < 20 and r["reanchors"] == 0 and r["frames_pct"] >= 98)


def vad_rate(r: dict) -> str:
    rate = r["vad_frames_per_call_s"]
    return "n/a" if rate is None else f"{rate:.1f}"


def row(label: str, r: dict) -> str:
    return (f"{label:<8} {r['calls']:>5} {r['cpu_pct']:>9.1f} {r['cpu_pct_per_call']:>9.2f} {r['lag_p99_ms']:>12.1f} "
            f"{r['reanchors']:>10} {r['frames_pct']:>9.1f} {vad_rate(r):>9} "
            f"{r['callers_cpu_pct']:>14.1f}  "
            f"{'yes' if holds(r) else 'NO'}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="1,2,4,8,12,16")
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--core", type=int, default=0, help="the core the gateway is pinned to")
    parser.add_argument("--callers", choices=("wire", "aiortc"), default="wire",
                        help="the WebRTC client the callers run (default: voxgate's own stack, the lighter)")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="also run another checkout's gateway (CHECKOUT/src), step by step beside this one")
    parser.add_argument("--realtime", action="store_true",
                        help="run gateway and callers under SCHED_FIFO (root; a busy shared machine)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # internal: run as the gateway child
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    from tests.speech import silence, speak
    others = sorted(os.sched_getaffinity(0) - {args.core}) or [args.core]
    os.sched_setaffinity(0, set(others))
    if args.realtime:  # the gateway child inherits it
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    speech = np.concatenate([speak("what is the status of order four five six seven", rate=48000),
                             silence(200, 48000)])
    gateways: dict[str, Path | None] = {"this": None}
    if args.against is not None:
        gateways["against"] = (args.against / "src").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        children = {label: Child(Path(tmp) / label, args.core, source) for label, source in gateways.items()}
        try:
            loops = ", ".join(f"{label} on {child.loop}" for label, child in children.items())
            print(f"gateway pinned to core {args.core} ({loops}); {args.callers} callers on cores {others}; window "
                  f"{args.window:.0f} s{'; both SCHED_FIFO' if args.realtime else ''}"
                  + (f"; against {args.against}" if args.against else ""))
            print(f"{'gateway':<8} {'calls':>5} {'gw cpu %':>9} {'% / call':>9} {'loop p99 ms':>12} {'reanchors':>10} "
                  f"{'frames %':>9} {'VAD fr/s':>9} {'callers cpu %':>14}  holds")
            results: dict[str, dict[int, dict]] = {label: {} for label in children}
            going = set(children)
            for n in (int(s) for s in args.steps.split(",")):
                for label in [label for label in children if label in going]:
                    r = await run_step(children[label], n, args.window, speech, args.callers)
                    results[label][n] = r
                    print(row(label, r), flush=True)
                    if r["callers_cpu_pct"] > 90:
                        print("  (the callers' cores are saturated: this step measures them, not the gateway)")
                    if not holds(r) or r["cpu_pct"] > 95:
                        going.discard(label)
                if not going:
                    break
            held = dict.fromkeys(children, 0)
            for label in children:
                steady = [(n, r["cpu_pct"]) for n, r in results[label].items() if holds(r)]
                held[label] = steady[-1][0] if steady else 0  # a step that fails ends the ladder: the last held
                slope = ""
                if len(steady) >= 2:  # what one more call adds, the process's fixed cost left out
                    ns, cpus = np.array(steady, dtype=float).T
                    slope = f"; {np.polyfit(ns, cpus, 1)[0]:.2f} % of the core per added call"
                print(f"{label}: one core held {held[label]} concurrent calls in real time "
                      f"(Opus both ways, echo engine){slope}")
            if "against" in children:
                both = sorted(set(results["this"]) & set(results["against"]))
                per_call = {label: {n: r["cpu_pct_per_call"] for n, r in rs.items()} for label, rs in results.items()}
                ratios = "  ".join(f"{n}: {per_call['against'][n] / per_call['this'][n]:.2f}x" for n in both)
                print(f"CPU per call, against / this, at the same count: {ratios}")
                if held["against"]:
                    print(f"calls held, this / against: {held['this']} / {held['against']} = "
                          f"{held['this'] / held['against']:.1f}x")
        finally:
            for child in children.values():
                child.stop()


if __name__ == "__main__":
    parsed = arguments()
    if parsed.serve is not None:  # the gateway child: on the event loop `voxgate serve` runs (uvloop where installed)
        from voxgate.server.listener import new_event_loop
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(parsed.serve))
    else:
        asyncio.run(main(parsed))

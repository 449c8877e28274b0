"""How many phone calls one core bridges: N concurrent Twilio Media Streams calls to the echo agent.

The gateway runs in its own process pinned to CPU 0 (the `echo` agent: each turn played back when the
caller stops), this load generator on CPU 1. It runs twice: first the echo agent as shipped, whose
turns webrtcvad detects (no model: the bridge alone, the issue's target of 300 calls per core), then
with Silero VAD on every call, the same work as the Pipecat pipeline it is compared with.
Every call is placed as Twilio places it (the voice webhook first, whose TwiML carries the call's media
token; Pipecat takes any stream) and streams a spoken sentence (2 s) then 4 s of line silence, over and
over, at 20 ms real time, with each call's turns at a random phase; it plays the returned audio on a Twilio-like
real-time clock and echoes marks when their audio has played. Over a steady window it measures:

    CPU per call     the server process's CPU time / wall time / N
    jitter p50/p99   |inter-arrival - previous frame's duration| of returned media, within a reply
                     (a reply's first 4 messages, which carry the deliberate lead, excluded)
    late frames      frames that reached the caller's line after its buffer had run dry (an audible gap)
    returned         agent audio received / caller speech sent in the window

N passes when p99 jitter <= 20 ms, no frame is late, >= 99 % of the speech came back, the server's
CPU stayed under 95 % and no call failed; the largest passing N is "what one core holds". Each row climbs
its ladder until two steps fail; when its first step already fails it steps down, halving N, until one
holds; then it narrows the gap to the first N that failed to `--resolution` (10 %). So every row reports
the largest N that held, never 0 for a ladder that started too high. The same
workload then runs against Pipecat (`pipecat-ai`: FastAPIWebsocketTransport + TwilioFrameSerializer +
Silero VADProcessor + an echo-the-turn processor, 8 kHz) and the ratio to voxgate with Silero is printed.

    .venv/bin/python bench/bridge_capacity.py [--calls 50,100,...] [--silero-calls 100,...] [--window 12]
        [--resolution 0.1] [--pipecat-python /path/to/venv/bin/python | --no-pipecat] [--baseline DIR]

--baseline DIR measures an earlier voxgate in the same run, right after this one's echo row, with this
generator and these criteria (a checkout with its own venv: `git worktree add DIR REV && make -C DIR
install`), and prints the ratio: figures from different runs on a shared VM differ by more than the
change being measured.

Pipecat is not a project dependency: it gets a virtualenv of its own (it pins its own numpy, websockets...),
installed exactly from bench/pipecat/uv.lock by `make bench-pipecat`, which passes its python with
--pipecat-python.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from voxgate.loadtest.capacity_search import CapacitySearch  # noqa: E402
from voxgate.loadtest.carrier_line import (  # noqa: E402
    FRAME_S,
    LineCodec,
    LinePlayback,
    TwilioMessages,
    media_payload_bytes,
)
from voxgate.loadtest.carrier_webhook import StreamAnswer, parse_twiml, twilio_voice_form  # noqa: E402
from voxgate.loadtest.gateway_process import GatewayProcess  # noqa: E402
from voxgate.loadtest.statistics import percentile  # noqa: E402

TALK_S = 2.0
QUIET_S = 4.0  # room for the echo (speech + padding + end-of-turn wait) before the next turn
# A reply's first messages are left out of the jitter figure: the lead sent at once (voxgate: the frame
# due and 2 ahead) and the first frame on the shared 20 ms tick, whose gap from them depends only on
# where between two ticks the reply began. Late frames count every message.
LEAD_MESSAGES = 4
REPLY_GAP_S = 0.15  # a longer pause in returned audio starts a new reply
SLOTS = 4  # the load generator sends each call's frame in one of 4 sub-ticks of 5 ms
ACCOUNT_SID = "AC" + "0" * 32
RT_PRIORITY = 10  # --realtime: SCHED_FIFO, so neighbours on a shared machine do not decide the result


# -- the servers (child processes) ------------------------------------------------------------------


def serve_voxgate(port: int, data_dir: str, vad: str) -> None:
    """voxgate as `voxgate serve` runs it: its own listener, on uvloop (SIGTERM stops it, no drain)."""
    from voxgate.agents import load_agents
    from voxgate.app import create_app
    from voxgate.config import Settings
    from voxgate.gateway import Gateway
    from voxgate.server.listener import Listener, run

    # max_calls: the benchmark looks for the limit itself; admission control must not stop it first.
    settings = Settings(host="127.0.0.1", port=port, engine="echo", default_agent="echo", dev_mode=True,
                        verify_carrier_signatures=False, api_keys="bench", metrics_public=True, max_calls=100_000,
                        database_url=f"sqlite+aiosqlite:///{data_dir}/voxgate.db")
    agents = load_agents(settings.agents_dir)
    echo = agents["echo"]
    agents["echo"] = echo.model_copy(update={"turn_taking": echo.turn_taking.model_copy(update={"vad": vad})})
    raise SystemExit(run(Listener(create_app(settings, Gateway(settings, agents)), settings)))


def serve_pipecat(port: int) -> None:
    """Pipecat as its Twilio examples set it up, with VAD and an echo of each turn (same workload)."""
    import uvicorn
    from fastapi import FastAPI, WebSocket
    from loguru import logger
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.frames.frames import (
        Frame,
        InputAudioRawFrame,
        OutputAudioRawFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineParams, PipelineTask
    from pipecat.processors.audio.vad_processor import VADProcessor
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    class EchoTurn(FrameProcessor):
        """Buffers the caller's speech and plays it back when they stop (voxgate's echo engine)."""

        def __init__(self) -> None:
            super().__init__()
            self._speaking = False
            self._audio = bytearray()
            self._preroll: deque[bytes] = deque(maxlen=25)  # 0.5 s: VAD start delay + voxgate's 300 ms padding

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, VADUserStartedSpeakingFrame):
                self._speaking, self._audio = True, bytearray(b"".join(self._preroll))
            elif isinstance(frame, InputAudioRawFrame):
                if self._speaking:
                    self._audio.extend(frame.audio)
                else:
                    self._preroll.append(frame.audio)
                return  # the caller's audio is not played back as it comes
            elif isinstance(frame, VADUserStoppedSpeakingFrame):
                self._speaking = False
                if self._audio:
                    await self.push_frame(OutputAudioRawFrame(bytes(self._audio), 8000, 1))
            await self.push_frame(frame, direction)

    app = FastAPI()

    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        messages = websocket.iter_text()
        await messages.__anext__()  # connected
        start = json.loads(await messages.__anext__())["start"]
        serializer = TwilioFrameSerializer(stream_sid=start["streamSid"], call_sid=start["callSid"],
                                           params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer))
        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(start_secs=0.2, stop_secs=0.3)))
        pipeline = Pipeline([transport.input(), vad, EchoTurn(), transport.output()])
        task = PipelineTask(pipeline, params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000))
        await PipelineRunner(handle_sigint=False).run(task)

    # This module's annotations are strings (PEP 563) naming a class imported in this function, which
    # FastAPI cannot resolve: give it the class itself.
    media.__annotations__ = {"websocket": WebSocket, "return": None}
    app.add_api_websocket_route("/twilio/media", media)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


# -- the load generator -----------------------------------------------------------------------------


@dataclass
class Call:
    index: int
    ws: Any
    messages: TwilioMessages
    phase: int  # frames into the talk/quiet cycle at the start
    arrivals: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    playback: LinePlayback = field(default_factory=LinePlayback)  # the caller's phone: plays, echoes marks
    clears: int = 0
    failed: str = ""
    spoken_frames: int = 0  # speech frames sent inside the window


def pct(values: list[float], q: float) -> float:
    value = percentile(values, q)
    return float("nan") if value is None else value


def speech_frames() -> list[bytes]:
    """TALK_S of the project's voice as μ-law frames (the load generator's voice and line codec)."""
    import numpy as np

    from voxgate.loadtest.speech import speak

    pcm = speak("please check the status of my order, thank you very much", rate=8000)
    need = int(TALK_S * 8000)
    return LineCodec("pcmu").frames(np.concatenate([pcm, np.zeros(max(0, need - pcm.size), np.int16)])[:need])


class LoadGenerator:
    def __init__(self, url: str, speech: list[bytes], voice_webhook: str | None = None) -> None:
        """`voice_webhook`: the URL Twilio would post first (voxgate's /twilio/voice), whose TwiML gives the
        call's media token; None for a server that takes any stream (the Pipecat comparison)."""
        self.url = url
        self.voice_webhook = voice_webhook
        self.speech = speech
        self.silence = LineCodec("pcmu").silence()
        self.cycle = len(speech) + int(QUIET_S / FRAME_S)
        self.calls: list[Call] = []
        self.tick_lateness: list[float] = []
        self.window: tuple[float, float] = (0.0, 0.0)
        self.frame_no = 0

    async def answer(self, call_sid: str) -> dict[str, str]:
        """The `<Parameter>`s of the voice webhook's `<Connect><Stream>`, as Twilio gets them before it streams."""
        if self.voice_webhook is None:
            return {"agent": "echo"}
        import httpx

        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            response = await http.post(self.voice_webhook, data=twilio_voice_form(call_sid, ACCOUNT_SID))
        response.raise_for_status()
        answer = parse_twiml(response.text)
        if not isinstance(answer, StreamAnswer):
            raise RuntimeError(f"the voice webhook did not answer with a stream: {response.text[:200]}")
        return answer.parameters

    async def dial(self, index: int) -> Call:
        from websockets.asyncio.client import connect

        call_sid = f"CA{os.getpid():08x}{index:024x}"  # unique per run: the gateway answers a CallSid once
        parameters = await self.answer(call_sid)
        ws = await connect(self.url, compression=None, max_size=None, ping_interval=None, open_timeout=30, proxy=None)
        messages = TwilioMessages(call_sid=call_sid, account_sid=ACCOUNT_SID, stream_sid=f"MZ{index:032x}",
                                  parameters=parameters)
        call = Call(index, ws, messages, phase=random.randrange(self.cycle))
        await ws.send(messages.connected())
        await ws.send(messages.start())
        return call

    async def listen(self, call: Call) -> None:
        try:
            async for raw in call.ws:
                now = time.monotonic()
                payload_len = media_payload_bytes(raw)  # the hot path: no JSON parsing
                if payload_len is not None:
                    call.arrivals.append(now)
                    call.sizes.append(payload_len)
                    call.playback.audio(now, payload_len / 8000)
                    continue
                message = json.loads(raw)
                if message.get("event") == "mark":
                    call.playback.mark(now, message["mark"]["name"])
                elif message.get("event") == "clear":
                    call.clears += 1
                    for name in call.playback.clear(now):
                        await call.ws.send(call.messages.mark(name))
        except Exception as exc:  # a dropped connection fails the run
            call.failed = f"{type(exc).__name__}: {exc}"

    async def line(self, stop_at: float) -> None:
        """One clock for every call's microphone: a frame per call every 20 ms, marks echoed when played.

        Calls are spread over SLOTS sub-ticks: independent phone calls do not all send at the same instant.
        """
        start = time.monotonic()
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            target = start + n * FRAME_S / SLOTS
            await asyncio.sleep(max(0.0, target - time.monotonic()))
            now = time.monotonic()
            self.tick_lateness.append(now - target)
            in_window = self.window[0] <= now <= self.window[1]
            slot = n % SLOTS
            if slot == 0:
                self.frame_no += 1
            for call in self.calls:
                if call.failed or call.index % SLOTS != slot:
                    continue
                position = (self.frame_no + call.phase) % self.cycle
                speaking = position < len(self.speech)
                payload = self.speech[position] if speaking else self.silence
                if speaking and in_window:
                    call.spoken_frames += 1
                try:
                    await call.ws.send(call.messages.media(payload))
                    for name in call.playback.due_marks(now):
                        await call.ws.send(call.messages.mark(name))
                except Exception as exc:
                    call.failed = f"{type(exc).__name__}: {exc}"

    async def run(self, n: int, ramp_s: float, warmup_s: float, window_s: float, server_pid: int) -> dict[str, Any]:
        self.calls = []
        for batch in range(0, n, 25):
            self.calls += await asyncio.gather(*(self.dial(i) for i in range(batch, min(n, batch + 25))))
            await asyncio.sleep(ramp_s * 25 / max(n, 1))
        listeners = [asyncio.create_task(self.listen(call)) for call in self.calls]
        begin = time.monotonic()
        self.window = (begin + warmup_s, begin + warmup_s + window_s)
        self.tick_lateness = []
        line = asyncio.create_task(self.line(self.window[1] + 0.5))
        await asyncio.sleep(warmup_s)
        server = GatewayProcess(server_pid)
        cpu0, wall0 = server.read().cpu_s, time.monotonic()
        await asyncio.sleep(window_s)
        cpu1, wall1 = server.read().cpu_s, time.monotonic()
        await line
        for call in self.calls:
            try:
                await call.ws.send(call.messages.stop())
                await call.ws.close()
            except Exception:
                pass
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        return self.measure(n, (cpu1 - cpu0) / (wall1 - wall0))

    def measure(self, n: int, cpu: float) -> dict[str, Any]:
        start, end = self.window
        jitter: list[float] = []
        late = frames = 0
        returned_s = 0.0
        for call in self.calls:
            play_until = 0.0
            in_reply = 0
            previous_at = previous_dur = 0.0
            for at, size in zip(call.arrivals, call.sizes, strict=True):
                duration = size / 8000
                new_reply = at - max(play_until, previous_at) > REPLY_GAP_S
                in_reply = 0 if new_reply else in_reply + 1
                if start <= at <= end:
                    frames += 1
                    returned_s += duration
                    if not new_reply:
                        if at > play_until + 0.001:
                            late += 1  # the line had nothing left to play: a gap the caller hears
                        if in_reply >= LEAD_MESSAGES:
                            jitter.append(abs(at - previous_at - previous_dur))
                play_until = max(play_until, at) + duration
                previous_at, previous_dur = at, duration
        spoken_s = sum(c.spoken_frames for c in self.calls) * FRAME_S
        failed = [c.failed for c in self.calls if c.failed]
        return {"n": n, "cpu": cpu, "cpu_per_call": cpu / n, "p50": pct(jitter, 50) * 1000,
                "p99": pct(jitter, 99) * 1000, "late": late, "frames": frames,
                "returned": returned_s / spoken_s if spoken_s else 0.0, "failed": len(failed),
                "failure": failed[0] if failed else "", "clears": sum(c.clears for c in self.calls),
                "gen_lag_p99": pct(self.tick_lateness, 99) * 1000}


def server_late_ticks(port: int) -> str:
    """Share of the gateway's 20 ms playout ticks that woke over 10 ms late (its event loop was busy)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return "-"
    buckets = {}
    for line in text.splitlines():
        if line.startswith("voxgate_carrier_tick_lateness_seconds_bucket"):
            buckets[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0)
    return f"{(total - buckets.get('0.01', 0.0)) / total:.1%}" if total else "-"


def passed(result: dict[str, Any]) -> bool:
    return (result["p99"] <= 20.0 and result["late"] == 0 and result["returned"] >= 0.99 and result["cpu"] < 0.95
            and result["failed"] == 0)


def start_server(argv: list[str], port: int, log: Path, realtime: bool = False) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    if realtime and shutil.which("chrt"):
        pin += ["chrt", "-f", str(RT_PRIORITY)]
    process = subprocess.Popen([*pin, *argv], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def ramp(name: str, argv: list[str], port: int, steps: list[int], speech: list[bytes], args: argparse.Namespace,
         tmp: Path, voice_webhook: bool = True) -> int:
    """Climb the steps until two fail, stepping down (halving) when the first already fails, then narrow
    the gap to the first N that failed (loadtest/capacity_search.py); return the largest N that passed."""
    print(f"\n{name}")
    print(f"{'N':>5} {'CPU':>6} {'CPU/call':>9} {'jitter p50':>11} {'p99':>7} {'late':>6} {'returned':>9} "
          f"{'clears':>7} {'failed':>7} {'gen lag p99':>12} {'ticks >10ms late':>17}  verdict")
    search = CapacitySearch(steps, resolution=args.resolution)
    while (n := search.next_n()) is not None:
        server = start_server(argv, port, tmp / f"{name.split()[0]}-{n}.log", args.realtime)
        try:
            time.sleep(1.0)
            generator = LoadGenerator(f"ws://127.0.0.1:{port}/twilio/media", speech,
                                      f"http://127.0.0.1:{port}/twilio/voice?agent=echo" if voice_webhook else None)
            result = asyncio.run(generator.run(n, args.ramp, args.warmup, args.window, server.pid))
            result["server_late_ticks"] = server_late_ticks(port)
        finally:
            stop_server(server)
        ok = passed(result)
        search.record(n, ok)
        print(f"{n:>5} {result['cpu']:>6.0%} {result['cpu_per_call']:>9.2%} {result['p50']:>9.1f}ms "
              f"{result['p99']:>5.1f}ms {result['late']:>6} {result['returned']:>9.0%} {result['clears']:>7} "
              f"{result['failed']:>7} {result['gen_lag_p99']:>10.1f}ms {result['server_late_ticks']:>17}  "
              f"{'pass' if ok else 'FAIL'}"
              + (f" ({result['failure'][:60]})" if result["failure"] else ""), flush=True)
    return search.best


def ramp_baseline(checkout: Path, port: int, steps: list[int], speech: list[bytes], args: argparse.Namespace,
                  tmp: Path) -> int:
    """The same ladder against an earlier voxgate: a checkout with its own .venv (`make install` there), served
    by that checkout's own bench/bridge_capacity.py (its `serve-voxgate` role takes the same arguments), loaded
    and judged by this one's generator and criteria, so the two figures differ only in the gateway."""
    commit = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %cs"], capture_output=True,
                            text=True).stdout.strip() or "?"
    data = tmp / "baseline"  # its own database: this one's migrations are newer than it knows
    data.mkdir(exist_ok=True)
    serve = [str(checkout / ".venv" / "bin" / "python"), str(checkout / "bench" / "bridge_capacity.py"),
             "serve-voxgate", "--port", str(port), "--data", str(data), "--vad", "webrtc"]
    best = ramp(f"baseline (voxgate at {commit} from {checkout}, echo agent as it shipped)", serve, port, steps,
                speech, args, tmp)
    print(f"\nbaseline: largest N one core holds: {best}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "serve-voxgate", "serve-pipecat"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", default="")
    parser.add_argument("--calls", default="100,200,250,300,350,400,450,500")
    parser.add_argument("--silero-calls", default="100,150,200,250",
                        help='steps with Silero VAD on every call ("": no Silero row, and no Pipecat)')
    parser.add_argument("--vad", default="webrtc", choices=["webrtc", "silero"], help="serve-voxgate: the echo VAD")
    parser.add_argument("--pipecat-calls", default="25,50,75,100,125,150")
    parser.add_argument("--window", type=float, default=12.0, help="steady measuring window, seconds")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to dial all calls")
    parser.add_argument("--resolution", type=float, default=0.1,
                        help="narrow the gap between the largest N that held and the first that failed to this "
                             "fraction of N (0: the ladder's steps only, and halving below a first step that fails)")
    parser.add_argument("--pipecat-python", default="", help="a python with pipecat-ai installed")
    parser.add_argument("--no-pipecat", action="store_true")
    parser.add_argument("--baseline", default="",
                        help="an earlier voxgate checkout with its own .venv: its echo row runs right after this "
                             "one's, and the ratio is printed")
    parser.add_argument("--realtime", action="store_true",
                        help="run server and load generator under SCHED_FIFO (root; a busy shared machine)")
    args = parser.parse_args()
    if args.role == "serve-voxgate":
        serve_voxgate(args.port, args.data, args.vad)
        return
    if args.role == "serve-pipecat":
        serve_pipecat(args.port)
        return

    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from voxgate.embedded import free_port  # the gateway's modules: not importable in Pipecat's virtualenv

    speech = speech_frames()
    gc.freeze()  # what start-up imported lives to the end: keep the collector's full passes off the line clock
    tmp = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    port = free_port()
    print(f"bridge capacity: {os.cpu_count()} CPUs, server pinned to CPU 0, load generator on CPU 1"
          f"{' (both SCHED_FIFO)' if args.realtime else ''}; "
          f"each call: {TALK_S:.0f} s speech, {QUIET_S:.1f} s silence, echo agent; window {args.window:.0f} s; "
          f"logs in {tmp}")
    steps = [int(x) for x in args.calls.split(",")]
    serve = [sys.executable, __file__, "serve-voxgate", "--port", str(port), "--data", str(tmp)]
    voxgate_best = ramp("voxgate (echo agent as shipped: webrtcvad turns, no model; media sockets read by callback)",
                        [*serve, "--vad", "webrtc"], port, steps, speech, args, tmp)
    print(f"\nvoxgate: largest N one core holds: {voxgate_best}")
    if args.baseline:
        baseline_best = ramp_baseline(Path(args.baseline), port, steps, speech, args, tmp)
        if baseline_best:
            print(f"voxgate / baseline capacity ratio, same workload, same run: {voxgate_best / baseline_best:.2f}x")
    if not args.silero_calls:  # --silero-calls "": the bridge alone (bench/sip_capacity.py runs it so)
        return
    silero_best = ramp("voxgate-silero (echo agent with Silero VAD on every call, as the Pipecat pipeline)",
                       [*serve, "--vad", "silero"], port, [int(x) for x in args.silero_calls.split(",")], speech,
                       args, tmp)
    print(f"\nvoxgate with Silero VAD: largest N one core holds: {silero_best}")

    python = args.pipecat_python
    if args.no_pipecat:
        return
    if not python:
        probe = subprocess.run([sys.executable, "-c", "import pipecat"], capture_output=True)
        python = sys.executable if probe.returncode == 0 else ""
    if not python:
        print("\npipecat-ai not installed: pass --pipecat-python (see the module docstring); skipping the comparison")
        return
    pipecat_best = ramp("pipecat 1.x (FastAPIWebsocketTransport + TwilioFrameSerializer + Silero VADProcessor)",
                        [python, __file__, "serve-pipecat", "--port", str(port)], port,
                        [int(x) for x in args.pipecat_calls.split(",")], speech, args, tmp, voice_webhook=False)
    print(f"\npipecat: largest N one core holds: {pipecat_best}")
    if pipecat_best:
        print(f"voxgate / pipecat capacity ratio, both with Silero VAD: {silero_best / pipecat_best:.1f}x"
              f" (voxgate as shipped: {voxgate_best / pipecat_best:.1f}x)")


if __name__ == "__main__":
    main()

"""How many SIP calls one core holds: N concurrent calls to the echo agent over SIP/RTP on loopback.

The gateway runs in its own process pinned to CPU 0 (`voxgate serve`'s app, the echo engine, SIP on a
free port); this load generator, pinned to CPU 1, places N calls with voxgate's own SIP cores (INVITE with
a PCMU offer, ACK, BYE) and streams a spoken sentence then silence, over and over, as 20 ms RTP on one
shared real-time tick. Over a steady window it measures:

    CPU per call       the gateway process's CPU time / wall time / N
    send jitter p99    |inter-arrival - media time since the packet before| of the RTP the gateway sends
                       (20 ms on a continuous line, which sends silence between replies; the length of the
                       pause after a comfort noise packet), arrivals as the kernel timestamped them
                       (SO_TIMESTAMPNS): the callers read their sockets on their own tick, never waking per
                       packet (see RtpLeg)
    late packets       packets that came more than 40 ms after they were due (a gap a 40 ms jitter buffer
                       cannot hide)
    GC                 the cycle collector's pauses in the gateway (its voxgate_gc_pause_seconds), young /
                       middle / full, from the last call's set-up to the window's end: a failing step
                       says whether a collection or the CPU made its packets late
    INVITE -> RTP      from the INVITE to the first RTP packet back (p50, p99)

N passes when p99 jitter <= 20 ms, no packet is late, every call was answered and the gateway's CPU
stayed under 95 %; the largest passing N is "what one core holds". The ladder is searched as the bridge
bench's (loadtest/capacity_search.py: climb until two steps fail, halve below a first step that fails,
then narrow the gap to `--resolution`). Then, in the same run and on the same cores, bench/bridge_capacity.py
measures the carrier bridge (Twilio Media Streams, the same echo agent) and both figures are printed side
by side (`--no-bridge` skips it). `--realtime` runs the gateway and the callers under SCHED_FIFO, so
neighbours on a shared machine do not decide the result.

The ladder runs twice: callers that offer PCMU only, so the gateway sends a packet every 20 ms through the
agent's silence, and callers that also offer RFC 3389 comfort noise (CN), as many phones and PBXs do, so
the agent's silence goes as one CN packet where it starts and every 5 s after (`--comfort-noise on|off`
runs one of them).

    .venv/bin/python bench/sip_capacity.py [--calls 200,300,400,500] [--window 10] [--realtime]
        [--comfort-noise both|on|off] [--bridge-calls 200,250,300] [--no-bridge]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from voxgate.audio import g711
from voxgate.loadtest.capacity_search import CapacitySearch
from voxgate.loadtest.gateway_process import GatewayProcess
from voxgate.loadtest.speech import silence, speak
from voxgate.sip.headers import NameAddress, Via, new_branch, new_tag
from voxgate.sip.message import Request, Response, new_request, parse_message
from voxgate.sip.rtp import RtpSender, is_rtcp, parse_rtp
from voxgate.sip.uri import SipUri

FRAME_S = 0.02
LATE_GAP_S = 0.06  # a gap between packets that a 40 ms jitter buffer cannot hide
RT_PRIORITY = 10  # --realtime: SCHED_FIFO, as bench/bridge_capacity.py
MAX_CPU = 0.95


def serve(http_port: int, sip_port: int, data_dir: str) -> None:
    """voxgate as `voxgate serve` runs it: its own listener on uvloop, SIP on `sip_port`."""
    from voxgate.app import create_app
    from voxgate.config import Settings
    from voxgate.server.listener import Listener, run

    # max_calls: the benchmark looks for the limit itself; admission control must not stop it first.
    settings = Settings(host="127.0.0.1", port=http_port, engine="echo", default_agent="echo",
                        sip_port=sip_port, max_calls=100_000, api_keys="bench",
                        database_url=f"sqlite+aiosqlite:///{data_dir}/voxgate.db")
    raise SystemExit(run(Listener(create_app(settings), settings)))


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Call:
    """One caller: its SIP and RTP sockets' protocol, and what came back."""

    index: int
    invited_at: float = 0.0
    first_rtp: float | None = None
    remote_rtp: tuple[str, int] | None = None
    answer: asyncio.Future[Response] | None = None
    ok: Response | None = None
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (arrival, RTP timestamp)
    sender: RtpSender = field(default_factory=lambda: RtpSender(0))


class SipSide(asyncio.DatagramProtocol):
    def __init__(self, calls: dict[str, Call]) -> None:
        self.calls = calls

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        message = parse_message(data)
        if isinstance(message, Response):
            call = self.calls.get(message.call_id)
            if call and call.answer and message.status >= 200 and message.cseq.method == "INVITE" \
                    and not call.answer.done():
                call.answer.set_result(message)


# Linux's SO_TIMESTAMPNS (Python's socket module does not name it): each datagram carries the time the kernel
# queued it on our socket, which on loopback is the moment the gateway sent it.
SO_TIMESTAMPNS = 35


class RtpLeg:
    """One caller's RTP socket, read every 20 ms with kernel receive timestamps, never waited on.

    On loopback the sender pays for waking its receiver (a cross-CPU wake-up, in a VM an interrupt to another
    virtual CPU); a gateway sending to a network card pays nothing of the kind. Callers that poll their
    sockets on their own tick keep that cost, which no real deployment has, out of the gateway's CPU figure,
    and the kernel's timestamps say when each packet came, however late the callers read it."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def drain(self, window: list[float]) -> None:
        call = self.call
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(2048, 64)
            except BlockingIOError:
                return
            if is_rtcp(data):  # the gateway's reports go to RTP + 1, which may be another caller's RTP port
                continue
            arrived = next((seconds + nanos / 1e9 for level, kind, stamp in ancillary
                            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                            for seconds, nanos in [struct.unpack("qq", stamp[:16])]), time.time())
            if call.first_rtp is None:
                call.first_rtp = arrived
            if window[0] <= arrived <= window[1]:
                call.arrivals.append((arrived, parse_rtp(data).timestamp))


async def run(n: int, sip_port: int, window_s: float, audio: list[bytes],
              comfort_noise: bool = False) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    calls: dict[str, Call] = {}
    window = [float("inf"), float("inf")]
    sip, _ = await loop.create_datagram_endpoint(lambda: SipSide(calls), local_addr=("127.0.0.1", 0))
    sip_t = cast(asyncio.DatagramTransport, sip)
    local = sip_t.get_extra_info("sockname")[:2]
    gateway = ("127.0.0.1", sip_port)
    rtps: list[RtpLeg] = []
    for index in range(n):
        call = Call(index)
        leg = RtpLeg(call)
        port = leg.port
        sdp = (f"v=0\r\no=- {index} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {port} RTP/AVP 0{' 13' if comfort_noise else ''}\r\na=rtpmap:0 PCMU/8000\r\n"
               f"{'a=rtpmap:13 CN/8000' + chr(13) + chr(10) if comfort_noise else ''}a=ptime:20\r\n").encode()
        call_id = secrets.token_hex(8)
        me = SipUri("sip", local[0], "bench", port=local[1])
        invite = new_request("INVITE", SipUri("sip", "127.0.0.1", "echo", port=sip_port),
                             via=Via("UDP", local[0], local[1], (("branch", new_branch()), ("rport", None))),
                             from_=NameAddress(me).with_tag(new_tag()),
                             to=NameAddress(SipUri("sip", "127.0.0.1", "echo")),
                             call_id=call_id, cseq=1, contact=NameAddress(me), body=sdp, content_type="application/sdp")
        call.answer = loop.create_future()
        calls[call_id] = call
        call.invited_at = time.time()  # the wall clock, as the kernel's receive timestamps
        sip_t.sendto(invite.to_bytes(), gateway)
        ok = await asyncio.wait_for(call.answer, 30)
        if ok.status != 200:
            raise RuntimeError(f"call {index}: {ok.status} {ok.reason}")
        call.ok = ok
        answer = ok.body.decode()
        rport = int(next(line for line in answer.splitlines() if line.startswith("m=audio")).split()[1])
        call.remote_rtp = ("127.0.0.1", rport)
        sip_t.sendto(_in_dialog("ACK", ok, 1, local).to_bytes(), gateway)
        rtps.append(leg)
        await asyncio.sleep(0.01)  # ramp: 100 calls a second
        for earlier in rtps:
            earlier.drain(window)
    process = GatewayProcess(int(os.environ["SIP_BENCH_PID"]))
    http_port = int(os.environ["SIP_BENCH_HTTP"])
    gc_before = gc_pauses(http_port)  # read now, 2 s before the window: the scrape is work on the gateway's loop
    phase = [i * 7 % len(audio) for i in range(n)]
    start = time.time()
    window[:] = [start + 2.0, start + 2.0 + window_s]
    cpu_before: float | None = None
    cpu_at = window[0]
    tick = 0
    while time.time() < window[1] + 0.1:
        now = time.time()
        if cpu_before is None and now >= window[0]:
            cpu_before = process.read().cpu_s
            cpu_at = now
        for leg in rtps:
            call = leg.call
            leg.drain(window)
            frame = audio[(phase[call.index] + tick) % len(audio)]
            assert call.remote_rtp is not None
            leg.sock.sendto(call.sender.packet(frame, 160).to_bytes(), call.remote_rtp)
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * FRAME_S - time.time()))
    cpu = process.read().cpu_s - (cpu_before or 0.0)
    window_s = time.time() - cpu_at
    gc_after = gc_pauses(http_port)
    gc_ms = [1000 * (gc_after[g][1] - gc_before[g][1]) for g in ("0", "1", "2")]
    full = gc_after["2"][0] - gc_before["2"][0]
    for leg in rtps:
        assert leg.call.ok is not None
        sip_t.sendto(_in_dialog("BYE", leg.call.ok, 2, local).to_bytes(), gateway)
        leg.sock.close()
    await asyncio.sleep(0.5)
    sip_t.close()
    jitter: list[float] = []
    late = 0
    for leg in rtps:
        # Against the RTP clock, as RFC 3550's interarrival jitter: a packet is due the media time after the
        # one before it, so comfort noise's pauses (a CN packet, then the next speech a second later) are
        # no gap, while a packet of a continuous stream is due 20 ms after the last.
        for (a0, t0), (a1, t1) in itertools.pairwise(leg.call.arrivals):
            due = ((t1 - t0) & 0xFFFFFFFF) / 8000
            jitter.append(abs(a1 - a0 - due))
            late += a1 - a0 - due > LATE_GAP_S - FRAME_S
    setup = [leg.call.first_rtp - leg.call.invited_at for leg in rtps if leg.call.first_rtp is not None]
    def ms(values: list[float], q: int) -> float:
        return 1000 * float(np.percentile(values, q)) if values else float("nan")

    return {"calls": n, "cpu_pct": 100 * cpu / window_s, "cpu_per_call_pct": 100 * cpu / window_s / n,
            "jitter_p50_ms": ms(jitter, 50),
            "jitter_p99_ms": ms(jitter, 99), "late": late, "setup_p50_ms": ms(setup, 50), "setup_p99_ms": ms(setup, 99),
            "gc_young_ms": gc_ms[0], "gc_middle_ms": gc_ms[1], "gc_full_ms": gc_ms[2], "gc_full": full}


_GC_METRIC = re.compile(r'^voxgate_gc_pause_seconds_(count|sum)\{generation="([012])"\} (\S+)$', re.MULTILINE)


def gc_pauses(http_port: int) -> dict[str, tuple[int, float]]:
    """The gateway's cycle-collector pauses so far, by generation: (how many, seconds in all)."""
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/metrics", headers={"Authorization": "Bearer bench"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, dict[str, float]] = {g: {"count": 0.0, "sum": 0.0} for g in ("0", "1", "2")}
    for kind, generation, value in _GC_METRIC.findall(text):
        found[generation][kind] = float(value)
    return {g: (int(v["count"]), v["sum"]) for g, v in found.items()}


def _in_dialog(method: str, ok: Response, cseq: int, local: tuple[str, int]) -> Request:
    """ACK or BYE in the dialog the 200 OK made: to its Contact, our From and its To (both tagged)."""
    return new_request(method, ok.contacts[0].uri, via=Via("UDP", local[0], local[1], (("branch", new_branch()),)),
                       from_=ok.from_, to=ok.to, call_id=ok.call_id, cseq=cseq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="200,300,400,500")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--resolution", type=float, default=0.1, help="as bench/bridge_capacity.py's")
    parser.add_argument("--realtime", action="store_true",
                        help="run gateway and callers under SCHED_FIFO (root; a busy shared machine)")
    parser.add_argument("--bridge-calls", default="150,200,250,300", help="the carrier bridge's ladder, same run")
    parser.add_argument("--no-bridge", action="store_true", help="skip the carrier bridge figure")
    parser.add_argument("--comfort-noise", choices=["off", "on", "both"], default="both",
                        help="callers that offer RFC 3389 CN, that do not, or a ladder of each (default)")
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)  # HTTP and SIP ports
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        os.sched_setaffinity(0, {0})
        serve(args.serve[0], args.serve[1], args.data)
        return
    os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    pcm = np.concatenate([speak("what is the status of my order please", rate=8000), silence(4000, 8000)])
    pcm = pcm[: len(pcm) - len(pcm) % 160]
    audio = [g711.ulaw_encode(pcm[i:i + 160]) for i in range(0, len(pcm), 160)]
    print(f"SIP calls per core: gateway pinned to CPU 0, callers on CPU 1"
          f"{' (both SCHED_FIFO)' if args.realtime else ''}; echo agent; window {args.window:.0f} s")
    held = {}
    for comfort_noise in {"off": [False], "on": [True], "both": [False, True]}[args.comfort_noise]:
        held[comfort_noise] = ladder(args, audio, comfort_noise)
    if len(held) == 2:
        print(f"\nSIP: comfort noise holds {held[True] / max(1, held[False]):.2f}x the calls of a continuous line")
    if args.no_bridge:
        return
    bridge_row(args, max(held.values()))


def ladder(args: argparse.Namespace, audio: list[bytes], comfort_noise: bool) -> int:
    """The largest N that holds, the callers offering RFC 3389 CN (the agent's silence goes as comfort
    noise) or not (a packet every 20 ms, silence too)."""
    print(f"\ncallers offer {'PCMU and CN (comfort noise)' if comfort_noise else 'PCMU only (a continuous line)'}")
    print(f"{'calls':>6} {'CPU':>5} {'CPU/call':>9} {'jitter p50':>11} {'p99':>7} {'late':>5} "
          f"{'INVITE->RTP p50':>16} {'p99':>7}  {'GC young/middle/full':>22}")
    search = CapacitySearch([int(x) for x in args.calls.split(",")], resolution=args.resolution)
    while (n := search.next_n()) is not None:
        http_port, sip_port = free_port(socket.SOCK_STREAM), free_port()
        with tempfile.TemporaryDirectory() as data:
            argv = [sys.executable, __file__, "--serve", str(http_port), str(sip_port), "--data", data]
            if args.realtime and shutil.which("chrt"):
                argv = ["chrt", "-f", str(RT_PRIORITY), *argv]
            server = subprocess.Popen(argv)
            try:
                wait_ready(http_port)
                os.environ["SIP_BENCH_PID"] = str(server.pid)
                os.environ["SIP_BENCH_HTTP"] = str(http_port)
                row = asyncio.run(run(n, sip_port, args.window, audio, comfort_noise))
            finally:
                server.terminate()
                server.wait(timeout=30)
        ok = row["jitter_p99_ms"] <= 20 and row["late"] == 0 and row["cpu_pct"] < 100 * MAX_CPU
        search.record(n, ok)
        print(f"{n:>6} {row['cpu_pct']:>4.0f}% {row['cpu_per_call_pct']:>8.2f}% {row['jitter_p50_ms']:>9.2f}ms "
              f"{row['jitter_p99_ms']:>5.1f}ms {row['late']:>5} {row['setup_p50_ms']:>14.0f}ms "
              f"{row['setup_p99_ms']:>5.0f}ms  {row['gc_young_ms']:>5.0f}/{row['gc_middle_ms']:.0f}/"
              f"{row['gc_full_ms']:.0f} ms ({row['gc_full']:.0f} full)  {'pass' if ok else 'FAIL'}", flush=True)
    print(f"SIP{' with CN' if comfort_noise else ''}: largest N one core holds: {search.best}")
    return search.best


def bridge_row(args: argparse.Namespace, sip_best: int) -> None:
    # The carrier bridge on the same cores, in the same run: bench/bridge_capacity.py's echo row alone.
    bridge = [sys.executable, str(Path(__file__).with_name("bridge_capacity.py")), "--calls", args.bridge_calls,
              "--silero-calls", "", "--window", str(args.window), "--resolution", str(args.resolution)]
    if args.realtime:
        bridge.append("--realtime")
    print("\ncarrier bridge (bench/bridge_capacity.py, same run):", flush=True)
    result = subprocess.run(bridge, capture_output=True, text=True, check=False)
    print(result.stdout.strip())
    held = re.search(r"largest N one core holds: (\d+)", result.stdout)
    if held and int(held.group(1)):
        print(f"\nSIP {sip_best} / carrier bridge {held.group(1)} calls per core: "
              f"{sip_best / int(held.group(1)):.2f}x")
    elif result.returncode:
        print(result.stderr.strip()[-2000:])


def wait_ready(http_port: int, within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


if __name__ == "__main__":
    main()

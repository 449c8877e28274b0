"""Soak: a gateway under steady load for a long time, and whether it comes back as it was.

Starts a gateway in a child process (`voxgate serve`, the echo engine with the echo agent, or the local
engine with the demo agent), pinned to CPU 0 when there are two or more (this process on the others),
reads its admission limit from /readyz (or takes --calls when /readyz does not say) and runs
`voxgate loadtest` at --fraction of it for --duration: calls over the Realtime WebSocket, Twilio and
Telnyx (this process plays the carriers and their REST API), ramped up, each held --hold seconds and
replaced, with the default mix of spoken requests, tool requests, barge-ins and listeners. It samples
the gateway's RSS, CPU and open fds (/proc/PID) and its asyncio task count where /readyz gives one, then
waits for the calls to end and reads them again, and prints:

    drops              calls that ended abnormally (the load test's count and the gateway's `dropped` calls)
    overflows          growth of the gateway's overflow / dropped / lost / stall / store-failure counters
    RSS growth         median RSS over the last stretch of the run against the first stretch after the
                       warm-up (--warmup, default three holds at full load: the climb to the working set)
    fds, tasks         after the run against before it (back to baseline)

It writes bench/out/soak-<engine>.json (the load test's report, the baseline and the verdicts) and
bench/out/soak-<engine>.png, and exits 1 when a check fails. The issue's runs:

    .venv/bin/python bench/soak.py --engine echo --fraction 0.8 --duration 900
    .venv/bin/python bench/soak.py --engine local --fraction 1.0 --duration 900

(900 s: the default warm-up of three 60 s holds, then ten minutes at load that the RSS check covers.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from voxgate.embedded import free_port  # noqa: E402
from voxgate.loadtest.driver import LoadPlan, run_load  # noqa: E402
from voxgate.loadtest.gateway_process import GatewayProcess, ProcessReading  # noqa: E402
from voxgate.loadtest.plot import PlotUnavailable, write_plot  # noqa: E402
from voxgate.loadtest.report import Report, Sample, tasks_of  # noqa: E402
from voxgate.loadtest.scenario import Transport  # noqa: E402
from voxgate.loadtest.target import Target  # noqa: E402

OUT = ROOT / "bench" / "out"
KEY = "soak-key"
# Where /readyz may give the admission limit (the first present wins): a path of keys.
LIMIT_FIELDS = (("calls", "limit"), ("admission", "limit"), ("admission", "max_calls"), ("admission_limit",),
                ("max_calls",), ("call_limit",), ("limits", "calls"))
# Counters whose growth means audio, calls or call records were lost: matched by name, so new ones count too.
LOSS_COUNTER = re.compile(r"^voxgate_\w*(overflow|dropped|lost|stall|store_failures)\w*$")
# Reported beside the losses but not one of them: record writes that outlived their 5 s wait (a busy disk).
SLOW_COUNTER = "voxgate_store_slow_writes_total"
RSS_GROWTH_LIMIT = 5.0  # percent
FD_SLACK = 2  # fds or tasks above the baseline that still count as "back"


# -- the gateway ---------------------------------------------------------------------------------------


def start_gateway(engine: str, port: int, carrier_api: str, data: Path, pin: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VOXGATE_API_KEYS": KEY, "VOXGATE_PORT": str(port), "VOXGATE_HOST": "127.0.0.1",
           "VOXGATE_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'voxgate.db'}",
           "VOXGATE_DEFAULT_AGENT": "echo" if engine == "echo" else "acme",
           "VOXGATE_TWILIO_API_BASE": carrier_api, "VOXGATE_TELNYX_API_BASE": carrier_api,
           "VOXGATE_TELNYX_API_KEY": "KEYsoak",  # the gateway needs one to send Telnyx its answer command
           "ACME_DB": str(data / "acme.db")}
    argv = [sys.executable, "-m", "voxgate.cli", "serve", "--engine", engine, "--log-level", "warning"]
    if pin and shutil.which("taskset"):
        argv = ["taskset", "-c", "0", *argv]
    log = (data / "gateway.log").open("wb")
    return subprocess.Popen(argv, env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_gateway(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {KEY}"})  # /metrics wants a key
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_ready(base: str, process: subprocess.Popen[bytes], within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the gateway exited while starting")
        status, body = get(f"{base}/readyz")
        if status == 200:
            ready: dict[str, Any] = json.loads(body)
            return ready
        time.sleep(0.5)
    raise RuntimeError(f"the gateway was not ready within {within_s:.0f} s")


def admission_limit(ready: dict[str, Any]) -> int | None:
    for path in LIMIT_FIELDS:
        value: Any = ready
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def loss_counters(base: str) -> dict[str, float]:
    """Every overflow / dropped / lost / stall counter (by labels), and the gateway's `dropped` calls."""
    status, text = get(f"{base}/metrics")
    if status != 200:  # a check that read nothing would pass: fail instead
        raise RuntimeError(f"cannot read the gateway's /metrics: HTTP {status}")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            dropped_calls = sample.name == "voxgate_sessions_ended_total" and sample.labels.get("status") == "dropped"
            if LOSS_COUNTER.match(sample.name) or dropped_calls or sample.name == SLOW_COUNTER:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


# -- the verdicts --------------------------------------------------------------------------------------


def rss_growth(samples: list[Sample], target: int, duration_s: float,
               warmup_s: float) -> tuple[float | None, ...]:
    """(early MB, late MB, growth %): median RSS over the first stretch after the warm-up and over the
    last stretch before the run's end; a stretch is a tenth of the run, at least 10 s.

    The warm-up counts from the moment the load is full. RSS climbs in steps while the first few
    generations of calls are replaced (malloc arenas of the worker threads, heap high-water marks), then
    stays flat: a leak is growth after that, not the climb to the working set."""
    stretch = max(10.0, duration_s / 10)
    full = next((s.t for s in samples if s.live >= target), None)
    if full is None:
        return None, None, None
    warm = full + warmup_s
    early = [s.rss_mb for s in samples if warm <= s.t <= warm + stretch and s.rss_mb]
    late = [s.rss_mb for s in samples if duration_s - stretch <= s.t <= duration_s and s.rss_mb]
    if not early or not late:
        return None, None, None
    first, last = statistics.median(early), statistics.median(late)
    return first, last, (last - first) / first * 100


def back(before: int | None, after: int | None) -> bool | None:
    """Whether a count came back to its baseline; None when it could not be read."""
    return None if before is None or after is None else after <= before + FD_SLACK


def verdict(ok: bool | None) -> str:
    return {True: "back to baseline", False: "NOT back", None: "(not exposed by the gateway)"}[ok]


def settle(base: str, within_s: float) -> None:
    """Wait for the gateway to report no sessions, then a little longer for what they leave behind."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status, body = get(f"{base}/readyz")
        if status == 200 and json.loads(body).get("sessions") == 0:
            break
        time.sleep(0.5)
    time.sleep(3.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["echo", "local"], default="echo")
    parser.add_argument("--fraction", type=float, default=0.8, help="of the admission limit")
    parser.add_argument("--calls", type=int, default=0, help="the admission limit, when /readyz does not give it")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds each call stays on the line")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds at full load before RSS growth is measured (default: 3 holds)")
    parser.add_argument("--rate", type=float, default=0.0, help="calls started per second (default: ramp in 20 s)")
    parser.add_argument("--transports", default="realtime,twilio,telnyx")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the gateway to CPU 0")
    args = parser.parse_args()
    if not 0 < args.fraction <= 2 or args.duration <= 0:
        parser.error("--fraction must be in (0, 2] and --duration positive")
    if (args.warmup or 3 * args.hold) + 60 > args.duration:
        parser.error("--duration must leave at least 60 s at load after the warm-up (--warmup, default 3 holds)")

    pin = not args.no_pin and (os.cpu_count() or 1) > 1
    if pin:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    data = Path(tempfile.mkdtemp(prefix="voxgate-soak-"))
    port, api_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = start_gateway(args.engine, port, f"http://127.0.0.1:{api_port}", data, pin)
    try:
        ready = wait_ready(base, gateway, within_s=240)
        limit = admission_limit(ready)
        source = "/readyz"
        if limit is None:
            if args.calls <= 0:
                print("the gateway's /readyz gives no admission limit: pass --calls N", file=sys.stderr)
                return 2
            limit, source = args.calls, "--calls"
        target = max(1, int(limit * args.fraction))
        rate = args.rate or max(0.5, target / 20)
        print(f"soak: {args.engine} engine, admission limit {limit} ({source}), {target} calls "
              f"({args.fraction:.0%}) over {args.transports}, {args.duration:.0f} s, held {args.hold:.0f} s, "
              f"ramp {rate:.1f}/s; gateway pid {gateway.pid}{' on CPU 0' if pin else ''}; its log: "
              f"{data / 'gateway.log'} (kept if a check fails)")
        process = GatewayProcess(gateway.pid)
        time.sleep(3.0)
        before: ProcessReading = process.read()
        tasks_before = tasks_of(wait_ready(base, gateway, 10))
        losses_before = loss_counters(base)

        plan = LoadPlan(Target.parse(base, KEY), tuple(Transport(t) for t in args.transports.split(",")),
                        concurrency=target, rate=rate, hold_s=args.hold, duration_s=args.duration,
                        gateway_pid=gateway.pid, carrier_api_port=api_port)
        last_print = [0.0]

        def progress(sample: Sample) -> None:
            if sample.t - last_print[0] >= 30:
                last_print[0] = sample.t
                print(f"  t={sample.t:5.0f}s live {sample.live:4d}  completed {sample.completed}  dropped "
                      f"{sample.dropped}  refused {sample.refused}  RSS {sample.rss_mb or 0:.0f} MB  fds "
                      f"{sample.fds}", flush=True)

        gc.freeze()  # what start-up imported lives to the end: keep full collections off the callers' clocks
        report: Report = asyncio.run(run_load(plan, progress))
        settle(base, within_s=60)
        after = process.read()
        _, body = get(f"{base}/readyz")
        tasks_after = tasks_of(json.loads(body)) if body else None
        losses = {k: v - losses_before.get(k, 0.0) for k, v in loss_counters(base).items()}
    finally:
        stop_gateway(gateway)

    counts = report.counts()
    slow_writes = sum(v for k, v in losses.items() if k.startswith(SLOW_COUNTER))
    grown = {k: v for k, v in losses.items() if v and not k.startswith(SLOW_COUNTER)}
    warmup = args.warmup or 3 * args.hold
    early, late, growth = rss_growth(report.samples, target, args.duration, warmup)
    checks = {
        "no_drops": counts["dropped"] == 0 and not any("sessions_ended" in k for k in grown),
        "no_overflows": not any("sessions_ended" not in k for k in grown),
        "rss_growth_under_5pct": growth is not None and growth < RSS_GROWTH_LIMIT,
        "fds_back_to_baseline": back(before.fds, after.fds),
        "tasks_back_to_baseline": back(tasks_before, tasks_after),  # None: the gateway does not say
    }
    for line in report.summary():
        print(line)
    print(f"0 drops?      {'yes' if checks['no_drops'] else 'NO'}  (load test: {counts['dropped']} "
          f"{counts['drops'] or ''}; gateway: {({k: v for k, v in grown.items() if 'sessions_ended' in k}) or 0})")
    print(f"0 overflows?  {'yes' if checks['no_overflows'] else 'NO'}  "
          f"({({k: v for k, v in grown.items() if 'sessions_ended' not in k}) or 'no loss counter grew'}; "
          f"{slow_writes:.0f} record writes outlived their wait and finished late)")
    print(f"RSS growth    {'-' if growth is None else f'{growth:+.1f} %'} ({early or 0:.0f} -> {late or 0:.0f} MB at "
          f"load; idle {before.rss_mb:.0f} MB before, {after.rss_mb:.0f} MB after)  "
          f"{'ok' if checks['rss_growth_under_5pct'] else 'NO'}")
    print(f"fds           {before.fds} before, {after.fds} after  {verdict(checks['fds_back_to_baseline'])}")
    print(f"tasks         {tasks_before} before, {tasks_after} after  {verdict(checks['tasks_back_to_baseline'])}")
    print(f"refused       {counts['refused']} {counts['refusals'] or ''}")

    OUT.mkdir(parents=True, exist_ok=True)
    name = f"soak-{args.engine}"
    result = {"engine": args.engine, "admission_limit": limit, "limit_source": source, "fraction": args.fraction,
              "calls": target, "baseline": {"rss_mb": before.rss_mb, "fds": before.fds, "tasks": tasks_before},
              "after": {"rss_mb": after.rss_mb, "fds": after.fds, "tasks": tasks_after},
              "rss_at_load_mb": {"warmup_s": warmup, "early": early, "late": late, "growth_pct": growth},
              "loss_counters": grown, "slow_record_writes": slow_writes,
              "checks": checks, "report": report.as_dict()}
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(f"report: {OUT / f'{name}.json'}")
    try:
        title = f"voxgate soak: {args.engine} engine, {target} calls"
        print(f"plot:   {write_plot(report.samples, OUT / f'{name}.png', title)}")
    except PlotUnavailable as exc:
        print(exc)
    passed = all(v is not False for v in checks.values())
    if passed:
        shutil.rmtree(data, ignore_errors=True)  # the gateway's log and database: kept only when a check failed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

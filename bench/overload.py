"""Overload: more callers than the gateway admits, and whether the admitted ones still get their answers on time.

Starts a gateway as bench/soak.py does (a child process pinned to CPU 0, the load on the other CPUs), reads
its admission limit from /readyz, and runs `voxgate loadtest` twice against it with the same mix of calls:

    unloaded   --quiet calls at once (default 8): the first-response figures of a gateway with room to spare
    beyond     --factor times the limit (default 1.5) at once: every slot over the limit keeps redialling

and prints both, the calls refused (WebSocket 1013, carrier "busy" answers), the drops, and the verdict the
issue asks for: new calls refused, none of the admitted dropped, and their p99 first response within 20 %
of the unloaded p99. It writes bench/out/overload-<engine>.json and exits 1 when a check fails.

    .venv/bin/python bench/overload.py --engine echo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from soak import KEY, OUT, SLOW_COUNTER, admission_limit, loss_counters, start_gateway, stop_gateway, wait_ready
from voxgate.embedded import free_port
from voxgate.loadtest.driver import LoadPlan, run_load
from voxgate.loadtest.report import Report
from voxgate.loadtest.scenario import Transport
from voxgate.loadtest.target import Target

P99_SLACK = 1.20  # the admitted calls' p99 may be at most this much above the unloaded p99


def load(base: str, transports: str, calls: int, rate: float, hold_s: float, duration_s: float,
         gateway_pid: int, api_port: int) -> Report:
    plan = LoadPlan(Target.parse(base, KEY), tuple(Transport(t) for t in transports.split(",")),
                    concurrency=calls, rate=rate, hold_s=hold_s, duration_s=duration_s,
                    gateway_pid=gateway_pid, carrier_api_port=api_port)
    return asyncio.run(run_load(plan, lambda sample: None))


def figures(name: str, report: Report) -> dict[str, Any]:
    counts = report.counts()
    first = report.latencies(report.records)["first_response_ms"]
    admitted = [r for r in report.records if r.outcome.value != "refused"]
    print(f"{name:9s} {counts['started']:5d} calls  {counts['refused']:5d} refused  {counts['dropped']:3d} dropped  "
          f"{len(admitted):5d} admitted  first response over {first['count']} turns: p50 {first['p50']} ms  "
          f"p95 {first['p95']} ms  p99 {first['p99']} ms", flush=True)
    return {"counts": counts, "first_response_ms": first, "report": report.as_dict()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["echo", "local"], default="echo")
    parser.add_argument("--factor", type=float, default=1.5, help="callers at once, times the admission limit")
    parser.add_argument("--quiet", type=int, default=8, help="calls at once in the unloaded run")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds each run lasts")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds each call stays on the line")
    parser.add_argument("--transports", default="realtime,twilio,telnyx")
    parser.add_argument("--max-calls", type=int, default=0,
                        help="the gateway's max_calls (default: the limit it derives for this host)")
    args = parser.parse_args()
    if args.factor <= 1 or args.quiet < 1 or args.duration <= args.hold:
        parser.error("--factor must exceed 1, --quiet be positive and --duration exceed --hold")

    pin = (os.cpu_count() or 1) > 1
    if pin:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    data = Path(tempfile.mkdtemp(prefix="voxgate-overload-"))
    port, api_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    # Every caller over the limit redials from this one address: the per-source rate limit is not under test.
    os.environ["VOXGATE_RATE_LIMIT_PER_SOURCE"] = "0"
    if args.max_calls:
        os.environ["VOXGATE_MAX_CALLS"] = str(args.max_calls)
    gateway = start_gateway(args.engine, port, f"http://127.0.0.1:{api_port}", data, pin)
    try:
        limit = admission_limit(wait_ready(base, gateway, within_s=240))
        if limit is None:
            print("the gateway's /readyz gives no admission limit", file=sys.stderr)
            return 2
        beyond_calls = int(limit * args.factor)
        print(f"overload: {args.engine} engine, admission limit {limit}; unloaded {args.quiet} calls, then "
              f"{beyond_calls} ({args.factor:.1f}x the limit), {args.duration:.0f} s each, held {args.hold:.0f} s",
              flush=True)
        time.sleep(3.0)
        losses_before = loss_counters(base)
        unloaded = figures("unloaded", load(base, args.transports, args.quiet, max(0.5, args.quiet / 10), args.hold,
                                            args.duration, gateway.pid, api_port))
        beyond = figures("beyond", load(base, args.transports, beyond_calls, max(1.0, limit / 20), args.hold,
                                        args.duration, gateway.pid, api_port))
        grown = {k: v - losses_before.get(k, 0.0) for k, v in loss_counters(base).items()
                 if v - losses_before.get(k, 0.0) and not k.startswith(SLOW_COUNTER)}
    finally:
        stop_gateway(gateway)

    quiet_p99, loaded_p99 = unloaded["first_response_ms"]["p99"], beyond["first_response_ms"]["p99"]
    ratio = loaded_p99 / quiet_p99 if quiet_p99 and loaded_p99 else None
    checks = {
        "new_calls_refused": beyond["counts"]["refused"] > 0,
        "admitted_not_dropped": beyond["counts"]["dropped"] == 0 and unloaded["counts"]["dropped"] == 0,
        "no_losses": not grown,
        "p99_within_20pct": ratio is not None and ratio <= P99_SLACK,
    }
    print(f"refused       {beyond['counts']['refused']} {beyond['counts']['refusals']}")
    print(f"p99           {quiet_p99} ms unloaded, {loaded_p99} ms admitted beyond the limit: "
          f"{'-' if ratio is None else f'{ratio:.2f}x'}  {'ok' if checks['p99_within_20pct'] else 'NO'}")
    print(f"losses        {grown or 'no loss counter grew'}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"overload-{args.engine}.json"
    path.write_text(json.dumps({"engine": args.engine, "admission_limit": limit, "factor": args.factor,
                                "unloaded": unloaded, "beyond": beyond, "p99_ratio": ratio, "losses": grown,
                                "checks": checks}, indent=2))
    print(f"report: {path}")
    passed = all(checks.values())
    if passed:
        shutil.rmtree(data, ignore_errors=True)
    else:
        print(f"the gateway's log: {data / 'gateway.log'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Flow brain accuracy and latency on labelled caller utterances for the acme agent.

    .venv/bin/python bench/brain_accuracy.py [--data bench/data/brain_labelled.jsonl] [--failures]

Each line of the data set is one utterance ("text") or a short dialog ("turns", the last one scored),
with the expected outcome: "call" (the brain calls `route` with `args`), "ask" (it asks for a missing
argument of tool `route`, holding `args` so far) or "say" (intent `route`'s reply, or "fallback").
Arguments match exactly ("*" = any non-empty string; text compares case-insensitively). The agent's own
tools are offered as server tools, plus two client-declared tools that have no examples at all.
"Today" is fixed (Wednesday 2025-03-12) so relative dates are deterministic.

Prints intent/tool accuracy, argument accuracy (over lines that expect a tool; a wrong route counts as
wrong arguments) and p50/p95/max latency of decide() per utterance. Every third line is also reported
apart as "held-out": those lines were not looked at while the lexicon and thresholds were tuned.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from voxgate.agents import load_agent
from voxgate.engines.base import HistoryEntry, ResponseRequest, ToolSpec
from voxgate.engines.local.brains.base import CallTool
from voxgate.engines.local.brains.flow import FlowBrain

ROOT = Path(__file__).resolve().parent.parent
TODAY = "2025-03-12"

CLIENT_TOOLS = [
    ToolSpec(
        name="get_weather",
        description="Get the current weather for a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                    "required": ["city"]},
        server=False,
    ),
    ToolSpec(
        name="set_thermostat",
        description="Set the home thermostat to a target temperature.",
        parameters={"type": "object", "properties": {
            "temperature": {"type": "number", "description": "Target temperature"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
        }, "required": ["temperature"]},
        server=False,
    ),
]


def _args_match(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    if set(expected) != set(got):
        return False
    for key, want in expected.items():
        have = got[key]
        if want == "*":
            if not (isinstance(have, str) and have.strip()):
                return False
        elif isinstance(want, str):
            if not isinstance(have, str) or have.casefold() != want.casefold():
                return False
        elif isinstance(want, int | float) and not isinstance(want, bool):
            if not isinstance(have, int | float) or float(have) != float(want):
                return False
        elif have != want:
            return False
    return True


def run(data: Path, show_failures: bool) -> None:
    agent = load_agent(ROOT / "examples" / "agents" / "acme.yaml")
    tools = [ToolSpec(t.name, t.description, t.parameters, server=True) for t in agent.tools] + CLIENT_TOOLS
    brain = FlowBrain()
    lines = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    latencies: list[float] = []
    totals = {"all": [0, 0, 0, 0], "held-out": [0, 0, 0, 0]}  # routes ok, routes, args ok, args
    failures = []
    for index, case in enumerate(lines):
        turns = case.get("turns") or [case["text"]]
        history: list[HistoryEntry] = []
        state: dict[str, Any] = {"today": TODAY}
        decision = None
        for turn in turns:
            history.append(HistoryEntry(kind="user", text=turn))
            request = ResponseRequest(history=list(history), instructions=agent.instructions, tools=tools,
                                      tool_choice="auto", modalities=["audio"], voice=agent.voice,
                                      agent=agent, state=state)
            start = time.perf_counter()
            decision = brain.decide(request)
            latencies.append((time.perf_counter() - start) * 1000.0)
            if not isinstance(decision, CallTool):
                history.append(HistoryEntry(kind="assistant", text=decision.text))
        flow = state.get("flow", {})
        pending = flow.get("pending")
        if isinstance(decision, CallTool):
            got = ("call", decision.name, decision.arguments)
        elif pending is not None:
            got = ("ask", pending["tool"], pending["arguments"])
        else:
            got = ("say", flow.get("route", ""), {})
        route_ok = got[0] == case["expect"] and got[1] == case["route"]
        wants_args = case["expect"] in ("call", "ask")
        args_ok = route_ok and _args_match(case.get("args", {}), got[2]) if wants_args else True
        for name in ("all", "held-out") if index % 3 == 2 else ("all",):
            totals[name][0] += route_ok
            totals[name][1] += 1
            if wants_args:
                totals[name][2] += args_ok
                totals[name][3] += 1
        if not (route_ok and args_ok):
            failures.append((index, turns, case, got, decision))
    for name, (r_ok, r_n, a_ok, a_n) in totals.items():
        print(f"{name:>8}: intent/tool accuracy {r_ok}/{r_n} = {100.0 * r_ok / r_n:.1f}%   "
              f"argument accuracy {a_ok}/{a_n} = {100.0 * a_ok / max(a_n, 1):.1f}%")
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"latency per utterance ({len(latencies)} decide() calls): p50 {statistics.median(latencies):.2f} ms  "
          f"p95 {p95:.2f} ms  max {latencies[-1]:.2f} ms (first call builds the router)")
    print(f"failures: {len(failures)}")
    if show_failures:
        for index, turns, case, got, decision in failures:
            said = decision.text if decision is not None and not isinstance(decision, CallTool) else ""
            split = "held-out" if index % 3 == 2 else "dev"
            print(f"  #{index} ({split}) {' / '.join(turns)!r}")
            print(f"    expected {case['expect']} {case['route']} {case.get('args', '')}")
            print(f"    got      {got[0]} {got[1]} {got[2]} {said!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data" / "brain_labelled.jsonl")
    parser.add_argument("--failures", action="store_true", help="list every miss")
    args = parser.parse_args()
    run(args.data, args.failures)


if __name__ == "__main__":
    main()

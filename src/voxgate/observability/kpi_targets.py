"""Each KPI against its target from config: the value, the target, and whether it is met (None: no data)."""

from __future__ import annotations

from typing import Any

from voxgate.config import KpiTargets


def judged(figures: dict[str, Any], targets: KpiTargets) -> dict[str, dict[str, Any]]:
    """`figures` as CallStore.kpis returns them; one entry per KPI with a target."""
    p95 = figures["first_response_ms"]["p95"]
    escalation = figures["escalation_rate"]
    ended = figures["calls"] - figures["active"]
    return {
        "first_response_p95_ms": _at_most(p95, targets.first_response_p95_ms),
        "interruption_success_rate": _at_least(figures["interruption_success_rate"],
                                               targets.interruption_success_min),
        "task_completion_rate": _at_least(figures["task_completion_rate"], targets.task_completion_min),
        "drop_rate": _at_most(figures["drop_rate"], targets.drop_rate_max),
        "buffer_overflows": _at_most(figures["buffer_overflows"] if ended else None, targets.buffer_overflows_max),
        "tool_success_rate": _at_least(figures["tool_success_rate"], targets.tool_success_min),
        "fallthrough_rate": _at_most(figures["fallthrough_rate"], targets.fallthrough_rate_max),
        "escalation_rate": {
            "value": escalation, "target": [targets.escalation_rate_min, targets.escalation_rate_max],
            "met": None if escalation is None
            else targets.escalation_rate_min <= escalation <= targets.escalation_rate_max},
    }


def _at_most(value: float | None, target: float) -> dict[str, Any]:
    return {"value": value, "target": target, "met": None if value is None else value <= target}


def _at_least(value: float | None, target: float) -> dict[str, Any]:
    return {"value": value, "target": target, "met": None if value is None else value >= target}

"""A load test's results: one record per call, a timeline of the gateway under load, and the report made
of them (JSON for machines, a few lines of text for people). Sans-IO: the driver feeds in what it saw.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from voxgate.loadtest.gateway_process import ProcessReading
from voxgate.loadtest.scenario import Scenario, Transport
from voxgate.loadtest.statistics import LatencySummary, Outcome, percentile

__all__ = ["CallRecord", "Report", "Sample", "Timeline", "tasks_of"]

# Where a gateway's /readyz may say how many asyncio tasks it runs (the first present wins).
TASK_FIELDS = ("tasks", "asyncio_tasks", "event_loop_tasks")


def tasks_of(ready: dict[str, Any] | None) -> int | None:
    """The asyncio task count in a /readyz answer, where the gateway gives one."""
    return next((ready[k] for k in TASK_FIELDS if isinstance(ready.get(k), int)), None) if ready else None


@dataclass
class CallRecord:
    index: int
    transport: Transport
    scenario: Scenario
    started_s: float  # since the run began
    ended_s: float | None = None  # None while the call is live
    outcome: Outcome = Outcome.DROPPED
    reason: str = ""
    first_response_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    unanswered: int = 0
    barge_ins_missed: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # Realtime `error` events the call got, by code

    def error(self, code: str) -> None:
        self.errors[code[:64]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "transport": self.transport.value, "scenario": self.scenario.value,
                "started_s": round(self.started_s, 3),
                "ended_s": None if self.ended_s is None else round(self.ended_s, 3),
                "outcome": self.outcome.value, "reason": self.reason,
                "first_response_ms": [round(v, 1) for v in self.first_response_ms],
                "barge_in_ms": [round(v, 1) for v in self.barge_in_ms], "unanswered": self.unanswered,
                "barge_ins_missed": self.barge_ins_missed, "errors": dict(self.errors)}


@dataclass(frozen=True)
class Sample:
    """The run at one moment. Counts are cumulative; gateway figures are None without a PID to read."""

    t: float
    live: int
    started: int
    completed: int
    dropped: int
    refused: int
    first_response_p95_ms: float | None  # over the last window of turns
    rss_mb: float | None = None
    cpu: float | None = None  # cores busy since the previous sample (1.0 = one core)
    fds: int | None = None
    gateway_sessions: int | None = None  # what the gateway's /readyz says it serves
    tasks: int | None = None  # asyncio tasks, when /readyz says

    @property
    def rss_per_call_mb(self) -> float | None:
        return self.rss_mb / self.live if self.rss_mb is not None and self.live else None

    @property
    def cpu_per_call(self) -> float | None:
        return self.cpu / self.live if self.cpu is not None and self.live else None

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None, digits: int = 1) -> float | None:
            return None if value is None else round(value, digits)

        return {"t": round(self.t, 2), "live": self.live, "started": self.started, "completed": self.completed,
                "dropped": self.dropped, "refused": self.refused,
                "first_response_p95_ms": r(self.first_response_p95_ms), "rss_mb": r(self.rss_mb),
                "cpu": r(self.cpu, 4), "fds": self.fds, "gateway_sessions": self.gateway_sessions,
                "tasks": self.tasks, "rss_per_call_mb": r(self.rss_per_call_mb, 2),
                "cpu_per_call": r(self.cpu_per_call, 5)}


class Timeline:
    """Samples over the run; CPU is the process's CPU time between two readings over the wall time."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._last: tuple[float, ProcessReading] | None = None

    def add(self, t: float, records: list[CallRecord], live: int, p95: float | None,
            reading: ProcessReading | None = None, ready: dict[str, Any] | None = None) -> Sample:
        outcomes = Counter(r.outcome for r in records if r.ended_s is not None)
        cpu = None
        if reading is not None:
            if self._last is not None and t > self._last[0]:
                cpu = (reading.cpu_s - self._last[1].cpu_s) / (t - self._last[0])
            self._last = (t, reading)
        sessions = ready.get("sessions") if ready else None
        sample = Sample(t, live, len(records), outcomes[Outcome.COMPLETED], outcomes[Outcome.DROPPED],
                        outcomes[Outcome.REFUSED], p95, reading.rss_mb if reading else None, cpu,
                        reading.fds if reading else None, sessions if isinstance(sessions, int) else None,
                        tasks_of(ready))
        self.samples.append(sample)
        return sample


@dataclass
class Report:
    settings: dict[str, Any]
    records: list[CallRecord]
    samples: list[Sample]
    wall_s: float
    gateway_pid: int | None = None
    generator: dict[str, Any] = field(default_factory=dict)  # how well the load generator kept time

    def counts(self, records: list[CallRecord] | None = None) -> dict[str, Any]:
        records = self.records if records is None else records
        by = Counter(r.outcome for r in records)
        return {"started": len(records), "completed": by[Outcome.COMPLETED], "dropped": by[Outcome.DROPPED],
                "refused": by[Outcome.REFUSED],
                "refusals": dict(Counter(r.reason for r in records if r.outcome is Outcome.REFUSED)),
                "drops": dict(Counter(r.reason for r in records if r.outcome is Outcome.DROPPED)),
                "unanswered_turns": sum(r.unanswered for r in records),
                "barge_ins_missed": sum(r.barge_ins_missed for r in records)}

    @staticmethod
    def latencies(records: list[CallRecord]) -> dict[str, Any]:
        return {"first_response_ms": LatencySummary.of([v for r in records for v in r.first_response_ms]).as_dict(),
                "barge_in_ms": LatencySummary.of([v for r in records for v in r.barge_in_ms]).as_dict()}

    def gateway(self) -> dict[str, Any] | None:
        read = [s for s in self.samples if s.rss_mb is not None]
        if self.gateway_pid is None or not read:
            return None
        loaded = [s for s in read if s.live and s.cpu is not None]
        return {"pid": self.gateway_pid, "rss_mb_first": read[0].rss_mb, "rss_mb_last": read[-1].rss_mb,
                "rss_mb_peak": max(s.rss_mb or 0.0 for s in read), "fds_first": read[0].fds, "fds_last": read[-1].fds,
                "cpu_per_call_p50": percentile([s.cpu_per_call or 0.0 for s in loaded], 50),
                "rss_per_call_mb_last": next((s.rss_per_call_mb for s in reversed(read) if s.live), None)}

    def as_dict(self) -> dict[str, Any]:
        transports = sorted({r.transport for r in self.records})
        scenarios = sorted({r.scenario for r in self.records})
        return {
            "settings": self.settings,
            "wall_s": round(self.wall_s, 2),
            "calls": self.counts(),
            **self.latencies(self.records),
            "by_transport": {t.value: {**self.counts([r for r in self.records if r.transport is t]),
                                       **self.latencies([r for r in self.records if r.transport is t])}
                             for t in transports},
            "by_scenario": {s.value: {**self.counts([r for r in self.records if r.scenario is s]),
                                      **self.latencies([r for r in self.records if r.scenario is s])}
                            for s in scenarios},
            "gateway": self.gateway(),
            "generator": self.generator,
            "timeline": [s.as_dict() for s in self.samples],
            "call_records": [r.as_dict() for r in self.records],
        }

    def summary(self) -> list[str]:
        """What a person reads after a run."""
        counts = self.counts()
        first = LatencySummary.of([v for r in self.records for v in r.first_response_ms])
        barge = LatencySummary.of([v for r in self.records for v in r.barge_in_ms])

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        refusals = ", ".join(f"{k} {v}" for k, v in sorted(counts["refusals"].items())) or "none"
        drops = ", ".join(f"{k} {v}" for k, v in sorted(counts["drops"].items())) or "none"
        lines = [
            f"calls: {counts['started']} started, {counts['completed']} completed, {counts['dropped']} dropped "
            f"({drops}), {counts['refused']} refused ({refusals})",
            f"first response (end of caller speech -> first agent audio), {first.count} turns: "
            f"p50 {ms(first.p50)}  p95 {ms(first.p95)}  p99 {ms(first.p99)}  max {ms(first.max)}",
            f"barge-in (caller talks over -> agent silenced), {barge.count}: p50 {ms(barge.p50)}  "
            f"p95 {ms(barge.p95)}  p99 {ms(barge.p99)}; missed {counts['barge_ins_missed']}",
            f"unanswered turns: {counts['unanswered_turns']}",
        ]
        if self.generator.get("late_frames"):
            lines.append(f"load generator: {self.generator['late_frames']} of {self.generator['frames']} microphone "
                         f"frames sent late (worst {self.generator['worst_lateness_ms']} ms): it was short of CPU")
        gateway = self.gateway()
        if gateway is not None:
            lines.append(f"gateway pid {gateway['pid']}: RSS {gateway['rss_mb_first']:.0f} -> "
                         f"{gateway['rss_mb_last']:.0f} MB (peak {gateway['rss_mb_peak']:.0f}), "
                         f"fds {gateway['fds_first']} -> {gateway['fds_last']}")
            lines.append(f"  {'t (s)':>7} {'live':>5} {'p95 first':>10} {'RSS MB':>8} {'MB/call':>8} {'CPU':>6} "
                         f"{'CPU/call':>9} {'fds':>5}")
            for s in self._rows(12):
                lines.append(
                    f"  {s.t:>7.0f} {s.live:>5} {ms(s.first_response_p95_ms):>10} {s.rss_mb or 0:>8.0f} "
                    f"{_fmt(s.rss_per_call_mb, '.1f'):>8} {_fmt(None if s.cpu is None else s.cpu * 100, '.0f', '%'):>6}"
                    f" {_fmt(None if s.cpu_per_call is None else s.cpu_per_call * 100, '.2f', '%'):>9}"
                    f" {_fmt(s.fds, 'd'):>5}")
        return lines

    def _rows(self, n: int) -> list[Sample]:
        """At most `n` samples spread over the run, the last always included."""
        read = [s for s in self.samples if s.rss_mb is not None]
        if len(read) <= n:
            return read
        step = len(read) / n
        return [read[min(len(read) - 1, round((i + 1) * step) - 1)] for i in range(n)]


def _fmt(value: float | int | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"

"""The load test's arithmetic, sans-IO: percentiles, how a call ended, latencies over a sliding window.

A call ends one of three ways. *Refused*: the gateway turned it away cleanly because it is at its limit
(WebSocket close 1013 "try again later", HTTP 503 or 429 at the handshake or webhook, a carrier answer
that declines the call), which admission control is meant to do and is counted apart. *Completed*: the
caller hung up as its script said, or the agent ended the call through the carrier (hang-up or
transfer). *Dropped*: anything else: the gateway closed the socket on a live call, a connection broke or
never opened, an answer made no sense.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Ending", "LatencySummary", "LatencyWindow", "Outcome", "classify", "percentile"]

TRY_AGAIN_LATER = 1013  # RFC 6455: the server is overloaded
REFUSING_STATUSES = (429, 503)
NORMAL_CLOSE = 1000


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`th percentile (0-100) with linear interpolation between ranks (numpy's default); None when
    there are no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is 0-100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencySummary:
        return cls(len(values), percentile(values, 50), percentile(values, 95), percentile(values, 99),
                   max(values) if values else None)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "p50": _round(self.p50), "p95": _round(self.p95), "p99": _round(self.p99),
                "max": _round(self.max)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Outcome(StrEnum):
    COMPLETED = "completed"
    DROPPED = "dropped"
    REFUSED = "refused"


@dataclass(frozen=True)
class Ending:
    """How a call ended, as its caller saw it, with the wire's details reduced to what decides the outcome."""

    caller_hung_up: bool = False  # the script ended, or the run did
    agent_hung_up: bool = False  # the gateway hung up or transferred through the carrier's REST API
    close_code: int | None = None  # the gateway closed the call's socket with this code (first)
    http_status: int | None = None  # the handshake or webhook was answered with this status
    declined: str | None = None  # the carrier's answer declined the call (TwiML <Reject>/<Hangup>, Telnyx reject)
    error: str | None = None  # what broke, when something did


def classify(ending: Ending) -> tuple[Outcome, str]:
    """The call's outcome and a short reason (the key it is counted under)."""
    if ending.close_code == TRY_AGAIN_LATER:
        return Outcome.REFUSED, "ws_1013"
    if ending.http_status in REFUSING_STATUSES:
        return Outcome.REFUSED, f"http_{ending.http_status}"
    if ending.declined is not None:
        return Outcome.REFUSED, "carrier_busy"
    if ending.caller_hung_up:
        return Outcome.COMPLETED, "caller_hung_up"
    if ending.agent_hung_up:
        return Outcome.COMPLETED, "agent_hung_up"
    if ending.close_code is not None:
        return Outcome.DROPPED, f"closed_{ending.close_code}"
    if ending.http_status is not None:
        return Outcome.DROPPED, f"http_{ending.http_status}"
    return Outcome.DROPPED, ending.error or "unknown"


class LatencyWindow:
    """Latencies of the last `span_s` seconds, for a percentile over time."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._items: deque[tuple[float, float]] = deque()

    def add(self, at: float, values: Iterable[float]) -> None:
        self._items.extend((at, v) for v in values)

    def percentile(self, now: float, q: float) -> float | None:
        while self._items and self._items[0][0] < now - self.span_s:
            self._items.popleft()
        return percentile([v for _, v in self._items], q)

"""What a load test's callers do, and how fast they arrive: scripted conversations, their mix, the ramp.

Sans-IO: nothing here reads a clock or opens a socket. A `Scenario` is one kind of call: spoken requests,
a request the demo agent answers with a tool (order status), a barge-in (the caller talks over the
agent's first reply), or plain listening. `Mix` deals scenarios to calls by weight, deterministically;
`Ramp` says how many calls to start now, at a rate up to a target concurrency, within the run's count
and time bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BARGE_IN_LINE", "DEFAULT_MIX", "LINES", "REQUESTS", "TOOL_REQUEST", "Mix", "Ramp", "Scenario", "Transport"]


class Transport(StrEnum):
    REALTIME = "realtime"  # the OpenAI Realtime protocol over WebSocket (GA dialect), PCM16 24 kHz
    TWILIO = "twilio"  # voice webhook, then a Media Streams socket (G.711 µ-law 8 kHz)
    TELNYX = "telnyx"  # call.initiated webhook, answer command, then a media socket
    # SIP trunks: a fourth member here and a caller beside realtime_caller/phone_caller (driver.CALLERS)
    # once the gateway answers SIP.


class Scenario(StrEnum):
    SPEAK = "speak"  # spoken requests, one per turn, each awaiting the agent's reply
    TOOL = "tool"  # the same, with a request the demo agent answers through a gateway tool
    BARGE_IN = "barge_in"  # a request, then the caller talks over the first audio of the reply
    LISTEN = "listen"  # the caller says nothing: the line stays open, silence streaming


DEFAULT_MIX = "speak=4,tool=2,barge_in=2,listen=1"
REQUESTS = ("what time do you open on saturday", "what can you do for me")
TOOL_REQUEST = "what is the status of order four five six seven"
BARGE_IN_LINE = "sorry, wait a moment, one more thing please"
LINES = (*REQUESTS, TOOL_REQUEST, BARGE_IN_LINE)  # everything a caller says: rendered once, up front


def requests_of(scenario: Scenario) -> tuple[str, ...]:
    """The requests a call of this scenario makes, in turn order (repeated while the call is held)."""
    if scenario is Scenario.LISTEN:
        return ()
    if scenario is Scenario.TOOL:
        return (TOOL_REQUEST,)
    return REQUESTS


@dataclass(frozen=True)
class Mix:
    """Scenario weights; call n gets `pick(n)`, the same on every run (smooth weighted round robin)."""

    weights: tuple[tuple[Scenario, int], ...]

    @classmethod
    def parse(cls, text: str) -> Mix:
        """`speak=4,tool=2,barge_in=2,listen=1` (a name alone weighs 1)."""
        weights: dict[Scenario, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, weight = part.partition("=")
            try:
                scenario = Scenario(name.strip())
            except ValueError:
                raise ValueError(f"unknown scenario {name.strip()!r}; expected one of "
                                 f"{', '.join(s.value for s in Scenario)}") from None
            try:
                value = int(weight) if weight else 1
            except ValueError:
                raise ValueError(f"the weight of {scenario.value} must be an integer, got {weight!r}") from None
            if not 0 <= value <= 1000:
                raise ValueError(f"the weight of {scenario.value} must be 0-1000, got {value}")
            weights[scenario] = value
        if not any(weights.values()):
            raise ValueError("the mix needs at least one scenario with a positive weight")
        return cls(tuple((s, w) for s, w in weights.items() if w))

    def pick(self, n: int) -> Scenario:
        total = sum(w for _, w in self.weights)
        current = dict.fromkeys((s for s, _ in self.weights), 0)
        chosen = self.weights[0][0]
        for _ in range(n % total + 1):
            for scenario, weight in self.weights:
                current[scenario] += weight
            chosen = max(current, key=lambda s: current[s])
            current[chosen] -= total
        return chosen

    def as_dict(self) -> dict[str, int]:
        return {s.value: w for s, w in self.weights}


class Ramp:
    """Start calls at `rate` per second until `concurrency` are live, and keep them there (a call that ends
    is replaced), until `max_calls` have started or `duration_s` has passed. Starts are paced by a token
    bucket holding at most one second's worth, so replacements never arrive as a burst."""

    def __init__(self, rate: float, concurrency: int, max_calls: int, duration_s: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("the ramp rate must be a positive number of calls per second")
        if concurrency < 1 or max_calls < 1:
            raise ValueError("concurrency and the call count must be at least 1")
        if not (0 < duration_s <= 7 * 24 * 3600):
            raise ValueError("the duration must be between 0 and a week")
        self.rate, self.concurrency, self.max_calls, self.duration_s = rate, concurrency, max_calls, duration_s
        self._burst = max(1.0, rate)
        self._tokens = 1.0
        self._at = 0.0

    def due(self, elapsed_s: float, live: int, started: int) -> int:
        """How many calls to start now, `elapsed_s` into the run, with `live` calls up and `started` so far."""
        self._tokens = min(self._burst, self._tokens + max(0.0, elapsed_s - self._at) * self.rate)
        self._at = max(self._at, elapsed_s)
        if elapsed_s >= self.duration_s:
            return 0
        n = max(0, min(math.floor(self._tokens), self.concurrency - live, self.max_calls - started))
        self._tokens -= n
        return n

    def over(self, elapsed_s: float, started: int) -> bool:
        """No call will start any more."""
        return elapsed_s >= self.duration_s or started >= self.max_calls

"""When to try an upstream again: exponential backoff with jitter, and a circuit breaker.

Sans-IO: the caller passes the clock (`now`, monotonic seconds) and its random draws (`rand` in [0, 1)),
so the policy is a pure state machine. Every failed connect attempt counts; after `failures_to_open`
in a row the circuit opens and connects fail at once for a cool-down that doubles each time it reopens
(with jitter, so many gateways do not return together). After the cool-down one attempt is let
through: success closes the circuit, failure reopens it for longer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReconnectPolicy:
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    failures_to_open: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0

    consecutive_failures: int = 0
    open_until: float = 0.0
    times_opened: int = 0  # since the last success: each reopening doubles the cool-down

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number `attempt` (0-based): "full jitter" exponential backoff."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt, 30))
        return ceiling * min(max(rand, 0.0), 1.0)

    def wait_s(self, now: float) -> float:
        """0 when a connect may be tried now; otherwise how long the circuit stays open."""
        return max(0.0, self.open_until - now)

    def failed(self, now: float, rand: float) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failures_to_open:
            cooldown = min(self.max_cooldown_s, self.cooldown_s * 2.0 ** min(self.times_opened, 30))
            self.open_until = now + cooldown * (0.75 + 0.5 * min(max(rand, 0.0), 1.0))
            self.times_opened += 1
            # After the cool-down a single attempt decides: one more failure reopens the circuit.
            self.consecutive_failures = self.failures_to_open - 1

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.times_opened = 0


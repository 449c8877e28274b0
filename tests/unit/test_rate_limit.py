"""Token buckets per key and per source address, on a test clock."""

from __future__ import annotations

import pytest

from voxgate.control.rate_limit import RateLimiter, RateLimits


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, now=clock)
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("a") == pytest.approx(0.5)  # one token every half second
    assert limiter.check("b") == 0.0  # another client has its own bucket
    clock.t += 0.5
    assert limiter.check("a") == 0.0
    assert limiter.check("a") > 0
    clock.t += 100  # saving up stops at the burst
    assert [limiter.check("a") for _ in range(4)][-1] > 0


def test_memory_is_bounded_by_forgetting_the_least_recently_seen() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, max_tracked=3, now=clock)
    for key in ("a", "b", "c"):
        assert limiter.check(key) == 0.0
    assert limiter.check("a") > 0  # "a" is now the most recent
    assert limiter.check("d") == 0.0  # "b" is forgotten to make room
    assert len(limiter) == 3
    assert limiter.check("a") > 0 and limiter.check("c") > 0
    assert limiter.check("b") == 0.0  # forgotten: a fresh bucket


def test_source_then_key_and_a_zero_rate_turns_a_limit_off() -> None:
    clock = Clock()
    limits = RateLimits(key_rate=1.0, key_burst=2, source_rate=0.0, source_burst=1, now=clock)
    assert limits.check("10.0.0.1", "sk-1", "realtime_ws") == 0.0
    assert limits.check("10.0.0.2", "sk-1", "realtime_ws") == 0.0
    assert limits.check("10.0.0.3", "sk-1", "realtime_ws") > 0  # the key's burst is spent, from any address
    assert limits.check("10.0.0.3", "sk-2", "realtime_ws") == 0.0
    assert limits.check("10.0.0.3", None, "realtime_ws") == 0.0  # no key presented: the source limit only (off)
    by_source = RateLimits(key_rate=0.0, key_burst=1, source_rate=1.0, source_burst=1, now=clock)
    assert by_source.check("10.0.0.1", "sk-1", "client_secrets") == 0.0
    assert by_source.check("10.0.0.1", "sk-2", "client_secrets") > 0  # a new key does not reset the address

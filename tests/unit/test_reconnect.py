"""Backoff with jitter and the circuit breaker in front of an upstream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voxgate.engines.reconnect import ReconnectPolicy


@given(st.integers(0, 100), st.floats(0, 1))
def test_backoff_grows_is_capped_and_jittered(attempt: int, rand: float) -> None:
    policy = ReconnectPolicy(base_delay_s=0.25, max_delay_s=8.0)
    delay = policy.delay(attempt, rand)
    assert 0.0 <= delay <= min(8.0, 0.25 * 2 ** attempt)
    assert policy.delay(attempt, 1.0) == min(8.0, 0.25 * 2 ** attempt)


def test_the_circuit_opens_after_repeated_failures_and_a_success_closes_it() -> None:
    policy = ReconnectPolicy(failures_to_open=3, cooldown_s=5.0, max_cooldown_s=20.0)
    policy.failed(0.0, 0.5)
    policy.failed(0.0, 0.5)
    assert policy.wait_s(0.0) == 0.0
    policy.failed(0.0, 0.5)
    assert policy.wait_s(0.0) == 5.0  # jitter 0.75..1.25, here exactly the middle
    assert policy.wait_s(4.0) == 1.0
    assert policy.wait_s(5.0) == 0.0  # half-open: one attempt goes through
    policy.failed(5.0, 0.5)  # ... and fails: open again, for twice as long
    assert policy.wait_s(5.0) == 10.0
    policy.failed(15.0, 0.5)
    policy.failed(35.0, 0.5)
    assert policy.wait_s(35.0) == 20.0  # capped
    policy.succeeded()
    assert policy.wait_s(35.0) == 0.0
    policy.failed(36.0, 0.5)
    assert policy.wait_s(36.0) == 0.0  # the count starts over


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), max_size=40))
def test_the_cool_down_never_exceeds_its_cap(outcomes: list[tuple[bool, float]]) -> None:
    policy = ReconnectPolicy(cooldown_s=5.0, max_cooldown_s=60.0)
    now = 0.0
    for ok, rand in outcomes:
        now += policy.wait_s(now)
        if ok:
            policy.succeeded()
        else:
            policy.failed(now, rand)
        assert policy.wait_s(now) <= 60.0 * 1.25

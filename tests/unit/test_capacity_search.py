"""The capacity benchmarks' search (loadtest/capacity_search.py): it ends on the largest N that holds, to
its resolution, wherever the true limit lies, the ladder's first step included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.loadtest.capacity_search import CapacitySearch


def searched(steps: list[int], limit: int, **options: float) -> tuple[int, list[int]]:
    """Run the search against a server that holds exactly `limit` calls; (what it reports, what it ran)."""
    search = CapacitySearch(steps, **options)
    ran = []
    while (n := search.next_n()) is not None:
        assert n not in search.results, f"{n} run twice"
        ran.append(n)
        search.record(n, n <= limit)
    return search.best, ran


def test_the_ladder_climbs_until_two_failures_then_narrows_the_gap() -> None:
    assert searched([100, 200, 250, 300, 350], limit=230) == (225, [100, 200, 250, 300, 225, 237])


def test_a_first_step_that_fails_steps_down_instead_of_reporting_zero() -> None:
    # The Silero rows' case: the ladder starts at 100 and the server holds 40.
    best, ran = searched([100, 150, 200, 250], limit=40)
    assert ran[:3] == [100, 50, 25] and best == 40


def test_the_whole_ladder_holding_is_the_top_step() -> None:
    assert searched([10, 20, 30], limit=1000) == (30, [10, 20, 30])


def test_nothing_holds_at_all() -> None:
    assert searched([8], limit=0) == (0, [8, 4, 2, 1])


@given(steps=st.lists(st.integers(1, 600), min_size=1, max_size=8, unique=True).map(sorted),
       limit=st.integers(0, 800))
def test_it_reports_the_largest_n_that_holds_to_its_resolution(steps: list[int], limit: int) -> None:
    best, ran = searched(steps, limit)
    assert best <= limit  # never a figure that did not hold
    failed_above = [n for n in ran if n > limit]
    if limit >= 1 and failed_above:  # bracketed: within 10 % (or one call) of the true limit
        assert min(failed_above) - best <= max(1, int(best * 0.1)) or best == limit
    if not failed_above:
        assert best == max(ran)
    assert len(ran) <= len(steps) + 20


def test_resolution_zero_keeps_to_the_ladder_and_the_halving() -> None:
    assert searched([100, 200, 300], limit=250, resolution=0) == (200, [100, 200, 300])
    assert searched([100, 200], limit=60, resolution=0) == (50, [100, 50])


def test_a_ladder_needs_steps() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        CapacitySearch([])

"""The pool Piper's pieces share: the most urgent queued job runs first, on real threads."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import CancelledError

import pytest

from voxgate.engines.local.priority_pool import LATER, URGENT, PriorityPool


def test_an_urgent_job_overtakes_queued_later_ones() -> None:
    pool = PriorityPool(1, "test")
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = pool.submit(LATER, release.wait)  # holds the only thread until released
        later = [pool.submit(LATER, functools.partial(ran.append, f"later {n}")) for n in range(2)]
        urgent = pool.submit(URGENT, lambda: ran.append("urgent"))
        release.set()
        busy.result(timeout=30)
        for future in [*later, urgent]:
            future.result(timeout=30)
        assert ran == ["urgent", "later 0", "later 1"]  # equals keep their order of arrival
    finally:
        release.set()
        pool.shutdown()


def test_a_cancelled_job_never_runs_and_the_rest_still_do() -> None:
    pool = PriorityPool(1, "test")
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = pool.submit(URGENT, release.wait)
        dropped = pool.submit(URGENT, lambda: ran.append("dropped"))
        kept = pool.submit(LATER, lambda: ran.append("kept"))
        assert dropped.cancel()
        release.set()
        busy.result(timeout=30)
        kept.result(timeout=30)
        assert ran == ["kept"]
    finally:
        release.set()
        pool.shutdown()


def test_a_job_s_exception_reaches_its_future() -> None:
    pool = PriorityPool(2, "test")
    try:
        with pytest.raises(ZeroDivisionError):
            pool.submit(URGENT, lambda: 1 // 0).result(timeout=30)
        assert pool.submit(URGENT, lambda: 42).result(timeout=30) == 42
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_is_still_queued() -> None:
    pool = PriorityPool(1, "test")
    release = threading.Event()
    busy = pool.submit(URGENT, release.wait)
    queued = pool.submit(LATER, lambda: "never")
    pool.shutdown()
    release.set()
    assert busy.result(timeout=30) is True  # the running job finishes
    with pytest.raises(CancelledError):
        queued.result(timeout=30)


def test_an_urgent_job_runs_on_its_lane_while_a_later_one_holds_every_thread() -> None:
    pool = PriorityPool(1, "test", urgent_workers=1)
    release = threading.Event()
    try:
        busy = pool.submit(LATER, release.wait)  # holds the only general thread until released
        queued_later = pool.submit(LATER, lambda: "later")
        assert pool.submit(URGENT, lambda: "urgent").result(timeout=30) == "urgent"
        assert not busy.done() and not queued_later.done()  # the lane took the urgent job only
        release.set()
        assert queued_later.result(timeout=30) == "later"
    finally:
        release.set()
        pool.shutdown()


def test_without_a_lane_an_urgent_job_waits_for_the_running_one() -> None:
    pool = PriorityPool(1, "test")
    release = threading.Event()
    try:
        busy = pool.submit(LATER, release.wait)
        urgent = pool.submit(URGENT, lambda: "urgent")
        with pytest.raises(TimeoutError):
            urgent.result(timeout=0.2)  # not a timing claim: it cannot run before `busy` ends
        assert not busy.done()
        release.set()
        assert urgent.result(timeout=30) == "urgent"
    finally:
        release.set()
        pool.shutdown()


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _may_raise_priority() -> bool:
    """Whether this process may lower a thread's nice (root or CAP_SYS_NICE), tried on a scratch thread."""
    allowed: list[bool] = []

    def attempt() -> None:
        base = _nice()
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(-20, base - 1))
        except OSError:
            allowed.append(base == -20)
        else:
            allowed.append(True)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return allowed[0]


def test_the_lane_runs_urgent_jobs_at_a_raised_priority_and_returns_to_the_process_s_after() -> None:
    pool = PriorityPool(1, "test", urgent_workers=1, urgent_boost=5)
    release = threading.Event()
    try:
        base = pool.submit(LATER, _nice).result(timeout=30)
        busy = pool.submit(LATER, release.wait)  # the general thread is held: urgent jobs go to the lane
        seen = pool.submit(URGENT, lambda: (threading.get_native_id(), _nice())).result(timeout=30)
        lane, urgent = seen
        after = os.getpriority(os.PRIO_PROCESS, lane)  # restored before the job's result was given
        if _may_raise_priority():
            assert urgent == max(-20, base - 5) and not pool.boost_refused
        else:  # no right to: the job still runs, at the process's priority, and the pool says why
            assert urgent == base and pool.boost_refused
        assert after == base and not busy.done()
    finally:
        release.set()
        pool.shutdown()


def test_an_idle_lane_takes_the_urgent_job_and_a_general_thread_never_runs_one_boosted() -> None:
    pool = PriorityPool(1, "test", urgent_workers=1, urgent_boost=5)
    try:
        base = pool.submit(LATER, _nice).result(timeout=30)
        names = [pool.submit(URGENT, lambda: (threading.current_thread().name, _nice())).result(timeout=30)
                 for _ in range(3)]
        assert all(name.startswith("test-urgent") for name, _ in names)  # left to the free lane every time
        assert pool.submit(LATER, _nice).result(timeout=30) == base
    finally:
        pool.shutdown()


def test_an_unknown_urgency_is_refused() -> None:
    pool = PriorityPool(1, "test")
    try:
        with pytest.raises(ValueError):
            pool.submit(2, lambda: None)
    finally:
        pool.shutdown()


def test_a_boost_out_of_nice_s_range_is_refused() -> None:
    with pytest.raises(ValueError):
        PriorityPool(1, "test", urgent_boost=21)

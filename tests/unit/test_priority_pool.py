"""The pool Piper's pieces share: the most urgent queued job runs first, on real threads."""

from __future__ import annotations

import functools
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

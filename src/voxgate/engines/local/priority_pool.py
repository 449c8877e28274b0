"""A thread pool that runs the most urgent queued job first, with a lane and a priority for urgent work.

Piper's pool serves every call in the process: one call's first piece of a reply (a caller waiting to
hear the agent) must not queue behind another call's next sentence, which has a whole sentence of
playback to be ready in. Jobs are ordered by urgency (lower first), then by arrival. Two more things keep
an urgent job's wall time close to its CPU time on a busy machine:

- `urgent_workers` threads take urgent jobs only, so an urgent job never waits for a running later one;
- an urgent job runs with its thread's nice value lowered by `urgent_boost` (Linux threads each have
  their own), so the kernel gives it a core ahead of Whisper's decode, other calls' prefetch and other
  processes of the same nice. Lowering nice needs CAP_SYS_NICE (or an RLIMIT_NICE allowance): without
  it the job runs at the process's priority, and `boost_refused` says so.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0  # a caller is waiting on it now
LATER = 1  # prefetched ahead of need
MAX_NICE_BOOST = 20  # nice runs from 19 down to -20

log = logging.getLogger("voxgate.local")


class PriorityPool:
    """`max_workers` threads for any job, `urgent_workers` more for urgent ones; `submit` queues a job at an
    urgency, and each free thread takes the most urgent one it may run. Cancelling a job's future before it
    starts drops it."""

    def __init__(self, max_workers: int, thread_name_prefix: str, *, urgent_workers: int = 0,
                 urgent_boost: int = 0) -> None:
        if urgent_workers < 0 or not 0 <= urgent_boost <= MAX_NICE_BOOST:
            raise ValueError(f"urgent_workers must be >= 0 and urgent_boost within 0..{MAX_NICE_BOOST}")
        # The executors own the threads (and their clean shutdown); every job submitted adds one runner to
        # the general executor (and an urgent one one to the urgent lane too), and a runner runs whichever
        # queued job is most urgent when it gets a thread. Every job has a general runner, so none is
        # stranded when a lane runner took another job or found nothing it may run.
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._urgent_lane = (ThreadPoolExecutor(max_workers=urgent_workers,
                                                thread_name_prefix=f"{thread_name_prefix}-urgent")
                             if urgent_workers else None)
        self._urgent_boost = urgent_boost
        self.boost_refused = False  # the OS would not raise an urgent job's priority (no CAP_SYS_NICE)
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._arrivals = itertools.count()

    def submit(self, urgency: int, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            heapq.heappush(self._queue, (urgency, next(self._arrivals), future, job))
        self._executor.submit(self._run_most_urgent, LATER)
        if urgency <= URGENT and self._urgent_lane is not None:
            self._urgent_lane.submit(self._run_most_urgent, URGENT)
        return future

    def _run_most_urgent(self, least_urgent: int) -> None:
        """Run the most urgent queued job, if it is at least as urgent as `least_urgent`."""
        with self._lock:
            if not self._queue or self._queue[0][0] > least_urgent:
                return
            urgency, _, future, job = heapq.heappop(self._queue)
        if not future.set_running_or_notify_cancel():
            return  # cancelled while queued: its runner is spent on nothing, the others still cover the queue
        base = self._boost() if urgency <= URGENT else None
        try:
            result = job()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            if base is not None:  # the thread goes back to the process's priority for the next job
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), base)

    def _boost(self) -> int | None:
        """Lower this thread's nice by `urgent_boost` for an urgent job: its nice before, or None when not
        boosted."""
        if not self._urgent_boost or self.boost_refused:
            return None
        thread = threading.get_native_id()
        try:
            base = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, max(-20, base - self._urgent_boost))
        except OSError as exc:  # EPERM/EACCES: no right to raise a priority; said once, then never tried again
            self.boost_refused = True
            log.info("urgent synthesis runs at the process's priority (raising a thread's needs CAP_SYS_NICE): %s",
                     exc)
            return None
        return base

    def queued(self) -> int:
        """Jobs waiting for a thread (cancelled ones excluded)."""
        with self._lock:
            return sum(not future.cancelled() for _, _, future, _ in self._queue)

    def shutdown(self) -> None:
        """Stop the threads; queued jobs are cancelled, a running one finishes."""
        with self._lock:
            queued, self._queue = self._queue, []
        for _, _, future, _ in queued:
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._urgent_lane is not None:
            self._urgent_lane.shutdown(wait=False, cancel_futures=True)

"""A thread pool that runs the most urgent queued job first, with a lane and a priority for urgent work.

Piper's pool serves every call in the process: one call's first piece of a reply (a caller waiting to
hear the agent) must not queue behind another call's next sentence, which has a whole sentence of
playback to be ready in. Jobs are urgent or later, each kind in order of arrival; a free thread takes an
urgent job first. Two more things keep an urgent job's wall time close to its CPU time on a busy machine:

- `urgent_workers` lane threads take urgent jobs only, so an urgent job never waits for a running later
  one; while a lane thread is free, urgent jobs are left to it;
- a lane thread runs its job with its nice value lowered by `urgent_boost` (Linux threads each have their
  own), so the kernel gives it a core ahead of Whisper's decodes, other calls' prefetch and other
  processes of the same nice. Only the lane is boosted, so at most `urgent_workers` threads outrank the
  event loop (which runs every call's audio and VAD), and none on a single core, where a boosted thread
  would have the loop's only core. Lowering nice needs CAP_SYS_NICE (or an RLIMIT_NICE allowance):
  without it the job runs at the process's priority, and `boost_refused` says so.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0  # a caller is waiting on it now
LATER = 1  # prefetched ahead of need
MAX_NICE_BOOST = 20  # nice runs from 19 down to -20

log = logging.getLogger("voxgate.local")

_Job = tuple[Future[Any], Callable[[], Any]]


class PriorityPool:
    """`max_workers` threads for any job, `urgent_workers` more for urgent ones; `submit` queues a job at an
    urgency, and each free thread takes the most urgent one it may run. Cancelling a job's future before it
    starts drops it."""

    def __init__(self, max_workers: int, thread_name_prefix: str, *, urgent_workers: int = 0,
                 urgent_boost: int = 0) -> None:
        if urgent_workers < 0 or not 0 <= urgent_boost <= MAX_NICE_BOOST:
            raise ValueError(f"urgent_workers must be >= 0 and urgent_boost within 0..{MAX_NICE_BOOST}")
        # The executors own the threads (and their clean shutdown). Every job submitted adds one runner to
        # the general executor, an urgent one one to the lane as well; a runner runs a queued job it may
        # when it gets a thread. So there are always at least as many general runners to come as later
        # jobs queued, and as many lane runners as urgent jobs: none is stranded when another runner took
        # its job or found nothing it may run.
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._lane = (ThreadPoolExecutor(max_workers=urgent_workers, thread_name_prefix=f"{thread_name_prefix}-urgent")
                      if urgent_workers else None)
        self._lane_threads = urgent_workers
        self._lane_busy = 0
        self._boost_by = urgent_boost if len(os.sched_getaffinity(0)) > urgent_workers else 0
        self.boost_refused = False  # the OS would not raise an urgent job's priority (no CAP_SYS_NICE)
        self._lock = threading.Lock()
        self._queues: dict[int, deque[_Job]] = {URGENT: deque(), LATER: deque()}

    def submit(self, urgency: int, job: Callable[[], T]) -> Future[T]:
        if urgency not in self._queues:
            raise ValueError(f"urgency must be URGENT ({URGENT}) or LATER ({LATER}), got {urgency}")
        future: Future[T] = Future()
        with self._lock:
            self._queues[urgency].append((future, job))
        if urgency == URGENT and self._lane is not None:
            self._lane.submit(self._run, True)
        self._executor.submit(self._run, False)
        return future

    def _take(self, on_lane: bool) -> _Job | None:
        """The job a runner runs (under the lock): the lane takes urgent jobs only; a general thread takes
        an urgent one only while every lane thread is busy, else the oldest later one."""
        urgent, later = self._queues[URGENT], self._queues[LATER]
        if urgent and (on_lane or self._lane_busy >= self._lane_threads):
            if on_lane:
                self._lane_busy += 1
            return urgent.popleft()
        if later and not on_lane:
            return later.popleft()
        return None

    def _run(self, on_lane: bool) -> None:
        with self._lock:
            taken = self._take(on_lane)
        if taken is None:
            return
        future, job = taken
        try:
            if not future.set_running_or_notify_cancel():
                return  # cancelled while queued: its runner is spent on nothing, the others cover the queue
            base = self._boost() if on_lane else None
            try:
                result: Any = job()
                error: BaseException | None = None
            except BaseException as exc:
                error = exc
            if base is not None:  # back to the process's priority before anyone hears the job is done
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), base)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        finally:
            if on_lane:
                with self._lock:
                    self._lane_busy -= 1

    def _boost(self) -> int | None:
        """Lower this thread's nice by the boost for an urgent job: its nice before, or None when not
        boosted."""
        if not self._boost_by or self.boost_refused:
            return None
        thread = threading.get_native_id()
        try:
            base = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, max(-20, base - self._boost_by))
        except OSError as exc:  # EPERM/EACCES: no right to raise a priority; said once, then never tried again
            self.boost_refused = True
            log.info("urgent synthesis runs at the process's priority (raising a thread's needs CAP_SYS_NICE): %s",
                     exc)
            return None
        return base

    def queued(self) -> int:
        """Jobs waiting for a thread (cancelled ones excluded)."""
        with self._lock:
            return sum(not future.cancelled() for queue in self._queues.values() for future, _ in queue)

    def shutdown(self) -> None:
        """Stop the threads; queued jobs are cancelled, a running one finishes."""
        with self._lock:
            queued = [job for queue in self._queues.values() for job in queue]
            for queue in self._queues.values():
                queue.clear()
        for future, _ in queued:
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._lane is not None:
            self._lane.shutdown(wait=False, cancel_futures=True)

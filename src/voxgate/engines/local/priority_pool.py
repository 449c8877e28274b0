"""A thread pool that runs the most urgent queued job first.

Piper's pool serves every call in the process: one call's first piece of a reply (a caller waiting to
hear the agent) must not queue behind another call's next sentence, which has a whole sentence of
playback to be ready in. Jobs are ordered by urgency (lower first), then by arrival.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0  # a caller is waiting on it now
LATER = 1  # prefetched ahead of need


class PriorityPool:
    """`max_workers` threads; `submit` queues a job at an urgency, and each free thread takes the most
    urgent one. Cancelling a job's future before it starts drops it."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        # The executor owns the threads (and their clean shutdown); every job submitted adds one runner
        # to it, and a runner runs whichever queued job is most urgent when it gets a thread.
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._arrivals = itertools.count()

    def submit(self, urgency: int, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            heapq.heappush(self._queue, (urgency, next(self._arrivals), future, job))
        self._executor.submit(self._run_most_urgent)
        return future

    def _run_most_urgent(self) -> None:
        with self._lock:
            if not self._queue:
                return
            _, _, future, job = heapq.heappop(self._queue)
        if not future.set_running_or_notify_cancel():
            return  # cancelled while queued: its runner is spent on nothing, the others still cover the queue
        try:
            result = job()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

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

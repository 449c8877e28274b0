"""How long a call's data stays: deletion on request (the control API) and by age (the sweeper).

Each agent may set `retention_days`: its calls' records (items, tool calls, outcome) and recordings are
deleted that long after the call started; a recording's own expiry is fixed when it is saved. The sweeper
wakes every `retention_sweep_interval_s`, deletes what has expired in bounded batches, and logs how much:
a database hiccup costs one sweep, and the next tries again. A live call is never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from voxgate.store.recordings import RecordingStore, delete_files

__all__ = ["Retention"]

log = logging.getLogger("voxgate.retention")


class Retention:
    def __init__(self, recordings: RecordingStore, retention_days: Mapping[str, float], interval_s: float) -> None:
        self.recordings = recordings
        self.retention_days = dict(retention_days)  # agent -> days, for the agents that set one
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def delete_recording(self, call_id: str) -> bool:
        """The call's recording, file and row; False when it has none."""
        row = await self.recordings.get(call_id)
        if row is None:
            return False
        await delete_files(row.path)
        await self.recordings.forget(call_id)
        return True

    async def delete_call(self, call_id: str) -> None:
        """Everything kept about the call: its recording's file, then its rows."""
        row = await self.recordings.get(call_id)
        if row is not None:
            await delete_files(row.path)
        await self.recordings.forget_call(call_id)

    async def sweep(self) -> tuple[int, int]:
        """Delete what has expired now: (recordings, calls) deleted."""
        recordings = await self.recordings.expired_recordings()
        for row in recordings:
            await delete_files(row.path)
            await self.recordings.forget(row.call_id)
        calls = await self.recordings.expired_calls(self.retention_days) if self.retention_days else []
        for call_id in calls:
            await self.delete_call(call_id)
        if recordings or calls:
            log.info("retention: deleted %d recording(s) and %d call(s) past their agents' retention",
                     len(recordings), len(calls))
        return len(recordings), len(calls)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.warning("retention sweep failed; the next one tries again", exc_info=True)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

"""Recordings and the deletion of a call's data: the rows that say where each call's audio is, and when it goes.

Whoever deletes a row deletes its file first (`delete_files`, off the loop), so a failed deletion
leaves the row to find it again. A call's data is its `calls` row with its items, tool calls and
recording (their foreign keys cascade, and they are deleted explicitly too, for a database that was
set up without the cascade).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from voxgate.store.database import Database
from voxgate.store.models import Call, CallItem, Recording, ToolCall, utc_now

__all__ = ["RecordingRow", "RecordingStore", "delete_files"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordingRow:
    call_id: str
    path: Path
    format: str
    duration_s: float
    bytes: int
    created_at: datetime
    expires_at: datetime | None
    meta: dict[str, Any] | None

    def view(self) -> dict[str, Any]:
        """What the API shows (never the path on disk)."""
        return {"call_id": self.call_id, "format": self.format, "duration_s": self.duration_s, "bytes": self.bytes,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None, **(self.meta or {})}


def _row(recording: Recording) -> RecordingRow:
    return RecordingRow(recording.call_id, Path(recording.path), recording.format, recording.duration_s,
                        recording.bytes, recording.created_at, recording.expires_at, recording.meta)


class RecordingStore:
    def __init__(self, db: Database, *, now: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._now = now

    async def add(self, call_id: str, *, path: Path, format: str, duration_s: float, bytes: int,
                  meta: Mapping[str, Any] | None, retention_days: float | None) -> None:
        now = self._now()
        expires = now + timedelta(days=retention_days) if retention_days is not None else None
        async with self._db.session() as session, session.begin():
            await session.merge(Recording(call_id=call_id, path=str(path), format=format, created_at=now,
                                          duration_s=duration_s, bytes=bytes, meta=dict(meta) if meta else None,
                                          expires_at=expires))

    async def get(self, call_id: str, *, visible_to: str | None = None) -> RecordingRow | None:
        """The call's recording; None when there is none, or the call is another key's."""
        query = sa.select(Recording).join(Call, Call.id == Recording.call_id).where(Recording.call_id == call_id)
        if visible_to is not None:
            query = query.where(sa.or_(Call.owner.is_(None), Call.owner == visible_to))
        async with self._db.session() as session:
            recording = await session.scalar(query)
            return _row(recording) if recording is not None else None

    async def call_visible(self, call_id: str, *, visible_to: str | None = None) -> bool:
        query = sa.select(Call.id).where(Call.id == call_id)
        if visible_to is not None:
            query = query.where(sa.or_(Call.owner.is_(None), Call.owner == visible_to))
        async with self._db.session() as session:
            return await session.scalar(query) is not None

    async def forget(self, call_id: str) -> None:
        """The recording's row (its file is gone)."""
        async with self._db.session() as session, session.begin():
            await session.execute(sa.delete(Recording).where(Recording.call_id == call_id))

    async def forget_call(self, call_id: str) -> None:
        """The call's row and everything under it (its recording's file is gone)."""
        async with self._db.session() as session, session.begin():
            for table in (Recording, CallItem, ToolCall):
                await session.execute(sa.delete(table).where(table.call_id == call_id))
            await session.execute(sa.delete(Call).where(Call.id == call_id))

    async def expired_recordings(self, limit: int = 500) -> list[RecordingRow]:
        """Recordings past their expiry, oldest first."""
        query = (sa.select(Recording).where(Recording.expires_at.is_not(None), Recording.expires_at < self._now())
                 .order_by(Recording.expires_at).limit(limit))
        async with self._db.session() as session:
            return [_row(r) for r in await session.scalars(query)]

    async def expired_calls(self, retention_days: Mapping[str, float], limit: int = 500) -> list[str]:
        """Ended calls of agents with a retention that started longer ago than it."""
        now = self._now()
        found: list[str] = []
        async with self._db.session() as session:
            for agent, days in retention_days.items():
                query = (sa.select(Call.id).where(Call.agent == agent, Call.status != "active",
                                                  Call.started_at < now - timedelta(days=days))
                         .order_by(Call.started_at).limit(limit - len(found)))
                found.extend(await session.scalars(query))
                if len(found) >= limit:
                    break
        return found


async def delete_files(*paths: Path) -> None:
    """Delete recording files off the loop; one already gone is no error."""

    def unlink() -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    await asyncio.to_thread(unlink)

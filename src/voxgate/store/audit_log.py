"""The audit log's hash chain: each row holds the hash of the row before it, so an edited, removed or
inserted row shows.

A row's hash is SHA-256 over its canonical JSON (`at`, `actor`, `action`, `subject`, `detail` and the
previous row's hash), hex. The first row's previous hash is `GENESIS`. Rows are appended by the call
store's single committer task (`CallStore.audit`), chained inside the transaction that inserts them
(`chain`), after taking the database's write lock, so two gateways sharing a database cannot fork the
chain; the unique constraint on `prev_hash` refuses a fork anyway. `verify` walks the chain and names the
first row that does not fit; `export` yields the rows as JSON-ready dicts.

What the chain cannot show on its own is the newest rows cut off the end: `verify` reports the head (last
id and hash), which an operator keeps (e.g. with each export) to compare against later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from voxgate.store.database import Database
from voxgate.store.models import AuditEvent

if TYPE_CHECKING:
    from voxgate.agents import AgentConfig
    from voxgate.config import Settings

GENESIS = "0" * 64
# Any constant will do: it only has to be the same for every voxgate process sharing a database.
_APPEND_LOCK_ID = 0x76786175  # "vxau"
_PAGE = 1000


def row_hash(*, at: datetime, actor: str, action: str, subject: str | None, detail: Any, prev_hash: str) -> str:
    """The hash a row with these fields must hold."""
    canonical = json.dumps({"at": at.isoformat(), "actor": actor, "action": action, "subject": subject,
                            "detail": detail, "prev": prev_hash},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def as_stored(detail: Mapping[str, Any] | None) -> Any:
    """`detail` as it reads back from the JSON column (tuples as lists, keys as strings): what is hashed."""
    return None if detail is None else json.loads(json.dumps(detail, allow_nan=False, default=str))


async def chain(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Give `rows` (about to be inserted, in order, in this transaction) their `prev_hash` and `hash`."""
    if connection.dialect.name == "postgresql":
        await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _APPEND_LOCK_ID})
    else:  # a write first takes SQLite's write lock, so the head read next is the head the insert follows
        await connection.execute(sa.update(AuditEvent).where(AuditEvent.id == -1).values(actor=AuditEvent.actor))
    prev = await connection.scalar(sa.select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS
    for row in rows:
        row["detail"] = as_stored(row["detail"])
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(at=row["at"], actor=row["actor"], action=row["action"],
                                      subject=row["subject"], detail=row["detail"], prev_hash=prev)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def configuration_digest(settings: Settings, agents: Mapping[str, AgentConfig]) -> dict[str, Any]:
    """What a start-up's `config.changed` row holds: hashes of the settings (secrets masked: a changed key
    shows as the key list's length) and of each agent's definition."""
    shown = settings.shown()
    shown["api_keys"] = f"{len(settings.api_key_list())} key(s)"
    per_agent = {name: _digest(agent.model_dump(mode="json", exclude={"source"})) for name, agent in agents.items()}
    return {"settings_sha256": _digest(shown), "agents_sha256": _digest(per_agent), "agents": per_agent}


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: `bad_row` (an id) is None when the whole chain holds."""

    rows: int
    head_id: int | None
    head_hash: str
    bad_row: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_row is None


def event_dict(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "at": event.at.isoformat(), "actor": event.actor, "action": event.action,
            "subject": event.subject, "detail": event.detail, "prev_hash": event.prev_hash, "hash": event.hash}


async def _pages(db: Database) -> AsyncIterator[list[AuditEvent]]:
    after = 0
    while True:
        async with db.session() as session:
            page = list(await session.scalars(
                sa.select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(_PAGE)))
        if not page:
            return
        yield page
        after = page[-1].id


async def verify(db: Database) -> Verdict:
    """Walk the chain from its first row; stop at the first row whose hash or link is wrong."""
    prev, count, head_id = GENESIS, 0, None
    async for page in _pages(db):
        for event in page:
            if event.prev_hash != prev:
                return Verdict(count, head_id, prev, event.id, "its prev_hash is not the hash of the row before "
                               "it: a row before it was removed, inserted or rewritten")
            expected = row_hash(at=event.at, actor=event.actor, action=event.action, subject=event.subject,
                                detail=event.detail, prev_hash=prev)
            if event.hash != expected:
                return Verdict(count, head_id, prev, event.id, "its content does not match its hash: it was edited")
            prev, count, head_id = expected, count + 1, event.id
    return Verdict(count, head_id, prev)


async def export(db: Database) -> AsyncIterator[dict[str, Any]]:
    """Every row, oldest first, with its hashes."""
    async for page in _pages(db):
        for event in page:
            yield event_dict(event)

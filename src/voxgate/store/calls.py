"""Call records: every session is a call with its items, tool calls and outcome, plus the audit trail.

A session writes here from its own task while the call is live, so a write never raises and never
waits longer than ``write_timeout_s``: a failing database costs the record (logged, and counted in
``CallStore.failures`` and `voxgate_store_failures_total`), a slow one costs the caller nothing (the
write finishes in the background and is counted in ``CallStore.timeouts`` and
`voxgate_store_slow_writes_total`, not as a loss). Each write returns True once it is committed, False
when it was lost, and None when the caller stopped waiting for it.
Reads (the control API, the dashboard) raise like any other query.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from voxgate.observability import metrics
from voxgate.store.audit_log import chain
from voxgate.store.database import Database, StoreError
from voxgate.store.models import AuditEvent, Call, CallItem, CallTurn, ToolCall, utc_now

log = logging.getLogger(__name__)

Transport = Literal["realtime_ws", "webrtc", "twilio", "telnyx", "sip"]
CallStatus = Literal["active", "completed", "dropped", "transferred", "failed", "drained"]
ItemType = Literal["message", "function_call", "function_call_output"]

# A tool's output is capped before it reaches the row; the tools layer caps harder for the model.
MAX_TOOL_OUTPUT_CHARS = 16_384
TOOL_SUCCESS_STATUS = "completed"
# Values under these detail keys are masked in audit events, whoever forgot to leave them out.
SECRET_DETAIL_KEYS = frozenset({"secret", "key", "api_key", "token", "password", "authorization"})


MAX_WRITES_PER_TRANSACTION = 200
# Under load, at most one transaction per interval: the writes of its first moments join it. Each transaction
# is several round trips to the database's thread or server, costlier than the statements in it; hundreds of
# calls writing a few items per turn otherwise paid one transaction per write (SQLite: ~1 ms of CPU each).
COMMIT_INTERVAL_S = 0.02


@dataclass(frozen=True, slots=True)
class _Write:
    """One row to write: a statement built once per kind of write, and this row's parameters."""

    op: str
    subject: str
    statement: sa.Executable
    params: dict[str, Any]
    done: asyncio.Future[bool]


# Inserts of whole rows, by column name; a run of them goes to the database as one executemany.
_INSERT_CALL = sa.insert(Call)
_INSERT_TOOL_CALL = sa.insert(ToolCall)
_INSERT_AUDIT_EVENT = sa.insert(AuditEvent)
_INSERT_TURN = sa.insert(CallTurn)
# A turn's stages as the record keeps them (observability.latency_budget.STAGES), and its other figures.
TURN_STAGES = ("vad", "transcript", "first_token", "tts_first_audio", "first_audio_sent", "first_audio_heard")


def _runs(batch: list[_Write]) -> list[list[_Write]]:
    """The batch cut where the statement changes: each run is one executemany, and order is kept."""
    runs: list[list[_Write]] = []
    for write in batch:
        if runs and runs[-1][0].statement is write.statement:
            runs[-1].append(write)
        else:
            runs.append([write])
    return runs


class CallNotFoundError(StoreError):
    """A write named a call that was never started."""


class CallStore:
    """Writes and reads call records. ``now`` is the clock for timestamps (tests pass their own)."""

    def __init__(
        self, db: Database, *, now: Callable[[], datetime] = utc_now, write_timeout_s: float = 5.0
    ) -> None:
        self._db = db
        self._now = now
        self._write_timeout_s = write_timeout_s
        self.failures = 0  # writes that were dropped; exported as a metric by the caller
        self.timeouts = 0  # writes the caller stopped waiting for (they go on in the background)
        self._queued: list[_Write] = []
        self._committer: asyncio.Task[None] | None = None
        self._last_commit = -math.inf  # loop time the last transaction began
        self._finishing: set[asyncio.Task[Any]] = set()  # writers whose calls have ended (see finish_later)
        self._upsert_item: sa.Insert | None = None
        self._end_call: sa.Update | None = None

    # -- writes: never raise -------------------------------------------------------------------

    async def start_call(
        self,
        call_id: str,
        *,
        agent: str,
        engine: str,
        transport: Transport | str,
        dialect: Literal["ga", "beta"] | None = None,
        caller: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> bool | None:
        """Open the call record with status ``active``, owned by ``owner`` (a key id; None: the gateway's).
        False if it could not be written."""

        row = {"id": call_id, "agent": agent, "engine": engine, "transport": transport, "dialect": dialect,
               "caller": caller, "started_at": self._now(), "status": "active", "turns": 0, "interruptions": 0,
               "fallthroughs": 0, "buffer_overflow": False,
               "metadata": dict(metadata) if metadata is not None else None, "owner": owner}  # column names
        return await self._write("start_call", call_id, _INSERT_CALL, row)

    async def upsert_item(
        self,
        call_id: str,
        item_id: str,
        *,
        role: str | None,
        type: ItemType | str,
        text: str | None = None,
        audio_ms: float | None = None,
        truncated_at_ms: float | None = None,
        status: str | None = None,
    ) -> bool | None:
        """Insert an item (numbered in arrival order) or update the one with this id.

        On update, fields passed as None keep their stored value, so a transcript completion or a
        truncation only has to name what changed.
        """
        values = {
            "call_id": call_id,
            "item_id": item_id,
            "role": role,
            "type": type,
            "text": text,
            "audio_ms": _whole_ms(audio_ms),
            "truncated_at_ms": _whole_ms(truncated_at_ms),
            "status": status,
            "created_at": self._now(),
        }
        return await self._write("upsert_item", call_id, self._upsert_item_statement(), values)

    def _upsert_item_statement(self) -> sa.Insert:
        """The item upsert, built once: a turn writes several items, and building the statement (alias,
        subquery, ON CONFLICT clause) cost more CPU than running it."""
        if self._upsert_item is None:
            table = CallItem.metadata.tables["call_items"]
            earlier = sa.alias(table)  # aliased so the subquery never correlates with the INSERT
            next_seq = (
                sa.select(sa.func.coalesce(sa.func.max(earlier.c.seq), 0) + 1)
                .where(earlier.c.call_id == sa.bindparam("call_id"))
                .scalar_subquery()
            )
            insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
            columns = ("call_id", "item_id", "role", "type", "text", "audio_ms", "truncated_at_ms", "status",
                       "created_at")
            stmt = insert(table).values({name: sa.bindparam(name) for name in columns} | {"seq": next_seq})
            updatable = ("role", "type", "text", "audio_ms", "truncated_at_ms", "status")
            self._upsert_item = stmt.on_conflict_do_update(
                index_elements=[table.c.call_id, table.c.item_id],
                set_={name: sa.func.coalesce(stmt.excluded[name], table.c[name]) for name in updatable},
            )
        return self._upsert_item

    def _end_call_statement(self) -> sa.Update:
        """Close a call, its duration computed by the database from the stored start (no read first)."""
        if self._end_call is None:
            table = Call.metadata.tables["calls"]
            ended_at = sa.bindparam("b_ended_at", type_=Call.__table__.c.ended_at.type)
            seconds: sa.ColumnElement[Any]
            if self._db.dialect == "postgresql":
                seconds = sa.func.extract("epoch", ended_at - table.c.started_at)
            else:  # SQLite keeps UTC datetimes as text that julianday() reads
                seconds = (sa.func.julianday(ended_at) - sa.func.julianday(table.c.started_at)) * 86400.0
            self._end_call = (
                sa.update(table)
                .where(table.c.id == sa.bindparam("b_call_id"))
                .values(ended_at=ended_at, duration_s=sa.case((seconds < 0, 0.0), else_=seconds),
                        status=sa.bindparam("b_status"), outcome=sa.bindparam("b_outcome"),
                        end_reason=sa.bindparam("b_end_reason"),
                        first_response_ms=sa.bindparam("b_first_response_ms"), turns=sa.bindparam("b_turns"),
                        interruptions=sa.bindparam("b_interruptions"),
                        usage=sa.bindparam("b_usage", type_=table.c.usage.type),
                        cost_usd=sa.bindparam("b_cost_usd"), fallthroughs=sa.bindparam("b_fallthroughs"),
                        buffer_overflow=sa.bindparam("b_buffer_overflow"))
                # metadata given replaces what start_call wrote; none given keeps it
                .values({table.c["metadata"]: sa.func.coalesce(
                    sa.bindparam("b_meta", type_=table.c["metadata"].type), table.c["metadata"])})
            )
        return self._end_call

    async def record_tool_call(
        self,
        call_id: str,
        *,
        tool_call_id: str,
        name: str,
        side: Literal["server", "client"] | str,
        arguments: Any,
        status: str,
        output: str | None,
        duration_ms: float | None,
    ) -> bool | None:
        """Record one tool invocation. ``status == "completed"`` counts as success in ``kpis``."""
        if output is not None and len(output) > MAX_TOOL_OUTPUT_CHARS:
            output = output[:MAX_TOOL_OUTPUT_CHARS] + "…[truncated]"

        row = {"call_id": call_id, "tool_call_id": tool_call_id, "name": name, "side": side,
               "arguments": arguments, "status": status, "output": output, "duration_ms": duration_ms,
               "created_at": self._now()}
        return await self._write("record_tool_call", call_id, _INSERT_TOOL_CALL, row)

    async def record_turn(self, call_id: str, *, seq: int, stages: Mapping[str, float | None], total_ms: float,
                          heard: bool) -> bool | None:
        """One answered turn's latency budget: `stages` in ms by name (TURN_STAGES; None: not reached)."""
        row = {"call_id": call_id, "seq": seq, "kind": "turn", "at": self._now(), "total_ms": total_ms,
               "heard": heard, "stop_ms": None, **{f"{name}_ms": stages.get(name) for name in TURN_STAGES}}
        return await self._write("record_turn", call_id, _INSERT_TURN, row)

    async def record_barge_in(self, call_id: str, *, seq: int, stop_ms: float) -> bool | None:
        """The caller spoke over the agent, whose audio stopped at the caller `stop_ms` after they began."""
        row = {"call_id": call_id, "seq": seq, "kind": "barge_in", "at": self._now(), "total_ms": None,
               "heard": None, "stop_ms": stop_ms, **{f"{name}_ms": None for name in TURN_STAGES}}
        return await self._write("record_barge_in", call_id, _INSERT_TURN, row)

    async def end_call(
        self,
        call_id: str,
        *,
        status: CallStatus | str,
        outcome: str | None = None,
        end_reason: str | None = None,
        first_response_ms: float | None = None,
        turns: int = 0,
        interruptions: int = 0,
        usage: Mapping[str, Any] | None = None,
        cost_usd: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        fallthroughs: int = 0,
        buffer_overflow: bool = False,
    ) -> bool | None:
        """Close the call record: its final status, outcome and figures; duration from start to now;
        `metadata`, when given, replaces the record's (the start's with the transport's additions)."""

        row = {"b_call_id": call_id, "b_ended_at": self._now(), "b_status": status, "b_outcome": outcome,
               "b_end_reason": end_reason, "b_first_response_ms": first_response_ms, "b_turns": turns,
               "b_interruptions": interruptions, "b_usage": dict(usage) if usage is not None else None,
               "b_cost_usd": cost_usd, "b_meta": dict(metadata) if metadata is not None else None,
               "b_fallthroughs": fallthroughs, "b_buffer_overflow": buffer_overflow}
        return await self._write("end_call", call_id, self._end_call_statement(), row)

    async def close_abandoned(self, node: str, reason: str) -> list[str]:
        """Close as ``dropped`` the calls a previous run of ``node`` left ``active`` (it crashed, or was
        killed), so they stop counting as live and skewing the KPIs; returns their ids.

        Only this node's calls (``metadata.node``; rows from before nodes were recorded count as this
        node's): other gateways sharing the database keep theirs. Each ends at its last recorded
        activity (its last item or tool call, else its start), the best guess of when the call died.
        Run before the gateway takes calls.
        """
        async with self._db.session() as session, session.begin():
            active = (await session.scalars(sa.select(Call).where(Call.status == "active"))).all()
            closed: list[str] = []
            for call in active:
                if (call.meta or {}).get("node", node) != node:
                    continue
                last_item = await session.scalar(
                    sa.select(sa.func.max(CallItem.created_at)).where(CallItem.call_id == call.id))
                last_tool = await session.scalar(
                    sa.select(sa.func.max(ToolCall.created_at)).where(ToolCall.call_id == call.id))
                ended_at = max(t for t in (call.started_at, last_item, last_tool) if t is not None)
                call.status = "dropped"
                call.end_reason = reason
                call.ended_at = ended_at
                call.duration_s = max(0.0, (ended_at - call.started_at).total_seconds())
                closed.append(call.id)
        return closed

    async def audit(
        self, actor: str, action: str, subject: str | None = None, detail: Mapping[str, Any] | None = None
    ) -> bool | None:
        """Append to the audit trail, e.g. ``audit("api", "ephemeral_key.issued", key_id, {...})``; the row is
        chained to the one before it as it is committed (store/audit_log.py)."""

        row = {"at": self._now(), "actor": actor, "action": action, "subject": subject,
               "detail": _mask_secrets(detail) if detail is not None else None}
        return await self._write("audit", subject or "", _INSERT_AUDIT_EVENT, row)

    async def audit_configuration(self, node: str, digest: Mapping[str, Any]) -> bool | None:
        """At start-up: a `config.changed` row for `node` when `digest` (audit_log.configuration_digest)
        differs from the one its last run recorded; None when nothing changed."""
        async with self._db.session() as session:
            last = await session.scalar(
                sa.select(AuditEvent.detail).where(AuditEvent.action == "config.changed", AuditEvent.subject == node)
                .order_by(AuditEvent.id.desc()).limit(1))
        if last == dict(digest):
            return None
        return await self.audit("gateway", "config.changed", node, digest)

    async def _write(self, op: str, subject: str, statement: sa.Executable,
                     params: dict[str, Any]) -> bool | None:
        # Writes queue for one committer task (group commit): those that arrive while a transaction is
        # in flight go together in the next, so a busy gateway pays one transaction per batch, not per
        # item, and rows of one kind that queue back to back go in one executemany: one round trip to the
        # database's thread (aiosqlite) or server (asyncpg) for the run, where a statement each would wait
        # for a turn of an event loop busy with hundreds of calls' audio several times over. Neither a
        # stuck database (SQLite waiting out a lock in its thread, PostgreSQL unreachable) nor the caller's
        # cancellation at hang-up cuts a write short: the caller waits at most write_timeout_s, and the
        # record still lands if the database recovers.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._queued.append(_Write(op, subject, statement, params, done))
        if self._committer is None:
            self._committer = loop.create_task(self._commit_queued())
        try:
            return await asyncio.wait_for(asyncio.shield(done), self._write_timeout_s)
        except TimeoutError:
            self.timeouts += 1
            metrics.STORE_SLOW_WRITES.inc()
            log.warning(
                "store: %s for %s not done in %.1f s; finishing in the background",
                op,
                subject,
                self._write_timeout_s,
            )
            return None

    async def _commit_queued(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queued:
                wait = self._last_commit + COMMIT_INTERVAL_S - loop.time()
                if wait > 0 and len(self._queued) < MAX_WRITES_PER_TRANSACTION:
                    await asyncio.sleep(wait)  # a write soon after the last transaction: gather the next few ms
                self._last_commit = loop.time()
                limit = MAX_WRITES_PER_TRANSACTION
                batch, self._queued = self._queued[:limit], self._queued[limit:]
                await self._commit(batch)
        finally:
            self._committer = None

    async def _commit(self, batch: list[_Write]) -> None:
        if len(batch) == 1:
            write = batch[0]
            write.done.set_result(await self._attempt(write))
            return
        try:
            async with self._db.engine.begin() as connection:
                for run in _runs(batch):  # in order: a call's row before its items
                    await self._execute(connection, run[0].statement, [write.params for write in run])
        except Exception:  # a bad write spoils its batch: halve it until the bad one stands alone
            half = len(batch) // 2
            await self._commit(batch[:half])
            await self._commit(batch[half:])
            return
        for write in batch:
            write.done.set_result(True)

    async def _attempt(self, write: _Write) -> bool:
        try:
            async with self._db.engine.begin() as connection:
                await self._execute(connection, write.statement, [write.params])
        except Exception as exc:  # a storage fault must cost this record, never the call
            self.failures += 1
            metrics.STORE_FAILURES.inc()
            log.warning("store: %s for %s dropped (%d so far): %r", write.op, write.subject, self.failures, exc)
            return False
        return True

    async def _execute(self, connection: AsyncConnection, statement: sa.Executable,
                       rows: list[dict[str, Any]]) -> None:
        # On a plain connection, not an ORM session: every write here is a whole-table statement, and a
        # session's unit of work cost more CPU per transaction than the statements in it.
        if statement is _INSERT_AUDIT_EVENT:  # chained here, by the one committer, in the inserting transaction
            await chain(connection, rows)
        result = await connection.execute(statement, rows if len(rows) > 1 else rows[0])
        # An UPDATE of a call that was never started matches no row; in a run, the halving finds which.
        if statement is self._end_call:
            matched = cast(sa.CursorResult[Any], result).rowcount
            if matched != len(rows):
                raise CallNotFoundError(f"{len(rows) - matched} of {len(rows)} calls were never started")

    def finish_later(self, writer: asyncio.Task[Any]) -> None:
        """Keep a writer of an ended call running until `drain`: the call has let go of it."""
        if not writer.done():
            self._finishing.add(writer)
            writer.add_done_callback(self._finishing.discard)

    async def drain(self) -> None:
        """Wait for writes still finishing in the background; call before closing the database."""
        while self._finishing or self._committer is not None:
            if self._finishing:
                await asyncio.gather(*self._finishing, return_exceptions=True)
            if self._committer is not None:
                await asyncio.shield(self._committer)

    # -- reads: raise on failure ---------------------------------------------------------------

    async def get_call(self, call_id: str, *, visible_to: str | None = None) -> dict[str, Any] | None:
        """The call with its items (in order) and tool calls, JSON-ready; None if unknown, or when
        ``visible_to`` (a key id) names a key that does not own it (calls without an owner are everyone's)."""
        async with self._db.session() as session:
            call = await session.get(Call, call_id)
            if call is None or (visible_to is not None and call.owner not in (None, visible_to)):
                return None
            items = await session.scalars(
                sa.select(CallItem).where(CallItem.call_id == call_id).order_by(CallItem.seq, CallItem.id)
            )
            tools = await session.scalars(
                sa.select(ToolCall).where(ToolCall.call_id == call_id).order_by(ToolCall.id)
            )
            record = _call_dict(call)
            record["items"] = [_item_dict(item) for item in items]
            record["tool_calls"] = [_tool_call_dict(tool) for tool in tools]
            timings = list(await session.scalars(
                sa.select(CallTurn).where(CallTurn.call_id == call_id).order_by(CallTurn.seq, CallTurn.id)))
            record["latency"] = [_turn_dict(turn) for turn in timings if turn.kind == "turn"]
            record["barge_ins"] = [{"seq": turn.seq, "at": _iso(turn.at), "stop_ms": turn.stop_ms}
                                   for turn in timings if turn.kind == "barge_in"]
            return record

    async def list_calls(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        agent: str | None = None,
        visible_to: str | None = None,
        transport: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first, without items; with ``visible_to``, only that key's calls and those without an owner;
        started within [``since``, ``until``); ``after``: only those listed after the call with this
        (started_at, id), the position a cursor names (stable while new calls arrive, unlike an offset)."""
        query = (sa.select(Call).where(*_window(since, until, agent, transport, visible_to))
                 .order_by(Call.started_at.desc(), Call.id.desc()))
        if after is not None:
            at, call_id = after
            query = query.where(sa.or_(Call.started_at < at, sa.and_(Call.started_at == at, Call.id < call_id)))
        if status is not None:
            query = query.where(Call.status == status)
        async with self._db.session() as session:
            calls = await session.scalars(query.limit(max(0, limit)).offset(max(0, offset)))
            return [_call_dict(call) for call in calls]

    async def finished_calls(self, since: datetime | None = None, *, until: datetime | None = None,
                             agent: str | None = None, transport: str | None = None,
                             visible_to: str | None = None) -> list[dict[str, Any]]:
        """Every finished call started within [since, until) (a cost report's input), oldest first."""
        query = sa.select(Call).where(Call.status != "active", *_window(since, until, agent, transport, visible_to))
        async with self._db.session() as session:
            return [_call_dict(call) for call in await session.scalars(query.order_by(Call.started_at, Call.id))]

    async def list_audit(
        self, limit: int = 100, offset: int = 0, *, action: str | None = None
    ) -> list[dict[str, Any]]:
        """Audit events, newest first."""
        query = sa.select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        if action is not None:
            query = query.where(AuditEvent.action == action)
        async with self._db.session() as session:
            events = await session.scalars(query.limit(max(0, limit)).offset(max(0, offset)))
            return [
                {
                    "id": e.id,
                    "at": _iso(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "subject": e.subject,
                    "detail": e.detail,
                }
                for e in events
            ]

    async def kpis(self, since: datetime | None = None, *, until: datetime | None = None, agent: str | None = None,
                   transport: str | None = None, visible_to: str | None = None,
                   interruption_stop_ms: float = 500.0) -> dict[str, Any]:
        """Figures over the calls started within [``since``, ``until``) (open ends: no bound), of one
        ``agent`` or ``transport`` when given; with ``visible_to`` (a key id), over that key's calls and those
        without an owner only, as ``list_calls``.

        Rates are over finished calls (not ``active``) and are None when there are none:
        drop rate (status ``dropped``: ended by an error or the transport's loss), task completion (outcome
        ``task_completed``), escalation (status ``transferred`` or outcome ``escalated``), buffer overflows
        (a count). Tool success is the share of server tool calls with status ``completed``; fall-through
        the share of answered turns that got the agent's fallback line; interruption success the share of
        barge-ins whose agent audio stopped at the caller within ``interruption_stop_ms``. Latency
        percentiles (first response, each budget stage) interpolate linearly between ranks.
        """
        chosen = sa.and_(sa.true(), *_window(since, until, agent, transport, visible_to))
        async with self._db.session() as session:
            by_status = {
                status: count
                for status, count in await session.execute(
                    sa.select(Call.status, sa.func.count()).where(chosen).group_by(Call.status)
                )
            }
            finished = sa.and_(chosen, Call.status != "active")
            completed_tasks, escalated, overflows, handle_s, turns, fallthroughs = (
                await session.execute(
                    sa.select(
                        sa.func.count().filter(Call.outcome == "task_completed"),
                        sa.func.count().filter(
                            sa.or_(Call.status == "transferred", Call.outcome == "escalated")
                        ),
                        sa.func.count().filter(Call.buffer_overflow.is_(True)),
                        sa.func.avg(Call.duration_s),
                        sa.func.coalesce(sa.func.sum(Call.turns), 0),
                        sa.func.coalesce(sa.func.sum(Call.fallthroughs), 0),
                    ).where(finished)
                )
            ).one()
            tool_total, tool_ok = (
                await session.execute(
                    sa.select(sa.func.count(), sa.func.count().filter(ToolCall.status == TOOL_SUCCESS_STATUS))
                    .join(Call, Call.id == ToolCall.call_id)
                    .where(chosen, ToolCall.side == "server")  # client tools run outside the gateway
                )
            ).one()
            first_response = sorted(
                ms
                for ms in await session.scalars(sa.select(Call.first_response_ms).where(chosen))
                if ms is not None
            )
            timings = (await session.scalars(
                sa.select(CallTurn).join(Call, Call.id == CallTurn.call_id).where(chosen))).all()
        total = sum(by_status.values())
        ended = total - by_status.get("active", 0)
        answered = [t for t in timings if t.kind == "turn"]
        barge_ins = [t.stop_ms for t in timings if t.kind == "barge_in" and t.stop_ms is not None]
        stopped_in_time = sum(1 for ms in barge_ins if ms <= interruption_stop_ms)
        return {
            "since": _iso(since) if since is not None else None,
            "until": _iso(until) if until is not None else None,
            "agent": agent,
            "transport": transport,
            "calls": total,
            "active": by_status.get("active", 0),
            "by_status": by_status,
            "drop_rate": _ratio(by_status.get("dropped", 0), ended),
            "task_completion_rate": _ratio(completed_tasks, ended),
            "escalation_rate": _ratio(escalated, ended),
            "buffer_overflows": overflows,
            "average_handle_time_s": float(handle_s) if handle_s is not None else None,
            "tool_calls": tool_total,
            "tool_success_rate": _ratio(tool_ok, tool_total),
            "turns": int(turns),
            "fallthrough_rate": _ratio(int(fallthroughs), int(turns)),
            "barge_ins": len(barge_ins),
            "interruption_success_rate": _ratio(stopped_in_time, len(barge_ins)),
            "first_response_ms": _spread(first_response),
            "latency_histogram": _histogram([t.total_ms for t in answered if t.total_ms is not None]),
            "latency_budget_ms": {
                name: _spread(sorted(v for t in answered if (v := getattr(t, f"{name}_ms")) is not None))
                for name in (*TURN_STAGES, "total")
            },
        }


def _window(since: datetime | None, until: datetime | None, agent: str | None, transport: str | None,
            visible_to: str | None) -> list[sa.ColumnElement[bool]]:
    """The conditions that pick a window of calls; another key's calls are not this key's business."""
    conditions: list[sa.ColumnElement[bool]] = []
    if since is not None:
        conditions.append(Call.started_at >= since)
    if until is not None:
        conditions.append(Call.started_at < until)
    if agent is not None:
        conditions.append(Call.agent == agent)
    if transport is not None:
        conditions.append(Call.transport == transport)
    if visible_to is not None:
        conditions.append(sa.or_(Call.owner.is_(None), Call.owner == visible_to))
    return conditions


# The dashboard's latency histogram: answered turns by total latency, in 200 ms bins, the last one open.
HISTOGRAM_EDGES_MS = tuple(range(0, 3001, 200))


def _histogram(values: Sequence[float]) -> dict[str, Any]:
    counts = [0] * len(HISTOGRAM_EDGES_MS)
    for value in values:
        counts[min(int(value // 200), len(counts) - 1)] += 1
    return {"bins_from_ms": list(HISTOGRAM_EDGES_MS), "counts": counts}


def _spread(ordered: Sequence[float]) -> dict[str, Any]:
    """Count and percentiles of sorted values."""
    return {"count": len(ordered), "p50": percentile(ordered, 0.50), "p95": percentile(ordered, 0.95),
            "p99": percentile(ordered, 0.99)}


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of sorted values, interpolating between ranks; None for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _whole_ms(ms: float | None) -> int | None:
    return None if ms is None else round(ms)


def _mask_secrets(detail: Mapping[str, Any]) -> dict[str, Any]:
    masked: dict[str, Any] = {}
    for key, value in detail.items():
        if str(key).lower() in SECRET_DETAIL_KEYS:
            masked[key] = "****"
        elif isinstance(value, Mapping):
            masked[key] = _mask_secrets(value)
        else:
            masked[key] = value
    return masked


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _call_dict(call: Call) -> dict[str, Any]:
    return {
        "id": call.id,
        "agent": call.agent,
        "engine": call.engine,
        "transport": call.transport,
        "dialect": call.dialect,
        "caller": call.caller,
        "started_at": _iso(call.started_at),
        "ended_at": _iso(call.ended_at),
        "status": call.status,
        "outcome": call.outcome,
        "end_reason": call.end_reason,
        "first_response_ms": call.first_response_ms,
        "turns": call.turns,
        "interruptions": call.interruptions,
        "duration_s": call.duration_s,
        "usage": call.usage,
        "cost_usd": call.cost_usd,
        "fallthroughs": call.fallthroughs,
        "buffer_overflow": call.buffer_overflow,
        "metadata": call.meta,
    }


def _turn_dict(turn: CallTurn) -> dict[str, Any]:
    return {"seq": turn.seq, "at": _iso(turn.at), "total_ms": turn.total_ms, "heard": turn.heard,
            "stages": {name: getattr(turn, f"{name}_ms") for name in TURN_STAGES}}


def _item_dict(item: CallItem) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "seq": item.seq,
        "role": item.role,
        "type": item.type,
        "text": item.text,
        "audio_ms": item.audio_ms,
        "truncated_at_ms": item.truncated_at_ms,
        "status": item.status,
        "created_at": _iso(item.created_at),
    }


def _tool_call_dict(tool: ToolCall) -> dict[str, Any]:
    return {
        "tool_call_id": tool.tool_call_id,
        "name": tool.name,
        "side": tool.side,
        "arguments": tool.arguments,
        "status": tool.status,
        "output": tool.output,
        "duration_ms": tool.duration_ms,
        "created_at": _iso(tool.created_at),
    }

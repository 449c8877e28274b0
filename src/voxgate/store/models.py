"""The tables: one row per call with its items and tool calls, the audit trail, and API keys.

The schema itself is created by the alembic migrations in ``migrations/versions``; these classes must
describe the same thing (``tests/integration/test_store.py`` compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    """The default clock for stored timestamps."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out: SQLite keeps no offset, PostgreSQL may answer in another zone.

    A naive datetime handed in is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Python None is SQL NULL, not the JSON literal null, so "IS NULL" means "not given".
JSONValue = sa.JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Call(Base):
    """One session from connect to hang-up, whatever the transport."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)  # the session id, "sess_..."
    agent: Mapped[str] = mapped_column(sa.String)
    engine: Mapped[str] = mapped_column(sa.String)
    transport: Mapped[str] = mapped_column(sa.String)  # realtime_ws | webrtc | twilio | telnyx | sip
    dialect: Mapped[str | None] = mapped_column(sa.String)  # ga | beta | None (phone calls)
    caller: Mapped[str | None] = mapped_column(sa.String)  # from number or remote address
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String, index=True)  # active|completed|dropped|transferred|failed
    outcome: Mapped[str | None] = mapped_column(sa.String)  # free text: task_completed, escalated, hangup...
    end_reason: Mapped[str | None] = mapped_column(sa.Text)
    first_response_ms: Mapped[float | None] = mapped_column(sa.Float)
    turns: Mapped[int] = mapped_column(sa.Integer, default=0)
    interruptions: Mapped[int] = mapped_column(sa.Integer, default=0)
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    usage: Mapped[Any] = mapped_column(JSONValue, nullable=True)  # token usage as the engine reports it
    cost_usd: Mapped[float | None] = mapped_column(sa.Float)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[Any] = mapped_column("metadata", JSONValue, nullable=True)
    # The key that opened the call (for an ephemeral key, the key that minted it); None: the gateway's own
    # (phone calls, the dev console), which every API key sees.
    owner: Mapped[str | None] = mapped_column(sa.String, index=True)
    # Turns answered with the agent's fallback line (it did not understand), and whether the call was cut
    # because its peer stopped reading (an audio buffer overflow): two of the operators' KPIs.
    fallthroughs: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    buffer_overflow: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class CallTurn(Base):
    """One answered turn's latency budget by stage (ms; None: that stage never happened), or one barge-in
    (`kind` "barge_in", with `stop_ms`). See observability/latency_budget.py for the stages."""

    __tablename__ = "call_turns"
    __table_args__ = (sa.Index("ix_call_turns_call_id_seq", "call_id", "seq"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(sa.String, sa.ForeignKey("calls.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(sa.Integer)  # order within the call, turns and barge-ins together
    kind: Mapped[str] = mapped_column(sa.String)  # turn | barge_in
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    vad_ms: Mapped[float | None] = mapped_column(sa.Float)
    transcript_ms: Mapped[float | None] = mapped_column(sa.Float)
    first_token_ms: Mapped[float | None] = mapped_column(sa.Float)
    tts_first_audio_ms: Mapped[float | None] = mapped_column(sa.Float)
    first_audio_sent_ms: Mapped[float | None] = mapped_column(sa.Float)
    first_audio_heard_ms: Mapped[float | None] = mapped_column(sa.Float)
    total_ms: Mapped[float | None] = mapped_column(sa.Float)  # end of speech to first audio heard (or sent)
    heard: Mapped[bool | None] = mapped_column(sa.Boolean)  # total_ms ends at the caller's ear
    stop_ms: Mapped[float | None] = mapped_column(sa.Float)  # barge-in: caller's speech to agent silenced


class CallItem(Base):
    """A conversation item (message, function call or its output); updated on truncation and transcripts."""

    __tablename__ = "call_items"
    __table_args__ = (
        sa.UniqueConstraint("call_id", "item_id"),
        sa.Index("ix_call_items_call_id_seq", "call_id", "seq"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(sa.String, sa.ForeignKey("calls.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(sa.String)  # "item_..."
    seq: Mapped[int] = mapped_column(sa.Integer)  # order of arrival within the call, from 1
    role: Mapped[str | None] = mapped_column(sa.String)
    type: Mapped[str] = mapped_column(sa.String)  # message | function_call | function_call_output
    text: Mapped[str | None] = mapped_column(sa.Text)  # transcript or text, redacted by the caller
    audio_ms: Mapped[int | None] = mapped_column(sa.Integer)
    truncated_at_ms: Mapped[int | None] = mapped_column(sa.Integer)
    status: Mapped[str | None] = mapped_column(sa.String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ToolCall(Base):
    """One tool invocation, server- or client-side, with redacted arguments and capped output."""

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(sa.String, sa.ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    tool_call_id: Mapped[str] = mapped_column(sa.String)  # the model's "call_..." id
    name: Mapped[str] = mapped_column(sa.String)
    side: Mapped[str] = mapped_column(sa.String)  # server | client
    arguments: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    status: Mapped[str] = mapped_column(sa.String)  # "completed" is success; anything else is not
    output: Mapped[str | None] = mapped_column(sa.Text)
    duration_ms: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Recording(Base):
    """A call's audio file on disk (the agent's `recording`), until its retention ends or it is deleted."""

    __tablename__ = "recordings"

    call_id: Mapped[str] = mapped_column(sa.String, sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(sa.String)  # the file, absolute
    format: Mapped[str] = mapped_column(sa.String)  # opus | wav
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_s: Mapped[float] = mapped_column(sa.Float)
    bytes: Mapped[int] = mapped_column(sa.Integer)
    # The silenced spans ([start_s, end_s]) and the caller's consent, as the call record has them.
    meta: Mapped[Any] = mapped_column("metadata", JSONValue, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)  # None: kept until deleted


class AuditEvent(Base):
    """Who did what to which subject. Never holds a secret. Append-only: each row is chained to the one
    before it by hash (store/audit_log.py), so an edited or removed row shows."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.UniqueConstraint("prev_hash"),)  # one successor per row: the chain cannot fork

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(sa.String)
    action: Mapped[str] = mapped_column(sa.String, index=True)  # key.created, ephemeral_key.issued, ...
    subject: Mapped[str | None] = mapped_column(sa.String)
    detail: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))  # the hash of the row before; GENESIS for the first
    hash: Mapped[str] = mapped_column(sa.String(64))  # sha256 over this row's fields and prev_hash


class ApiKey(Base):
    """An API key or an ephemeral key; only the SHA-256 of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String)
    prefix: Mapped[str] = mapped_column(sa.String)  # first characters of the secret, for display
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)  # sha256 hex of the secret
    kind: Mapped[str] = mapped_column(sa.String)  # api | ephemeral
    scopes: Mapped[Any] = mapped_column(sa.JSON, nullable=False)  # list of scope names
    session_config: Mapped[Any] = mapped_column(JSONValue, nullable=True)  # what an ephemeral key may open
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(sa.String)  # an ephemeral key's minter: its calls belong to it
    agent: Mapped[str | None] = mapped_column(sa.String)  # the agent an ephemeral key may open a session with
    roles: Mapped[Any] = mapped_column(sa.JSON, nullable=False)  # role names (voxgate/roles.py)

"""The operators' view: each turn's latency budget and each barge-in, fall-throughs and buffer overflows.

Revision ID: 0003_operators
Revises: 0005_compliance_media
Create Date: 2026-12-05

Written out by hand, as 0001, so this step stays what it was when later revisions change the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_operators"
down_revision: str | None = "0005_compliance_media"  # re-chained when main (with 0005) was merged in
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("fallthroughs", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("calls", sa.Column("buffer_overflow", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "call_turns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in (
            "vad_ms", "transcript_ms", "first_token_ms", "tts_first_audio_ms", "first_audio_sent_ms",
            "first_audio_heard_ms", "total_ms")),
        sa.Column("heard", sa.Boolean(), nullable=True),
        sa.Column("stop_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name="fk_call_turns_call_id_calls", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_call_turns"),
    )
    op.create_index("ix_call_turns_call_id_seq", "call_turns", ["call_id", "seq"])
    op.create_index("ix_call_turns_at", "call_turns", ["at"])


def downgrade() -> None:
    op.drop_index("ix_call_turns_at", table_name="call_turns")
    op.drop_index("ix_call_turns_call_id_seq", table_name="call_turns")
    op.drop_table("call_turns")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("buffer_overflow")
        batch.drop_column("fallthroughs")

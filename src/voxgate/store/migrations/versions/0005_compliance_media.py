"""Call recordings: one file per recorded call, with its format, size, silenced spans, consent and expiry.

Revision ID: 0005_compliance_media
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_compliance_media"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name="fk_recordings_call_id_calls", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id", name="pk_recordings"),
    )
    op.create_index("ix_recordings_expires_at", "recordings", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_recordings_expires_at", table_name="recordings")
    op.drop_table("recordings")

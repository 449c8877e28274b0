"""Calls belong to the key that opened them; ephemeral keys remember the key that minted them and their agent.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Calls recorded before this revision, and phone calls (no key opens them), have no owner: every API key
sees them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("owner", sa.String(), nullable=True))
    op.create_index("ix_calls_owner", "calls", ["owner"])
    op.add_column("api_keys", sa.Column("owner", sa.String(), nullable=True))
    op.add_column("api_keys", sa.Column("agent", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("agent")
        batch.drop_column("owner")
    op.drop_index("ix_calls_owner", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("owner")

"""The audit log becomes a hash chain; API keys get roles.

Revision ID: 0004_compliance_records
Revises: 0002
Create Date: 2026-12-05

Audit rows written before this revision are chained here, oldest first, so `voxgate audit verify`
checks them too. Keys stored before roles existed could do everything: they become admin keys.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from voxgate.store.audit_log import GENESIS, as_stored, row_hash
from voxgate.store.models import UTCDateTime

revision = "0004_compliance_records"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_EVENTS = sa.table("audit_events", sa.column("id", sa.Integer()), sa.column("at", UTCDateTime()),
                   sa.column("actor", sa.String()), sa.column("action", sa.String()),
                   sa.column("subject", sa.String()), sa.column("detail", sa.JSON(none_as_null=True)),
                   sa.column("prev_hash", sa.String()), sa.column("hash", sa.String()))


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    bind = op.get_bind()
    prev = GENESIS
    for event in bind.execute(sa.select(_EVENTS).order_by(_EVENTS.c.id)).all():
        detail = as_stored(event.detail)
        digest = row_hash(at=event.at, actor=event.actor, action=event.action, subject=event.subject,
                          detail=detail, prev_hash=prev)
        bind.execute(sa.update(_EVENTS).where(_EVENTS.c.id == event.id).values(prev_hash=prev, hash=digest))
        prev = digest
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_audit_events_prev_hash", ["prev_hash"])

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("roles", sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE api_keys SET roles = '[\"admin\"]'"))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("roles", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("roles")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_prev_hash", type_="unique")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")

"""Alembic environment: migrations run on the connection that ``Database.upgrade()`` hands over.

There is no alembic.ini; ``voxgate.store.database`` builds the alembic config in code, opens the
(async) connection and runs alembic inside it, so the same path serves SQLite and PostgreSQL.
"""

from __future__ import annotations

from alembic import context

from voxgate.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("voxgate migrations run through voxgate.store.database.Database.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

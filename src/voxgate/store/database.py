"""The database connection: an async SQLAlchemy engine for SQLite (default) or PostgreSQL.

    db = Database("sqlite+aiosqlite:///./voxgate.db")
    await db.connect()
    await db.upgrade()          # alembic migrations to head; cheap when already there
    async with db.session() as session: ...
    await db.aclose()

Plain ``sqlite:///`` and ``postgresql://`` (or ``postgres://``) URLs are accepted and get the async
drivers (aiosqlite, asyncpg).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
# Any constant will do: it only has to be the same for every voxgate process sharing a database.
_MIGRATION_LOCK_ID = 0x766F7867  # "voxg"


class StoreError(Exception):
    """The storage layer could not do what was asked."""


class DatabaseClosedError(StoreError):
    """The database is not connected (``connect()`` not called yet, or ``aclose()`` already was)."""


def async_url(url: str) -> URL:
    """Parse a database URL and pick the async driver for its backend; only SQLite and PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use a sqlite:// or postgresql:// URL")
    if "+" not in parsed.drivername:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    elif parsed.drivername not in _ASYNC_DRIVERS.values():
        raise ValueError(
            f"unsupported driver {parsed.drivername!r}: use sqlite+aiosqlite or postgresql+asyncpg"
        )
    return parsed


class Database:
    """One async engine and its session factory, plus schema migrations."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = async_url(url)
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise DatabaseClosedError("database is not connected")
        return self._engine

    async def connect(self) -> None:
        """Create the engine and check the database answers. Does nothing when already connected."""
        if self._engine is not None:
            return
        engine_args: dict[str, Any] = {"echo": self._echo, "pool_pre_ping": self.dialect == "postgresql"}
        if self.dialect == "sqlite":
            _make_parent_dir(self.url)
        engine = create_async_engine(self.url, **engine_args)
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _configure_sqlite)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def upgrade(self) -> None:
        """Run the migrations up to head. Safe on every start, and from several processes at once."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Two gateways starting together would both try to create the tables; the second waits
                # here, then finds the schema at head. Released when this transaction ends.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            await conn.run_sync(_upgrade_to_head)

    def session(self) -> AsyncSession:
        """A new session, to be used as ``async with db.session() as session``."""
        if self._sessions is None:
            raise DatabaseClosedError("database is not connected")
        return self._sessions()

    async def aclose(self) -> None:
        """Close every pooled connection. Sessions asked for afterwards raise ``DatabaseClosedError``."""
        engine, self._engine, self._sessions = self._engine, None, None
        if engine is not None:
            await engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (no ini file), pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def _upgrade_to_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _make_parent_dir(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the dashboard read while calls write; SQLite leaves foreign keys off unless asked.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: a crash may lose the last commit only
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()

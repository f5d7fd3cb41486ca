"""Database engine, sessions and URL handling for SQLite (development) and PostgreSQL (production)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session

from core.models import Base
from core.settings import DatabaseSettings

# The database is unreachable, the connection broke, the pool had no connection free within DB_POOL_TIMEOUT_S, or
# a statement ran past DB_STATEMENT_TIMEOUT_MS (all as SQLAlchemy raises them): the database cannot answer now.
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeoutError)
# Worth waiting out (core.retry), never a bad row.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE_ERRORS, OSError)

# SQLSTATEs (PostgreSQL appendix A): query_canceled, what statement_timeout raises; unique_violation.
_QUERY_CANCELED = "57014"
_UNIQUE_VIOLATION = "23505"
# sqlite3's message for a unique or primary key violation: "UNIQUE constraint failed: machine.site, machine.code",
# or "UNIQUE constraint failed: index 'name'" for a unique index on expressions.
_SQLITE_UNIQUE = re.compile(
    r"UNIQUE constraint failed: (?:(?P<columns>\w+\.\w+(?:, \w+\.\w+)*)|index '(?P<index>\w+)')"
)


def _parse(url: str | URL) -> URL:
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    """True when the URL points at SQLite."""
    return _parse(url).get_backend_name() == "sqlite"


def async_url(url: str | URL) -> URL:
    """The URL with the async driver the app uses (aiosqlite or psycopg 3)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed.set(drivername="postgresql+psycopg")


def sync_url(url: str | URL) -> URL:
    """The URL with a blocking driver, for Alembic and maintenance commands."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    return parsed.set(drivername="postgresql+psycopg")


def ensure_sqlite_folder(url: str | URL) -> None:
    """Create the folder of a SQLite file so a first run needs no manual step."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers proceed while the writer commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def install_sqlite_pragmas(engine: Engine) -> None:
    """Turn on foreign keys and WAL for every new SQLite connection of this engine."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def _postgres_connect_args(url: URL, settings: DatabaseSettings) -> dict[str, Any]:
    # Startup options, set by the server before the first statement: no transaction to roll them back, and they
    # hold on every connection the pool makes. Options already in the URL are kept.
    if not settings.db_statement_timeout_ms:
        return {}
    given = url.query.get("options")
    options = [given] if isinstance(given, str) else list(given or ())
    return {"options": " ".join([*options, f"-c statement_timeout={settings.db_statement_timeout_ms}"])}


def create_engine_from_settings(settings: DatabaseSettings) -> AsyncEngine:
    """One async engine per process, with pool settings and the statement timeout for PostgreSQL."""
    url = async_url(settings.database_url)
    ensure_sqlite_folder(url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, echo=settings.db_echo)
    else:
        engine = create_async_engine(
            url,
            echo=settings.db_echo,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_s,
            pool_recycle=settings.db_pool_recycle_s,
            # No round trip per checkout: a connection the server dropped (a restart, a failover) fails its first
            # statement, which invalidates every connection of the pool older than it; that request answers 503
            # with Retry-After and the next gets new connections (tests/api/test_failure_modes.py).
            pool_pre_ping=False,
            connect_args=_postgres_connect_args(url, settings),
        )
    install_sqlite_pragmas(engine.sync_engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


class ReadOnlyViolation(RuntimeError):
    """A read-only session was asked to write: a bug in the route, not a client error."""


class _ReadOnlySession(Session):
    """The sync session under a read-only AsyncSession."""


@event.listens_for(_ReadOnlySession, "before_flush")
def _refuse_writes(session: Session, flush_context: object, instances: object) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlyViolation("a read-only request tried to write")


@event.listens_for(_ReadOnlySession, "do_orm_execute")
def _refuse_statements(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyViolation("a read-only request tried to write")


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession] | None:
    """Sessions for requests that only read, on PostgreSQL: in autocommit, so a request costs no BEGIN and COMMIT
    round trips (each statement sees the latest committed data). None on SQLite, where a transaction costs no
    round trip. A write through such a session (an ORM flush, an insert, update or delete statement) raises
    ReadOnlyViolation rather than committing statement by statement. Each statement sees what was committed when it
    ran: a list and its count may come from different moments."""
    if engine.dialect.name != "postgresql":
        return None
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        expire_on_commit=False,
        autoflush=True,
        sync_session_class=_ReadOnlySession,
    )


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session and one transaction: committed when the block succeeds, rolled back otherwise."""
    async with factory() as session, session.begin():
        yield session


def is_statement_timeout(error: BaseException) -> bool:
    """True when PostgreSQL cancelled the statement (DB_STATEMENT_TIMEOUT_MS ran out)."""
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) == _QUERY_CANCELED


@dataclass(frozen=True)
class UniqueViolation:
    """What a unique or primary key constraint refused: the constraint's name and its table and columns."""

    constraint: str | None
    table: str | None
    columns: tuple[str, ...]


def _unique_keys() -> dict[str, tuple[str, tuple[str, ...]]]:
    # The models name every constraint and index (core.models.base.NAMING_CONVENTION); the migrations use those names.
    keys: dict[str, tuple[str, tuple[str, ...]]] = {}
    for table in Base.metadata.tables.values():
        unique = [c for c in table.constraints if isinstance(c, UniqueConstraint | PrimaryKeyConstraint)]
        for key in [*unique, *(index for index in table.indexes if index.unique)]:
            if key.name:
                keys[str(key.name)] = (table.name, tuple(column.name for column in key.columns))
    return keys


def unique_violation(error: IntegrityError) -> UniqueViolation | None:
    """The unique key a statement broke, read from the driver's error; None for other integrity errors."""
    keys = _unique_keys()
    orig = error.orig
    if getattr(orig, "sqlstate", None) == _UNIQUE_VIOLATION:
        # psycopg: PostgreSQL names the constraint (and no column) in the error's diagnostics.
        diag = getattr(orig, "diag", None)
        name = getattr(diag, "constraint_name", None)
        table, columns = keys.get(name or "", (getattr(diag, "table_name", None), ()))
        return UniqueViolation(constraint=name, table=table, columns=columns)
    match = _SQLITE_UNIQUE.search(str(orig))
    if match is None:
        return None
    if match["index"]:
        table, columns = keys.get(match["index"], (None, ()))
        return UniqueViolation(constraint=match["index"], table=table, columns=columns)
    qualified = [item.partition(".") for item in match["columns"].split(", ")]
    table = qualified[0][0]
    columns = tuple(column for _, _, column in qualified)
    name = next((key for key, found in keys.items() if found == (table, columns)), None)
    return UniqueViolation(constraint=name, table=table, columns=columns)

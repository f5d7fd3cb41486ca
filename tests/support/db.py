"""The test database as a test and the apps under test reach it, and the two ways a test leaves it empty again.

`rolled_back` (the default for API tests): the test and its apps share one connection whose outer transaction is
rolled back at the end; every request's transaction and every write of the test is a SAVEPOINT inside it.
`committed`: everything is committed for real and every table is emptied afterwards, for tests whose rows must be
seen by other connections (a served app's background polling, concurrent requests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, event, exists, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from api.context import context_of
from core.db import session_factory, transaction
from core.downtime import DEFAULT_REASONS
from core.models import Base, LossReason
from core.schema import SEEDED_TABLES

# Behaviour that does not depend on the SQL dialect (who may call a route, what an error or a header looks like)
# is tested once, on PostgreSQL as production runs it: a module marks itself with this (tests/conftest.py gives its
# database tests PostgreSQL only). What depends on the dialect (queries, time zones, constraints, locking, text
# limits) runs on both databases.
DIALECT_FREE = pytest.mark.dialect_free


async def empty_tables(engine: AsyncEngine) -> None:
    """Delete every row of every table (children first), leaving the database as the migrations made it: with the
    default loss reasons they seed."""
    async with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(delete(table))
        await connection.execute(
            insert(LossReason),
            [
                {"code": r.code, "category": r.category, "label_tr": r.label_tr, "label_en": r.label_en}
                for r in DEFAULT_REASONS
            ],
        )


async def tables_with_rows(connection: AsyncConnection) -> list[str]:
    """The tables that hold any row (one statement), but for those the migrations fill."""
    tables = [table for table in Base.metadata.sorted_tables if table.name not in SEEDED_TABLES]
    found = (await connection.execute(select(*(exists().select_from(table) for table in tables)))).one()
    return [table.name for table, has_rows in zip(tables, found, strict=True) if has_rows]


@dataclass(frozen=True)
class Database:
    """One test's database: sessions and connections for the test's own rows, and how an app is bound to it."""

    url: str
    sessions: async_sessionmaker[AsyncSession]
    _begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]]
    # Rolled back: apps must use the test's connection, or they would not see the test's rows (nor it theirs).
    _shared: bool

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a transaction of its own: committed when the block succeeds, rolled back otherwise."""
        return transaction(self.sessions)

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection in a transaction of its own, for Core statements (bulk inserts, updates)."""
        return self._begin()

    def bind(self, app: FastAPI) -> None:
        """Make the app's requests read and write where the test does."""
        if self._shared:
            context = context_of(app)
            context.session_factory = self.sessions
            context.read_session_factory = None  # reads too, inside the test's transaction


def committed(engine: AsyncEngine, url: str) -> Database:
    """Real commits on `engine` (apps keep their own engines); the caller empties the tables afterwards."""
    return Database(url=url, sessions=session_factory(engine), _begin=engine.begin, _shared=False)


@asynccontextmanager
async def rolled_back(engine: AsyncEngine, url: str) -> AsyncIterator[Database]:
    """One connection in an outer transaction that is rolled back at the end; `engine` must use `savepoints`.

    Everything runs on that one connection, one statement after another: requests of a test must not run
    concurrently (asyncio.gather); such tests use `committed`.
    """
    if engine.dialect.name == "sqlite" and not event.contains(engine.sync_engine, "begin", _begin):
        raise ValueError("on SQLite the engine must be made with `savepoints(engine)`, or nothing is rolled back")
    async with engine.connect() as connection:
        outer = await connection.begin()

        @asynccontextmanager
        async def begin() -> AsyncIterator[AsyncConnection]:
            async with connection.begin_nested():
                yield connection

        sessions = async_sessionmaker(
            bind=connection, expire_on_commit=False, autoflush=True, join_transaction_mode="create_savepoint"
        )
        try:
            yield Database(url=url, sessions=sessions, _begin=begin, _shared=True)
        finally:
            await outer.rollback()
        # Rows here would have escaped the rollback (a RELEASE that committed, see `savepoints`): fail loudly.
        left = await tables_with_rows(connection)
        await connection.rollback()
        if left:
            raise AssertionError(f"rows outlived the test's rollback in {left}")


def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3's legacy mode opens transactions by itself, but not for SAVEPOINT: the first SAVEPOINT would then
    # start a transaction of its own, and its RELEASE would commit, outside the rollback (SQLAlchemy's SQLite
    # documentation, "Enabling Non-Legacy SQLite Transactional Modes"). The BEGIN comes from `_begin` instead.
    dbapi_connection.isolation_level = None


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def savepoints(engine: AsyncEngine) -> AsyncEngine:
    """Let `engine`'s transactions hold SAVEPOINTs on SQLite as they do on PostgreSQL (nothing to do there)."""
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _no_driver_transactions)
        event.listen(engine.sync_engine, "begin", _begin)
    return engine

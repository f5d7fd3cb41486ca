"""Shared fixtures: real databases (SQLite and a PostgreSQL the session starts), the app, actors.

Fixtures only; what tests import lives in tests/support.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine_from_settings
from core.logging import configure_logging
from core.schema import upgrade
from core.settings import DatabaseSettings, Environment, LogSettings
from tests.support.api import Api, make_settings, running_api
from tests.support.db import Database, committed, empty_tables, rolled_back, savepoints
from tests.support.postgres import PostgresServer, running_postgres

pytest_plugins = ["tests.support.hangs"]

BACKENDS = ("sqlite", "postgres")
TIERS = (*BACKENDS, "mosquitto", "timescale", "modbus", "opcua", "nodeopcua", "sparkplug", "browser")


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A `dialect_free` test that uses a database gets PostgreSQL only (see tests/support/db.py DIALECT_FREE):
    a parametrize mark wins over the fixture's own params."""
    if metafunc.definition.get_closest_marker("dialect_free") and "database_url" in metafunc.fixturenames:
        metafunc.definition.add_marker(pytest.mark.parametrize("database_url", ["postgres"], indirect=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the database it runs on, so the summary can count each tier."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        backend = params.get("database_url") or params.get("empty_database_url")
        if backend in BACKENDS:
            item.add_marker(getattr(pytest.mark, backend))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many tests ran on each real service, so a missing tier shows in the summary."""
    terminalreporter.section("service tiers")
    for tier in TIERS:
        tally = {
            outcome: sum(
                1 for report in terminalreporter.stats.get(outcome, []) if tier in getattr(report, "keywords", {})
            )
            for outcome in ("passed", "failed", "error", "skipped")
        }
        text = ", ".join(f"{count} {outcome}" for outcome, count in tally.items() if count) or "none ran"
        terminalreporter.write_line(f"{tier}: {text}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session; if it cannot start, the tests that need it fail (never skip)."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database of each kind; each test leaves it empty again (see `database` and `engine`)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'shopfloor.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.fresh_database("shopfloor_api")
    upgrade(url)
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind, of its own for one test (no migrations run)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database(f"empty_{os.urandom(4).hex()}")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database whose commits are real; every table is emptied after the test."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=database_url))
    try:
        yield engine
    finally:
        await empty_tables(engine)
        await engine.dispose()


@pytest.fixture(scope="session")
async def savepoint_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The engine of the `database` fixture: one connection per test, whose transactions hold SAVEPOINTs."""
    engine = savepoints(create_engine_from_settings(DatabaseSettings(database_url=database_url)))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def database(savepoint_engine: AsyncEngine, database_url: str) -> AsyncIterator[Database]:
    """The test database for one test and its apps; everything they write is rolled back afterwards."""
    async with rolled_back(savepoint_engine, database_url) as database:
        yield database


@pytest.fixture
def committed_database(engine: AsyncEngine, database_url: str) -> Database:
    """The test database with real commits, for rows other connections must see; emptied afterwards."""
    return committed(engine, database_url)


@pytest.fixture
async def api(database: Database) -> AsyncIterator[Api]:
    """The app under test on each database backend; what the test writes is rolled back afterwards."""
    async with running_api(database, make_settings(database.url)) as api:
        yield api


@pytest.fixture
async def committed_api(committed_database: Database) -> AsyncIterator[Api]:
    """The app under test with real commits (other apps and connections see its rows); emptied afterwards."""
    async with running_api(committed_database, make_settings(committed_database.url)) as api:
        yield api


@pytest.fixture
def tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so no `.env` of the developer leaks into settings tests."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    """The processes' own logging configuration, so tests see the events they would."""
    configure_logging(LogSettings(log_level="INFO", log_format="console"), Environment.TEST)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def postgres_only_url(postgres_server: PostgresServer) -> str:
    """A migrated PostgreSQL database for tests that only make sense there (row locks, concurrency)."""
    url = postgres_server.fresh_database("shopfloor_pg_only")
    upgrade(url)
    return url


@pytest.fixture
async def postgres_api(postgres_only_url: str) -> AsyncIterator[Api]:
    """The app on PostgreSQL only, with real commits (concurrent requests need their own connections)."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=postgres_only_url))
    try:
        async with running_api(committed(engine, postgres_only_url), make_settings(postgres_only_url)) as api:
            yield api
    finally:
        await empty_tables(engine)
        await engine.dispose()

"""Shared fixtures: real databases (SQLite and a PostgreSQL the session starts), the app, actors."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from core.db import create_engine_from_settings, session_factory, transaction
from core.logging import configure_logging
from core.models import Role, UserAccount
from core.schema import upgrade
from core.security import PasswordHasher
from core.settings import (
    ApiProcessSettings,
    AuthSettings,
    DatabaseSettings,
    Environment,
    LogSettings,
    PasswordSettings,
    RuntimeSettings,
)
from tests.support.db import empty_tables
from tests.support.postgres import PostgresServer, running_postgres

BACKENDS = ("sqlite", "postgres")
TIERS = (*BACKENDS, "mosquitto", "timescale", "modbus", "opcua", "browser")
TEST_PASSWORD = "correct-horse-battery"
# Cheap hashing keeps the suite fast; production uses the settings' defaults.
TEST_PASSWORDS = PasswordSettings(argon2_time_cost=1, argon2_memory_kib=1024)


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


def _fresh_postgres_database(server: PostgresServer, name: str) -> str:
    with psycopg.connect(server.url(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database of each kind; each test leaves it empty again (see `clean_tables`)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'shopfloor.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = _fresh_postgres_database(server, "shopfloor_api")
    upgrade(url)
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind, of its own for one test (no migrations run)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return _fresh_postgres_database(server, f"empty_{os.urandom(4).hex()}")


def make_settings(database_url: str, **auth: object) -> ApiProcessSettings:
    """Settings for an app under test; `auth` overrides AuthSettings fields."""
    return ApiProcessSettings(
        runtime=RuntimeSettings(shopfloor_env=Environment.TEST),
        database=DatabaseSettings(database_url=database_url, db_pool_size=5),
        auth=AuthSettings.model_validate({"secret_key": "t" * 48, **auth}),
        passwords=TEST_PASSWORDS,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database; every table is emptied after the test."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=database_url))
    yield engine
    await empty_tables(engine)
    await engine.dispose()


@dataclass
class Api:
    """An HTTP client on the app plus the engine behind it, for tests that look at stored rows."""

    client: AsyncClient
    engine: AsyncEngine
    settings: ApiProcessSettings
    app: FastAPI

    def set_now(self, now: datetime) -> None:
        """Freeze the app's clock at `now` (stage events, metrics and issue times follow it)."""
        self.app.state.clock = lambda: now

    async def create_user(self, username: str, role: Role, *, active: bool = True) -> UserAccount:
        """Insert a user directly (bypassing the API), with the shared test password."""
        hasher = PasswordHasher(time_cost=TEST_PASSWORDS.argon2_time_cost, memory_kib=TEST_PASSWORDS.argon2_memory_kib)
        async with transaction(session_factory(self.engine)) as session:
            user = UserAccount(username=username, role=role, is_active=active, password_hash=hasher.hash(TEST_PASSWORD))
            session.add(user)
        return user

    async def login(self, username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
        """Log in through the API and return the Authorization header."""
        response = await self.client.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def actor(self, role: Role, username: str | None = None) -> dict[str, str]:
        """A new user of this role, logged in."""
        name = username or f"{role.value}-{os.urandom(3).hex()}"
        await self.create_user(name, role)
        return await self.login(name)


async def make_api(engine: AsyncEngine, settings: ApiProcessSettings) -> AsyncIterator[Api]:
    """An app on `settings` sharing the test engine's database."""
    app = create_app(settings)
    transport = ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client=client, engine=engine, settings=settings, app=app)
    await app.state.engine.dispose()


@pytest.fixture
async def api(engine: AsyncEngine, database_url: str) -> AsyncIterator[Api]:
    """The app under test on each database backend."""
    async for value in make_api(engine, make_settings(database_url)):
        yield value


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


def logged_events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structured events of this name that were logged during the test."""
    found = []
    for record in caplog.records:
        if isinstance(record.msg, dict) and record.msg.get("event") == event:
            found.append(record.msg)
    return found


@pytest.fixture(scope="session")
def postgres_only_url(postgres_server: PostgresServer) -> str:
    """A migrated PostgreSQL database for tests that only make sense there (row locks, concurrency)."""
    url = _fresh_postgres_database(postgres_server, "shopfloor_pg_only")
    upgrade(url)
    return url


@pytest.fixture
async def postgres_api(postgres_only_url: str) -> AsyncIterator[Api]:
    """The app on PostgreSQL only; tables are emptied afterwards."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=postgres_only_url))
    async for value in make_api(engine, make_settings(postgres_only_url)):
        yield value
    await empty_tables(engine)
    await engine.dispose()

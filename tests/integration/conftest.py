"""Real services for the integration tier: Mosquitto with our config, PostgreSQL, ingestor processes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine_from_settings
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.db import empty_tables
from tests.support.mosquitto import MosquittoBroker, running_mosquitto
from tests.support.pipeline import INGESTOR_GROUPS, LOGIN_SITES, PASSWORDS, IngestorProcess
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session", autouse=True)
def _quiet_asyncua() -> Iterator[None]:
    """asyncua logs every request and publish at INFO: the OPC-UA tests' output would drown in it."""
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def broker() -> Iterator[MosquittoBroker]:
    """Mosquitto with our production config and logins."""
    with running_mosquitto(users=PASSWORDS, sites=LOGIN_SITES, ingestor_groups=INGESTOR_GROUPS) as server:
        yield server


@pytest.fixture(scope="session")
def ingest_database(postgres_server: PostgresServer) -> str:
    """A migrated PostgreSQL database for the pipeline tests."""
    url = postgres_server.fresh_database("shopfloor_pipeline")
    upgrade(url)
    return url


@pytest.fixture
async def pipeline_engine(ingest_database: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the pipeline database, emptied after each test."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=ingest_database))
    yield engine
    await empty_tables(engine)
    await engine.dispose()


@pytest.fixture
def ingestor_process(tmp_path: Path) -> Iterator[list[IngestorProcess]]:
    """Processes started by a test; whatever is left running is killed afterwards."""
    started: list[IngestorProcess] = []
    yield started
    for process in started:
        process.stop()

"""Requests that only read run without a transaction on PostgreSQL (no BEGIN and COMMIT round trips), cannot write,
and a pool whose connections the server dropped serves again after one 503 (no pre-ping per checkout)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient
from psycopg import pq
from sqlalchemy import func, insert, select

from api.app import create_app
from api.context import context_of
from api.deps import Session
from core.db import create_engine_from_settings
from core.models import Machine, Role
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.api import Api, make_settings, running_api
from tests.support.db import committed, empty_tables
from tests.support.factories import make_machine
from tests.support.postgres import running_postgres

pytestmark = pytest.mark.postgres

probe = APIRouter()


async def transaction_state(session: Session) -> dict[str, object]:
    """What the request's connection is doing while the route runs."""
    await session.execute(select(1))
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return {
        "autocommit": driver.autocommit,
        "in_transaction": driver.info.transaction_status != pq.TransactionStatus.IDLE,
    }


probe.add_api_route("/probe", transaction_state, methods=["GET", "POST"])


@probe.get("/probe/write")
async def write_in_a_read(session: Session) -> dict[str, str]:
    session.add(Machine(site="plant1", code="sneaky", name="sneaky"))
    await session.execute(select(1))  # the autoflush before a query is where the write would go out
    return {"written": "yes"}


@probe.get("/probe/insert")
async def insert_in_a_read(session: Session) -> dict[str, str]:
    await session.execute(insert(Machine).values(site="plant1", code="sneaky", name="sneaky"))
    return {"written": "yes"}


@pytest.fixture
async def api(postgres_only_url: str) -> AsyncIterator[Api]:
    engine = create_engine_from_settings(DatabaseSettings(database_url=postgres_only_url))
    try:
        async with running_api(committed(engine, postgres_only_url), make_settings(postgres_only_url)) as api:
            api.app.include_router(probe)
            yield api
    finally:
        await empty_tables(engine)
        await engine.dispose()


async def test_a_read_runs_in_autocommit_and_a_write_in_one_transaction(api: Api) -> None:
    read = await api.client.get("/probe")
    write = await api.client.post("/probe")
    assert read.json() == {"autocommit": True, "in_transaction": False}
    assert write.json() == {"autocommit": False, "in_transaction": True}


@pytest.mark.parametrize("path", ["/probe/write", "/probe/insert"], ids=["orm-flush", "insert-statement"])
async def test_a_read_that_tries_to_write_fails_and_writes_nothing(api: Api, path: str) -> None:
    response = await api.client.get(path)
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    async with api.session() as session:
        assert await session.scalar(select(func.count()).select_from(Machine)) == 0


async def test_reads_see_what_was_just_committed(api: Api) -> None:
    _, headers = await api.signed_in(Role.PLANNER)
    async with api.session() as session:
        await make_machine(session, "press-9")
    listed = await api.client.get("/machines", headers=headers)
    assert [row["code"] for row in listed.json()] == ["press-9"]


async def test_after_a_database_restart_at_most_one_request_fails_and_the_next_are_served() -> None:
    with running_postgres() as server:
        url = server.fresh_database("restart")
        upgrade(url)
        app = create_app(make_settings(url))
        app.include_router(probe)
        try:
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
                assert (await client.get("/probe")).status_code == 200
                server.stop()
                server.start()
                # The pooled connection is dead: the first request to use it answers 503 (with Retry-After) and the
                # pool is renewed; the following requests are served.
                first = await client.get("/probe")
                after = [(await client.get("/probe")).status_code for _ in range(3)]
        finally:
            await context_of(app).engine.dispose()
    assert first.status_code == 503, first.text
    assert first.json()["code"] == "database_unavailable"
    assert "Retry-After" in first.headers
    assert after == [200, 200, 200]

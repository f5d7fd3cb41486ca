"""A database that is down, slow, exhausted or raced answers with a problem a client can act on, never a 500."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, status
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from api.context import context_of
from api.deps import Session
from core.clock import utcnow
from core.db import create_engine_from_settings
from core.models import Base, Machine, Role, StageAssignment, UserAccount, WorkOrderStage
from core.settings import ApiProcessSettings, DatabaseSettings
from tests.support.api import CLIENT_ADDRESS, Api, bearer, make_settings, running_api
from tests.support.db import committed, empty_tables
from tests.support.factories import TEST_PASSWORD, make_machine, make_work_order
from tests.support.logs import logged_events
from tests.support.postgres import free_port
from tests.support.sse import serving

PROBLEM_JSON = "application/problem+json"
# Anything slower than this is a request left hanging on the database, not one answered.
PROMPT_S = 5.0
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def settings_on(url: str, *, auth: dict[str, Any] | None = None, **database: Any) -> ApiProcessSettings:
    """Test settings whose DatabaseSettings take `database` (pool sizes, timeouts) and AuthSettings `auth`."""
    settings = make_settings(url, **(auth or {}))
    settings.database = DatabaseSettings.model_validate({"database_url": url, "db_pool_size": 5, **database})
    return settings


@asynccontextmanager
async def committed_api(settings: ApiProcessSettings) -> AsyncIterator[Api]:
    """The app on `settings` with real commits (concurrent requests need their own connections); emptied after."""
    url = settings.database.database_url
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    try:
        async with running_api(committed(engine, url), settings) as api:
            yield api
    finally:
        await empty_tables(engine)
        await engine.dispose()


def assert_problem(response: httpx.Response, *, status: int, code: str) -> dict[str, Any]:
    """The problem-details body of `response`, checked for its status, code and content type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:shopfloor:problem:{code}"
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def conflicting_fields(body: dict[str, Any]) -> list[str]:
    """The fields a 409 names."""
    return [error["field"] for error in body["errors"]]


# --- the database is down -----------------------------------------------------------------------------------

DOWN_ROUTES = [
    ("GET", "/machines", True),
    ("GET", "/workorders/", True),
    ("GET", "/auth/me", True),
    ("POST", "/auth/login", False),
    ("POST", "/auth/register", False),
]


@pytest.mark.parametrize(("method", "path", "signed_in"), DOWN_ROUTES)
async def test_database_down_is_a_503_with_retry_after_logged_once_without_a_traceback(
    method: str, path: str, signed_in: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: every connection attempt is refused.
    app = create_app(make_settings(f"postgresql://shopfloor@127.0.0.1:{free_port()}/shopfloor"))
    token = context_of(app).tokens.issue(user_id=1, role=Role.ADMIN, now=utcnow()).token
    headers = bearer(token) if signed_in else {}
    body = {"username": "ayse", "password": TEST_PASSWORD} if method == "POST" else None
    transport = ASGITransport(app=app, client=CLIENT_ADDRESS, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO):
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            started = time.monotonic()
            response = await client.request(method, path, json=body, headers=headers)
            elapsed = time.monotonic() - started
    await context_of(app).engine.dispose()

    problem = assert_problem(response, status=503, code="database_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "127.0.0.1" not in response.text, "the database's address is an internal"
    assert problem["detail"]
    assert elapsed < PROMPT_S
    # One warning names the cause; no traceback, no `unhandled_error`.
    [warning] = logged_events(caplog, "database_unavailable")
    assert warning["error"] == "OperationalError"
    assert "refused" in warning["message"].lower()
    assert logged_events(caplog, "unhandled_error") == []
    assert all(record.exc_info is None for record in caplog.records)
    [line] = logged_events(caplog, "request")
    assert line["status"] == 503


@pytest.mark.postgres
async def test_an_exhausted_pool_is_a_503_then_serves_again(postgres_only_url: str) -> None:
    # Two: logging in takes the request's connection and one for the login throttle's own transaction.
    settings = settings_on(postgres_only_url, db_pool_size=2, db_max_overflow=0, db_pool_timeout_s=0.2)
    async with committed_api(settings) as api:
        admin = await api.actor(Role.ADMIN)
        engine = context_of(api.app).engine
        async with engine.connect() as first, engine.connect() as second:
            for held in (first, second):
                await held.execute(text("SELECT 1"))
            started = time.monotonic()
            response = await api.client.get("/machines", headers=admin)
            elapsed = time.monotonic() - started
        assert_problem(response, status=503, code="database_unavailable")
        assert response.headers["Retry-After"] == "5"
        assert elapsed < PROMPT_S
        assert (await api.client.get("/machines", headers=admin)).status_code == 200


# --- statement timeout ------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(("timeout_ms", "shown"), [(250, "250ms"), (0, "0")])
async def test_every_postgres_connection_gets_the_statement_timeout(
    postgres_only_url: str, timeout_ms: int, shown: str
) -> None:
    engine = create_engine_from_settings(
        DatabaseSettings(database_url=postgres_only_url, db_statement_timeout_ms=timeout_ms)
    )
    try:
        for _ in range(2):  # a fresh connection, then the pooled one
            async with engine.connect() as connection:
                assert await connection.scalar(text("SHOW statement_timeout")) == shown
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_query_past_the_statement_timeout_is_a_503_and_the_connection_serves_again(
    postgres_only_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One connection, so the request after the timeout runs on the connection whose statement was cancelled.
    settings = settings_on(postgres_only_url, db_pool_size=1, db_max_overflow=0, db_statement_timeout_ms=300)
    async with committed_api(settings) as api:
        user = await api.create_user("planner", Role.PLANNER)
        # Issued here: logging in takes a second connection (the login throttle's own transaction).
        planner = bearer(context_of(api.app).tokens.issue(user_id=user.id, role=user.role, now=utcnow()).token)
        engine = context_of(api.app).engine
        async with engine.connect() as connection:
            backend = await connection.scalar(text("SELECT pg_backend_pid()"))
        with caplog.at_level(logging.INFO):
            async with api.begin() as locker:
                await locker.execute(text("LOCK TABLE machine IN ACCESS EXCLUSIVE MODE"))
                started = time.monotonic()
                response = await asyncio.wait_for(api.client.get("/machines", headers=planner), timeout=10)
                elapsed = time.monotonic() - started
        assert_problem(response, status=503, code="database_timeout")
        assert response.headers["Retry-After"] == "5"
        assert 0.3 <= elapsed < PROMPT_S
        [warning] = logged_events(caplog, "database_timeout")
        assert warning["error"] == "QueryCanceled"
        assert logged_events(caplog, "unhandled_error") == []
        # The cancelled statement did not cost the pool its connection.
        assert (await api.client.get("/machines", headers=planner)).status_code == 200
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT pg_backend_pid()")) == backend


# --- unique violations ------------------------------------------------------------------------------------


async def wait_until_blocked_on_a_lock(api: Api, *, sessions: int = 1) -> None:
    """Until this many sessions of the database wait for a lock (each look in a transaction of its own: the
    statistics views are a snapshot per transaction)."""
    deadline = time.monotonic() + PROMPT_S
    waiting = 0
    while time.monotonic() < deadline:
        async with api.begin() as probe:
            waiting = await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting >= sessions:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{waiting} of {sessions} requests waited for a lock within {PROMPT_S} s")


@pytest.mark.postgres
async def test_concurrent_registrations_of_one_username_give_one_201_and_409s_naming_it(
    postgres_only_url: str,
) -> None:
    settings = settings_on(postgres_only_url, auth={"registration_max_per_address": 100})
    async with (
        committed_api(settings) as api,
        serving(api.app) as served,
        httpx.AsyncClient(base_url=served.base_url, timeout=30) as client,
    ):
        body = {"username": "racer", "password": TEST_PASSWORD}
        async with api.begin() as gate:
            # Reads go on, inserts wait: every request passes the service's check before any of them inserts.
            await gate.execute(text("LOCK TABLE user_account IN EXCLUSIVE MODE"))
            requests = [asyncio.create_task(client.post("/auth/register", json=body)) for _ in range(8)]
            await wait_until_blocked_on_a_lock(api, sessions=8)
        responses = await asyncio.wait_for(asyncio.gather(*requests), timeout=PROMPT_S)
        assert sorted(response.status_code for response in responses) == [201] + [409] * 7, [
            response.text for response in responses
        ]
        for response in responses:
            if response.status_code == 409:
                problem = assert_problem(response, status=409, code="username_taken")
                assert conflicting_fields(problem) == ["username"]
        async with api.session() as session:
            count = await session.scalar(select(func.count()).where(UserAccount.username == "racer"))
        assert count == 1


@pytest.mark.postgres
async def test_a_machine_registered_past_the_service_check_is_a_409_naming_site_and_code(postgres_api: Api) -> None:
    api = postgres_api
    admin = await api.actor(Role.ADMIN)
    body = {"site": "plant1", "code": "press-9", "name": "Pres 9"}
    async with api.begin() as other:
        # Not yet committed: the service's check sees no such machine, its INSERT waits on the unique index.
        await other.execute(insert(Machine).values(site="plant1", code="press-9", name="first"))
        request = asyncio.create_task(api.client.post("/machines", json=body, headers=admin))
        await wait_until_blocked_on_a_lock(api)
    response = await asyncio.wait_for(request, timeout=PROMPT_S)
    problem = assert_problem(response, status=409, code="machine_exists")
    assert conflicting_fields(problem) == ["site", "code"]
    # The service's own check answers a later duplicate the same way.
    again = await api.client.post("/machines", json=body, headers=admin)
    assert conflicting_fields(assert_problem(again, status=409, code="machine_exists")) == ["site", "code"]


async def taken_username(api: Api) -> Base:
    await api.create_user("taken", Role.WORKER)
    return UserAccount(username="taken", role=Role.WORKER, password_hash="unused")


async def taken_machine_code(api: Api) -> Base:
    await api.add(make_machine, "press-1")
    return Machine(site="plant1", code="press-1", name="again")


async def taken_assignment(api: Api) -> Base:
    order = await api.add(make_work_order, start=T0)
    worker = await api.create_user("ahmet", Role.WORKER)
    await api.add(add_row, StageAssignment(stage_id=order.stages[0].id, user_id=worker.id, assigned_at=T0))
    return StageAssignment(stage_id=order.stages[0].id, user_id=worker.id, assigned_at=T0)


async def add_row(session: AsyncSession, /, row: Base) -> None:
    """Insert one row as it is."""
    session.add(row)
    await session.flush()


async def taken_stage_position(api: Api) -> Base:
    order = await api.add(make_work_order, start=T0)
    stage = order.stages[0]
    return WorkOrderStage(
        work_order_id=order.id,
        position=stage.position,
        stage_name="again",
        planned_start=stage.planned_start,
        planned_end=stage.planned_end,
    )


@pytest.mark.parametrize("flush", [True, False], ids=["at_flush", "at_commit"])
@pytest.mark.parametrize(
    ("duplicate", "code", "fields"),
    [
        (taken_username, "username_taken", ["username"]),
        (taken_machine_code, "machine_exists", ["site", "code"]),
        (taken_assignment, "already_assigned", ["stage_id", "user_id"]),
        (taken_stage_position, "conflict", ["work_order_id", "position"]),
    ],
    ids=["username", "machine", "assignment", "stage_position"],
)
async def test_a_unique_violation_at_flush_or_at_commit_is_a_409_naming_the_fields(
    api: Api,
    flush: bool,
    duplicate: Callable[[Api], Awaitable[Base]],
    code: str,
    fields: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    row = await duplicate(api)
    # A route as a service that skipped its check would be: the database's constraint is the last word.
    router = APIRouter()

    @router.post("/test/duplicate", status_code=status.HTTP_201_CREATED)
    async def add_duplicate(session: Session) -> None:
        session.add(row)
        if flush:
            await session.flush()

    api.app.include_router(router)
    with caplog.at_level(logging.INFO):
        response = await api.client.post("/test/duplicate")
    body = assert_problem(response, status=409, code=code)
    assert conflicting_fields(body) == fields
    assert logged_events(caplog, "unhandled_error") == []

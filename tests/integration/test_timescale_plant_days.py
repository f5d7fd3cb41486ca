"""`bucket=1d` on TimescaleDB (the WASM server of the timescale tier) is the plant's local days: 23 and 25 hours
across Europe/Berlin's clock changes, and a day whose midnight comes twice (America/Havana) begins at the first, the
same answers as SQLite and PostgreSQL give in tests/api/test_plant_time.py. The server takes one connection at a
time: one app, one pooled connection, and the Havana case asks `core.timeseries` on that app's engine.

The same app also answers OEE by shift, production day and week across Berlin's clock changes with the figures
tests/api/test_plant_dst.py checks on SQLite and PostgreSQL (the scenario and its hand computation:
tests/support/plant.py), on presses of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.context import context_of
from core.models import Reading, Role
from core.schema import upgrade
from core.settings import DatabaseSettings, OeeSettings, TrackingSettings
from core.timeseries import Backend, backend_of, bucketed_points
from tests.support.api import Api, make_settings
from tests.support.db import committed
from tests.support.factories import make_machine
from tests.support.plant import DST_WEEKS, EVERY_DAY, DstWeek, assert_dst_week, oee_by, seed_dst_week
from tests.support.planttime import (
    DST_CASES,
    DST_READINGS,
    HAVANA,
    HAVANA_DAYS,
    HAVANA_READINGS,
    assert_plant_days,
    utc,
)
from tests.support.timescale import running_timescale

pytestmark = pytest.mark.timescale


@pytest.fixture(scope="module")
async def berlin() -> AsyncIterator[tuple[Api, int]]:
    """The app of a plant in Europe/Berlin on a TimescaleDB server of this module's own, and the id of a machine
    with `DST_READINGS` (the next id has `HAVANA_READINGS`)."""
    with running_timescale() as url:
        await asyncio.to_thread(upgrade, url)
        settings = make_settings(url).model_copy(
            update={
                "database": DatabaseSettings(database_url=url, db_pool_size=1, db_max_overflow=0),
                "tracking": TrackingSettings(plant_timezone="Europe/Berlin"),
                # The OEE scenario reads its counters once a shift: a state holds until the next one.
                "oee": OeeSettings(oee_max_silence_s=0),
            }
        )
        app = create_app(settings)
        engine: AsyncEngine = context_of(app).engine
        try:
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
                api = Api(client=client, database=committed(engine, url), settings=settings, app=app)
                machine_id = (await api.add(make_machine, "press-1")).id
                havana_id = (await api.add(make_machine, "press-2")).id
                async with engine.begin() as conn:
                    assert await backend_of(conn) is Backend.TIMESCALEDB
                    for machine, rows in ((machine_id, DST_READINGS), (havana_id, HAVANA_READINGS)):
                        await conn.execute(
                            insert(Reading).values(
                                [{"machine_id": machine, "tag": t, "ts": ts, "value": v} for t, ts, v in rows]
                            )
                        )
                yield api, machine_id
        finally:
            await engine.dispose()


@pytest.mark.parametrize("case", list(DST_CASES))
async def test_day_buckets_are_plant_days_across_clock_changes(berlin: tuple[Api, int], case: str) -> None:
    api, machine_id = berlin
    headers = await api.actor(Role.WORKER)
    window, *_ = DST_CASES[case]
    response = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={**window, "tags": "temp", "bucket": "1d", "agg": "count,last"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert_plant_days(response.json(), case)


async def test_a_day_whose_midnight_comes_twice_begins_at_the_first(berlin: tuple[Api, int]) -> None:
    api, machine_id = berlin
    engine: AsyncEngine = context_of(api.app).engine
    async with engine.connect() as conn:
        points = await bucketed_points(
            conn,
            machine_id=machine_id + 1,
            tags=["temp"],
            start=utc(2026, 10, 31, 17),
            end=utc(2026, 11, 2, 17),
            bucket=timedelta(days=1),
            aggs=["count", "last"],
            zone=HAVANA,
        )
    assert [(point["t"], point["count"], point["last"]) for point in points["temp"]] == HAVANA_DAYS


@pytest.fixture(scope="module")
async def dst_presses(berlin: tuple[Api, int]) -> dict[str, int]:
    """The plant's every-day calendar and one press per week of `DST_WEEKS` (the ids by week name); seeded once, as
    the module's rows are committed."""
    api, _ = berlin
    api.set_now(utc(2026, 12, 1, 12))
    planner = await api.actor(Role.PLANNER)
    response = await api.client.post("/calendar/patterns", json=EVERY_DAY, headers=planner)
    assert response.status_code == 201, response.text
    return {name: await seed_dst_week(api, planner, week) for name, week in DST_WEEKS.items()}


@pytest.mark.parametrize("week", list(DST_WEEKS.values()), ids=list(DST_WEEKS))
async def test_oee_by_shift_day_and_week_across_a_clock_change(
    berlin: tuple[Api, int], dst_presses: dict[str, int], week: DstWeek
) -> None:
    api, _ = berlin
    headers = await api.actor(Role.WORKER)
    machine_id = dst_presses[week.name]
    by_shift, by_day, by_week = [
        await oee_by(api, headers, machine_id, week, group_by) for group_by in ("shift", "day", "week")
    ]
    assert_dst_week(week, by_shift, by_day, by_week)

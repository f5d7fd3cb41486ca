"""Plant time (PLANT_TIMEZONE): naive datetimes in bodies and queries are the plant's local time, `bucket=1d` history
and the default /metrics/summary window are its local days, and GET /config tells clients the zone.

Europe/Berlin has clock changes (2026: forward on 29 March, back on 25 October); Europe/Istanbul has none (+03).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import pytest

from core.models import Role
from core.settings import TrackingSettings
from tests.support.api import Api, Headers, make_settings, running_api
from tests.support.db import Database
from tests.support.factories import add_readings, make_machine
from tests.support.planttime import (
    DST_CASES,
    DST_READINGS,
    HAVANA_DAYS,
    HAVANA_READINGS,
    assert_plant_days,
    utc,
)
from tests.support.tracking import create_work_order, problem_fields, when


def plant(database: Database, zone: str) -> AbstractAsyncContextManager[Api]:
    """An app on `database` whose plant is in `zone`."""
    settings = make_settings(database.url)
    settings = settings.model_copy(update={"tracking": TrackingSettings(plant_timezone=zone)})
    return running_api(database, settings)


@pytest.fixture
async def berlin(database: Database) -> AsyncIterator[Api]:
    """The app of a plant in Europe/Berlin."""
    async with plant(database, "Europe/Berlin") as api:
        yield api


async def post_work_order(api: Api, headers: Headers, start: str, end: str) -> dict[str, Any]:
    response = await api.client.post(
        "/workorders",
        json={"product_code": "P-1", "lot_no": "L-1", "qty": 5, "planned_start": start, "planned_end": end},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_naive_body_times_are_plant_time_and_offsets_are_kept(berlin: Api) -> None:
    planner = await berlin.actor(Role.PLANNER)
    created = await post_work_order(berlin, planner, "2026-07-01T08:00:00", "2026-07-01T16:00:00+03:00")
    # 08:00 CEST is 06:00 UTC; 16:00+03:00 is 13:00 UTC whatever the plant's zone. Answers carry an offset.
    assert (when(created["planned_start"]), when(created["planned_end"])) == (utc(2026, 7, 1, 6), utc(2026, 7, 1, 13))
    assert created["planned_start"].endswith(("Z", "+00:00"))
    stage = created["stages"][0]
    moved = await berlin.client.patch(
        f"/stages/{stage['id']}", json={"planned_end": "2026-07-01T08:20:00"}, headers=planner
    )
    assert moved.status_code == 200, moved.text
    assert when(moved.json()["planned_end"]) == utc(2026, 7, 1, 6, 20)
    patched = await berlin.client.patch(
        f"/workorders/{created['id']}", json={"planned_end": "2026-07-01T17:00:00"}, headers=planner
    )
    assert patched.status_code == 200, patched.text
    assert when(patched.json()["planned_end"]) == utc(2026, 7, 1, 15)


@pytest.mark.parametrize(
    ("naive", "instant"),
    [
        # The hour skipped on 29 March: read as if the clocks had not moved yet (+01:00), i.e. 03:30 CEST.
        ("2026-03-29T02:30:00", utc(2026, 3, 29, 1, 30)),
        # The hour repeated on 25 October: its first occurrence (still CEST, +02:00).
        ("2026-10-25T02:30:00", utc(2026, 10, 25, 0, 30)),
        ("2026-10-25T03:30:00", utc(2026, 10, 25, 2, 30)),
        ("2026-01-15T12:00:00", utc(2026, 1, 15, 11)),
    ],
)
async def test_naive_times_across_clock_changes(berlin: Api, naive: str, instant: datetime) -> None:
    planner = await berlin.actor(Role.PLANNER)
    created = await post_work_order(berlin, planner, naive, "2026-12-31T00:00:00")
    assert when(created["planned_start"]) == instant


async def test_each_app_reads_naive_queries_in_its_own_zone(database: Database) -> None:
    # Two plants on one database in one process: the same naive text is a different instant in each.
    async with plant(database, "Europe/Berlin") as berlin, plant(database, "Europe/Istanbul") as istanbul:
        planner = await berlin.actor(Role.PLANNER)
        created = await post_work_order(berlin, planner, "2026-07-01T05:30:00Z", "2026-07-01T09:00:00Z")
        params = {"planned_to": "2026-07-01T08:00:00", "sort": "id"}  # 06:00 UTC in Berlin, 05:00 UTC in Istanbul

        async def ids(api: Api) -> list[int]:
            response = await api.client.get("/workorders", params=params, headers=planner)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()]

        assert created["id"] in await ids(berlin)
        assert created["id"] not in await ids(istanbul)
        # The same instant with an offset reads the same in both.
        params["planned_to"] = "2026-07-01T08:00:00+02:00"
        assert created["id"] in await ids(istanbul)


async def test_naive_history_and_oee_windows_are_plant_time(berlin: Api) -> None:
    machine_id = (await berlin.add(make_machine, "press-1")).id
    headers = await berlin.actor(Role.WORKER)
    berlin.set_now(utc(2026, 7, 2))
    window = {"from": "2026-07-01T08:00:00", "to": "2026-07-01T09:00:00"}
    states = await berlin.client.get(f"/machines/{machine_id}/states", params=window, headers=headers)
    assert states.status_code == 200, states.text
    assert (when(states.json()["from"]), when(states.json()["to"])) == (utc(2026, 7, 1, 6), utc(2026, 7, 1, 7))
    oee = await berlin.client.get(f"/machines/{machine_id}/oee", params=window, headers=headers)
    assert oee.status_code == 200, oee.text
    assert (when(oee.json()["from"]), when(oee.json()["to"])) == (utc(2026, 7, 1, 6), utc(2026, 7, 1, 7))
    raw = await berlin.client.get(
        f"/machines/{machine_id}/readings", params={**window, "tags": "temp", "bucket": "raw"}, headers=headers
    )
    assert raw.status_code == 200, raw.text
    assert when(raw.json()["from"]) == utc(2026, 7, 1, 6)


@pytest.mark.parametrize("case", list(DST_CASES))
async def test_day_buckets_are_plant_days_across_clock_changes(berlin: Api, case: str) -> None:
    machine_id = (await berlin.add(make_machine, "press-1")).id
    await berlin.add(add_readings, machine_id, DST_READINGS)
    headers = await berlin.actor(Role.WORKER)
    window, *_ = DST_CASES[case]
    response = await berlin.client.get(
        f"/machines/{machine_id}/readings",
        params={**window, "tags": "temp", "bucket": "1d", "agg": "count,last"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert_plant_days(response.json(), case)


async def test_a_day_whose_midnight_comes_twice_begins_at_the_first(database: Database) -> None:
    async with plant(database, "America/Havana") as api:
        machine_id = (await api.add(make_machine, "press-1")).id
        await api.add(add_readings, machine_id, HAVANA_READINGS)
        headers = await api.actor(Role.WORKER)
        response = await api.client.get(
            f"/machines/{machine_id}/readings",
            params={
                "from": "2026-10-31T12:00:00",
                "to": "2026-11-02T12:00:00",
                "tags": "temp",
                "bucket": "1d",
                "agg": "count,last",
            },
            headers=headers,
        )
        assert response.status_code == 200, response.text
        points = response.json()["series"][0]["points"]
        assert [(when(point["t"]), point["count"], point["last"]) for point in points] == HAVANA_DAYS


async def test_day_buckets_of_a_utc_plant_start_at_midnight_utc(api: Api) -> None:
    machine_id = (await api.add(make_machine, "press-1")).id
    await api.add(add_readings, machine_id, DST_READINGS)
    headers = await api.actor(Role.WORKER)
    response = await api.client.get(
        f"/machines/{machine_id}/readings",
        params={
            "from": "2026-03-28T00:00:00",
            "to": "2026-03-31T00:00:00",
            "tags": "temp",
            "bucket": "1d",
            "agg": "count",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (when(body["from"]), when(body["to"])) == (utc(2026, 3, 28), utc(2026, 3, 31))
    points = [(when(point["t"]), point["count"]) for point in body["series"][0]["points"]]
    assert points == [(utc(2026, 3, 28), 2), (utc(2026, 3, 29), 4)]


async def test_summary_defaults_to_the_plant_day(berlin: Api) -> None:
    planner = await berlin.actor(Role.PLANNER)
    # Sunday 29 March in Berlin runs from 23:00 UTC the day before to 22:00 UTC: 23 hours.
    await create_work_order(berlin, planner, planned_start=utc(2026, 3, 28, 23, 30), planned_end=utc(2026, 3, 29, 4))
    await create_work_order(berlin, planner, planned_start=utc(2026, 3, 28, 22, 30), planned_end=utc(2026, 3, 29, 4))
    await create_work_order(berlin, planner, planned_start=utc(2026, 3, 29, 22), planned_end=utc(2026, 3, 30, 4))
    berlin.set_now(utc(2026, 3, 29, 21, 59))  # 23:59 CEST, still Sunday
    response = await berlin.client.get("/metrics/summary", headers=planner)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (when(body["planned_from"]), when(body["planned_to"])) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert body["work_orders"] == 1
    berlin.set_now(utc(2026, 3, 29, 22))  # Monday has begun
    monday = (await berlin.client.get("/metrics/summary", headers=planner)).json()
    assert when(monday["planned_from"]) == utc(2026, 3, 29, 22)
    assert when(monday["planned_to"]) - when(monday["planned_from"]) == timedelta(hours=24)
    naive = await berlin.client.get(
        "/metrics/summary", params={"from": "2026-03-29T00:00:00", "to": "2026-03-30T00:00:00"}, headers=planner
    )
    assert naive.json()["work_orders"] == 1
    only_from = await berlin.client.get("/metrics/summary", params={"from": "2026-03-29T00:00:00"}, headers=planner)
    assert problem_fields(only_from) == ["to"]


async def test_config_names_the_plant_zone_and_whether_commands_are_on_without_a_token(
    berlin: Api, api: Api, database: Database
) -> None:
    response = await berlin.client.get("/config")
    assert response.status_code == 200, response.text
    assert response.json() == {"plant_timezone": "Europe/Berlin", "commands_enabled": False}
    assert (await api.client.get("/config")).json() == {"plant_timezone": "UTC", "commands_enabled": False}
    settings = make_settings(database.url)
    settings = settings.model_copy(update={"commands": settings.commands.model_copy(update={"commands_enabled": True})})
    async with running_api(database, settings) as commanding:
        assert (await commanding.client.get("/config")).json()["commands_enabled"] is True


async def test_a_naive_time_pushed_past_the_calendar_is_a_field_error(database: Database) -> None:
    async with plant(database, "America/New_York") as api:
        planner = await api.actor(Role.PLANNER)
        response = await api.client.get("/workorders", params={"planned_to": "9999-12-31T23:00:00"}, headers=planner)
        assert problem_fields(response) == ["planned_to"]

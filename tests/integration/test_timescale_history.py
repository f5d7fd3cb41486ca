"""Machine history served by the API on PostgreSQL + TimescaleDB (the WASM server of the timescale tier).

The same generated data and the same naive Python reference as tests/api/test_machine_history.py (SQLite and
plain PostgreSQL), here through the continuous aggregates `reading_1m` / `reading_1h` (before, while and after
they are materialised) and `time_bucket` for the other sizes. The server takes one connection at a time, so the
app's pool holds one connection and every row is written through the app's own engine, in multi-row INSERTs
(COPY and executemany crash the WASM server).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.context import context_of
from core.contract import MachineState
from core.models import MachineStateChange, Reading, Role
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.api import Api, make_settings
from tests.support.db import committed
from tests.support.factories import make_machine
from tests.support.history import (
    AGGS,
    BUCKET_CASES,
    T0,
    Row,
    assert_points_equal,
    ceil_to,
    floor_to,
    generated,
    iso,
    naive_points,
)
from tests.support.timescale import running_timescale

pytestmark = pytest.mark.timescale

INSERT_ROWS = 250  # 250 rows x 4 parameters per statement: well inside what the WASM server takes
TAGS = ("temp", "pressure", "speed")
State = tuple[datetime, MachineState]


@dataclass
class Tier:
    """The app on TimescaleDB, a machine with generated readings and states, and a worker's headers."""

    api: Api
    machine_id: int
    rows: list[Row]
    states: list[State]
    headers: dict[str, str]

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        response = await self.api.client.get(f"/machines/{self.machine_id}{path}", params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def insert_rows(engine: AsyncEngine, machine_id: int, rows: Sequence[Row]) -> None:
    for first in range(0, len(rows), INSERT_ROWS):
        chunk = rows[first : first + INSERT_ROWS]
        async with engine.begin() as conn:
            await conn.execute(
                insert(Reading).values(
                    [{"machine_id": machine_id, "tag": t, "ts": ts, "value": v} for t, ts, v in chunk]
                )
            )


def generated_states(seed: int, *, start: datetime, hours: int, count: int) -> list[State]:
    """Changes at irregular whole seconds; repeats of a state happen (late samples), as in real data."""
    rng = random.Random(seed)
    moments = sorted({start + timedelta(seconds=rng.randrange(hours * 3600)) for _ in range(count)})
    return [(moment, rng.choice(list(MachineState))) for moment in moments]


@pytest.fixture(scope="module")
async def tier() -> AsyncIterator[Tier]:
    """A TimescaleDB server of this module's own, migrated, with the data loaded through the app's engine."""
    with running_timescale() as url:
        await asyncio.to_thread(upgrade, url)
        settings = make_settings(url)
        settings.database = DatabaseSettings(database_url=url, db_pool_size=1, db_max_overflow=0)
        app = create_app(settings)
        engine: AsyncEngine = context_of(app).engine
        try:
            async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
                # Rows go through the app's own engine: the server takes one connection at a time.
                api = Api(client=client, database=committed(engine, url), settings=settings, app=app)
                rows = generated(7, start=T0 - timedelta(hours=1), hours=53, count=1500, tags=TAGS)
                machine_id = (await api.add(make_machine, "press-1")).id
                await insert_rows(engine, machine_id, rows)
                # Another machine's readings a microsecond apart must never leak into the answers.
                other = (await api.add(make_machine, "other")).id
                await insert_rows(
                    engine, other, [(tag, ts + timedelta(microseconds=1), 1e9) for tag, ts, _ in rows[:300]]
                )
                states = generated_states(11, start=T0 - timedelta(hours=2), hours=30, count=80)
                async with engine.begin() as conn:
                    await conn.execute(
                        insert(MachineStateChange).values(
                            [{"machine_id": machine_id, "ts": ts, "state": state} for ts, state in states]
                        )
                    )
                    await conn.execute(
                        insert(MachineStateChange).values(machine_id=other, ts=T0, state=MachineState.ALARM)
                    )
                    assert await conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"))
                headers = await api.actor(Role.WORKER)
                yield Tier(api=api, machine_id=machine_id, rows=rows, states=states, headers=headers)
        finally:
            await engine.dispose()


async def refresh_rollups(engine: AsyncEngine, *, until: datetime | None) -> None:
    """Materialise both continuous aggregates up to `until` (None: everything); no background jobs run in WASM."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        for view in ("reading_1m", "reading_1h"):
            await conn.execute(
                text("CALL refresh_continuous_aggregate(CAST(:view AS regclass), NULL, CAST(:until AS timestamptz))"),
                {"view": view, "until": until},
            )


async def materialised(engine: AsyncEngine, view: str) -> int:
    """Rows stored in the view's materialisation table (the view itself adds real-time buckets on top)."""
    async with engine.connect() as conn:
        schema, table = (
            await conn.execute(
                text(
                    "SELECT materialization_hypertable_schema, materialization_hypertable_name "
                    "FROM timescaledb_information.continuous_aggregates WHERE view_name = :view"
                ),
                {"view": view},
            )
        ).one()
        return int(await conn.scalar(text(f'SELECT count(*) FROM "{schema}"."{table}"')) or 0)  # noqa: S608 -- catalog names


async def assert_buckets_match(tier: Tier, bucket: str, size: timedelta, start: datetime, end: datetime) -> None:
    body = await tier.get(
        "/readings", tags="speed,temp,silent", bucket=bucket, agg=",".join(AGGS), **{"from": iso(start), "to": iso(end)}
    )
    assert (body["machine_id"], body["bucket"]) == (tier.machine_id, bucket)
    assert datetime.fromisoformat(body["from"]) == floor_to(start, size)
    assert datetime.fromisoformat(body["to"]) == ceil_to(end, size)
    assert [series["tag"] for series in body["series"]] == ["speed", "temp", "silent"]
    for series in body["series"][:2]:
        expected = naive_points(tier.rows, series["tag"], start, end, size)
        assert expected
        assert_points_equal(series["points"], expected)
    assert body["series"][2]["points"] == []


async def test_every_bucket_and_aggregate_matches_python_as_the_rollups_fill(tier: Tier) -> None:
    engine: AsyncEngine = context_of(tier.api.app).engine
    # Nothing materialised: real-time aggregation answers 1m and 1h from `reading`.
    assert await materialised(engine, "reading_1m") == 0
    for bucket, size, start, end in BUCKET_CASES:
        await assert_buckets_match(tier, bucket, size, start, end)
    # Half materialised: older buckets from the view, newer ones computed at query time, joined at the watermark.
    await refresh_rollups(engine, until=T0 + timedelta(hours=20, minutes=30))
    half = await materialised(engine, "reading_1m")
    for bucket, size, start, end in BUCKET_CASES:
        await assert_buckets_match(tier, bucket, size, start, end)
    await refresh_rollups(engine, until=None)
    assert 0 < half < await materialised(engine, "reading_1m")
    for bucket, size, start, end in BUCKET_CASES:
        await assert_buckets_match(tier, bucket, size, start, end)


@pytest.mark.parametrize(
    ("start", "end", "chosen", "size"),
    [
        (T0, T0 + timedelta(hours=10), "1m", timedelta(minutes=1)),
        (T0 - timedelta(minutes=30), T0 + timedelta(days=2), "5m", timedelta(minutes=5)),
        (T0 - timedelta(hours=2), T0 + timedelta(days=30), "1h", timedelta(hours=1)),
    ],
)
async def test_auto_bucket_matches_python(
    tier: Tier, start: datetime, end: datetime, chosen: str, size: timedelta
) -> None:
    body = await tier.get("/readings", tags="temp,pressure", agg=",".join(AGGS), **{"from": iso(start), "to": iso(end)})
    assert body["bucket"] == chosen
    for series in body["series"]:
        assert_points_equal(series["points"], naive_points(tier.rows, series["tag"], start, end, size))


async def test_raw_points_are_the_readings_themselves(tier: Tier) -> None:
    start, end = T0 + timedelta(minutes=10, milliseconds=250), T0 + timedelta(hours=5, minutes=55)
    body = await tier.get(
        "/readings", tags="temp,pressure,silent", bucket="raw", **{"from": iso(start), "to": iso(end)}
    )
    assert (body["bucket"], datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])) == (
        "raw",
        start,
        end,
    )
    for series in body["series"]:
        expected = sorted((ts, value) for tag, ts, value in tier.rows if tag == series["tag"] and start <= ts < end)
        assert [(datetime.fromisoformat(p["t"]), p["value"]) for p in series["points"]] == expected
    assert [len(series["points"]) > 0 for series in body["series"]] == [True, True, False]


def naive_timeline(
    states: list[State], start: datetime, until: datetime
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The reference: the state in force at each instant is the newest change at or before it."""
    totals = dict.fromkeys((state.value for state in MachineState), 0.0)
    bounds = [*states[1:], (max(until, states[-1][0]), states[-1][1])]
    for (since, state), (stop, _) in zip(states, bounds, strict=True):
        low, high = max(since, start), min(stop, until)
        if high > low:
            totals[state.value] += (high - low).total_seconds()
    # Each second boundary of the window, walked in order, gives the intervals (the changes are whole seconds).
    intervals: list[dict[str, Any]] = []
    moment = start
    while moment < until:
        in_force = [state for since, state in states if since <= moment]
        if in_force:
            if intervals and intervals[-1]["state"] == in_force[-1].value and intervals[-1]["end"] == moment:
                intervals[-1]["end"] = moment + timedelta(seconds=1)
            else:
                intervals.append({"state": in_force[-1].value, "start": moment, "end": moment + timedelta(seconds=1)})
        moment += timedelta(seconds=1)
    return intervals, totals


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T0 - timedelta(hours=3), T0 + timedelta(hours=1)),  # opens before the first change
        (T0 + timedelta(hours=2, seconds=1), T0 + timedelta(hours=9, minutes=30)),
        (T0 + timedelta(hours=20), T0 + timedelta(hours=36)),  # the last state stays open until `to`
    ],
)
async def test_state_timeline_matches_python(tier: Tier, start: datetime, end: datetime) -> None:
    tier.api.set_now(T0 + timedelta(days=30))  # the token was issued at the real time, long before
    body = await tier.get("/states", **{"from": iso(start), "to": iso(end)})
    intervals, totals = naive_timeline(tier.states, start, end)
    assert intervals
    got = [
        {
            "state": item["state"],
            "start": datetime.fromisoformat(item["start"]),
            "end": datetime.fromisoformat(item["end"]),
        }
        for item in body["timeline"]
    ]
    assert got == intervals
    assert [item["duration_s"] for item in body["timeline"]] == [
        (item["end"] - item["start"]).total_seconds() for item in intervals
    ]
    assert body["totals"] == pytest.approx(totals)
    assert sum(body["totals"].values()) == pytest.approx((end - max(start, tier.states[0][0])).total_seconds())

"""The history statements ask only for what is needed (SQLite and PostgreSQL): asked aggregates, one backend
check per engine, raw readings read once up to a limit, nothing for an unregistered machine."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models import Reading
from core.timeseries import AGGREGATES, Backend, backend_of, bucketed_points, raw_points
from tests.support.timeseries import T0, generated, load, naive

START, END = T0 + timedelta(minutes=1, seconds=30), T0 + timedelta(minutes=37)
SUBSETS = [*((agg,) for agg in AGGREGATES), ("avg", "last"), ("min", "max", "count"), AGGREGATES]


@pytest.mark.parametrize("aggs", SUBSETS, ids=["+".join(subset) for subset in SUBSETS])
async def test_points_hold_only_the_asked_aggregates_with_the_right_values(
    engine: AsyncEngine, aggs: tuple[str, ...]
) -> None:
    rows = generated(seed=len(aggs))
    machine_id = await load(engine, rows)
    size = timedelta(minutes=5)
    asked = tuple(reversed(aggs))  # the order asked does not change the keys' order
    async with engine.connect() as conn:
        points = await bucketed_points(
            conn, machine_id=machine_id, tags=["temp", "speed"], start=START, end=END, bucket=size, aggs=asked
        )
    assert list(points) == ["temp", "speed"]
    for tag, series in points.items():
        expected = [row for row in naive(rows, START, END, size) if row.tag == tag]
        assert expected
        assert [point["t"] for point in series] == [row.bucket for row in expected]
        for point, row in zip(series, expected, strict=True):
            assert list(point) == ["t", *(agg for agg in AGGREGATES if agg in aggs), "not_good"]
            assert point["not_good"] == 0  # every generated reading is good
            for agg in aggs:
                assert point[agg] == pytest.approx(getattr(row, agg), rel=1e-9, abs=1e-9), agg


async def test_unknown_aggregates_are_refused(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(ValueError, match="unknown aggregates"):
            await bucketed_points(
                conn, machine_id=1, tags=["temp"], start=START, end=END, bucket=timedelta(minutes=1), aggs=["median"]
            )


async def test_the_backend_is_asked_once_per_engine(engine: AsyncEngine) -> None:
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        kinds = []
        for _ in range(3):
            async with engine.connect() as conn:
                kinds.append(await backend_of(conn))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    checks = [statement for statement in statements if "to_regclass" in statement]
    if engine.dialect.name == "sqlite":
        assert (kinds, checks) == ([Backend.SQLITE] * 3, [])
    else:
        # At most once: an earlier test may already have asked on this engine.
        assert kinds == [Backend.POSTGRESQL] * 3
        assert len(checks) <= 1


async def test_raw_points_read_up_to_the_limit_oldest_first_in_utc(engine: AsyncEngine) -> None:
    rows = generated(seed=3)
    machine_id = await load(engine, rows)
    tags = ["temp", "pressure"]
    in_range = sorted((tag, ts, value) for tag, ts, value in rows if tag in tags and START <= ts < END)
    async with engine.connect() as conn:
        points, fetched = await raw_points(
            conn, machine_id=machine_id, tags=tags, start=START, end=END, limit=len(in_range) + 1
        )
        few, fetched_few = await raw_points(conn, machine_id=machine_id, tags=tags, start=START, end=END, limit=5)
    assert fetched == len(in_range)
    assert list(points) == tags
    for tag in tags:
        assert [(point["t"], point["value"]) for point in points[tag]] == [
            (ts, value) for row_tag, ts, value in in_range if row_tag == tag
        ]
        assert all(point["t"].utcoffset() == timedelta(0) for point in points[tag])
    # The limit counts rows of all tags together, in (tag, ts) order.
    assert fetched_few == 5
    assert [(tag, point["t"]) for tag in tags for point in few[tag]] == [(tag, ts) for tag, ts, _ in in_range[:5]]
    if engine.dialect.name != "sqlite":
        # A session in another time zone still answers UTC (as UTCDateTime does for ORM reads).
        async with engine.connect() as conn:
            await conn.execute(text("SET TIME ZONE 'America/New_York'"))
            zoned, _ = await raw_points(
                conn, machine_id=machine_id, tags=tags, start=START, end=END, limit=len(in_range) + 1
            )
        assert [point["t"].isoformat() for point in zoned["temp"]] == [
            point["t"].isoformat() for point in points["temp"]
        ]
        assert all(point["t"].isoformat().endswith("+00:00") for point in zoned["temp"])


async def test_an_unregistered_machine_has_no_points(engine: AsyncEngine) -> None:
    # `reading` has no foreign key: rows of an id that is not (or no longer) a machine must not answer.
    rows = generated(seed=4, count=200)
    machine_id = await load(engine, rows)
    stray = machine_id + 100
    async with engine.begin() as conn:
        stored = [{"machine_id": stray, "tag": tag, "ts": ts, "value": value} for tag, ts, value in rows]
        await conn.execute(insert(Reading), stored)
    async with engine.connect() as conn:
        for unknown, expected in [(stray, False), (machine_id, True)]:
            points = await bucketed_points(
                conn, machine_id=unknown, tags=["temp"], start=START, end=END, bucket=timedelta(minutes=1)
            )
            raw, fetched = await raw_points(conn, machine_id=unknown, tags=["temp"], start=START, end=END, limit=10)
            assert (bool(points["temp"]), bool(raw["temp"]), fetched > 0) == (expected, expected, expected)


async def test_a_series_read_is_ended_by_the_callers_rollback(engine: AsyncEngine) -> None:
    # The rows come through the driver's own cursor; the transaction it opens must still be the connection's.
    machine_id = await load(engine, generated(seed=5, count=50))
    async with engine.connect() as conn:
        assert not conn.in_transaction()
        await bucketed_points(
            conn, machine_id=machine_id, tags=["temp"], start=START, end=END, bucket=timedelta(minutes=1)
        )
        assert conn.in_transaction()
        await conn.rollback()
        assert not conn.in_transaction()
        if engine.dialect.name != "sqlite":
            driver: Any = (await conn.get_raw_connection()).driver_connection
            assert driver.info.transaction_status.name == "IDLE"

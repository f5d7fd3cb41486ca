"""Bucketed series equal a naive Python computation over the same generated data (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.timeseries import align
from tests.support.timeseries import T0, assert_same, bucketed, generated, load, naive


@pytest.mark.parametrize(
    "bucket", [timedelta(minutes=1), timedelta(minutes=5), timedelta(seconds=90), timedelta(hours=1)]
)
async def test_buckets_match_python(engine: AsyncEngine, bucket: timedelta) -> None:
    rows = generated(seed=int(bucket.total_seconds()))
    machine_id = await load(engine, rows)
    start, end = T0 + timedelta(minutes=1, seconds=30), T0 + timedelta(minutes=37)
    async with engine.connect() as conn:
        series = await bucketed(
            conn, machine_id=machine_id, tags=["temp", "speed"], start=start, end=end, bucket=bucket
        )
    expected = [row for row in naive(rows, start, end, bucket) if row.tag in {"temp", "speed"}]
    assert expected
    assert_same(series, expected)


async def test_empty_inputs(engine: AsyncEngine) -> None:
    machine_id = await load(engine, generated(seed=1, count=10))
    async with engine.connect() as conn:
        assert (
            await bucketed(
                conn, machine_id=machine_id, tags=[], start=T0, end=T0 + timedelta(hours=1), bucket=timedelta(minutes=1)
            )
            == []
        )
        assert (
            await bucketed(
                conn,
                machine_id=machine_id,
                tags=["nope"],
                start=T0,
                end=T0 + timedelta(hours=1),
                bucket=timedelta(minutes=1),
            )
            == []
        )
        with pytest.raises(ValueError, match="whole number"):
            await bucketed(
                conn, machine_id=machine_id, tags=["temp"], start=T0, end=T0, bucket=timedelta(milliseconds=1500)
            )


def test_align_widens_to_whole_buckets() -> None:
    start, end = T0 + timedelta(seconds=5), T0 + timedelta(minutes=3, microseconds=1)
    assert align(start, end, timedelta(minutes=1)) == (
        datetime(2026, 11, 26, 7, 58, tzinfo=UTC),
        datetime(2026, 11, 26, 8, 2, tzinfo=UTC),
    )
    exact = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert align(exact, exact + timedelta(hours=1), timedelta(hours=1)) == (exact, exact + timedelta(hours=1))

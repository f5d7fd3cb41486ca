"""Bucketed series equal a naive Python computation over the same generated data (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import session_factory, transaction
from core.timeseries import align
from tests.support.factories import add_readings, make_machine
from tests.support.timeseries import BucketRow, bucketed

T0 = datetime(2026, 11, 26, 7, 58, 30, tzinfo=UTC)


def generated(seed: int, count: int = 600) -> list[tuple[str, datetime, float]]:
    """Irregular timestamps over about 40 minutes, three tags, values with decimals."""
    rng = random.Random(seed)
    rows, moment = [], T0
    for _ in range(count):
        moment += timedelta(milliseconds=rng.randint(200, 7000))
        rows.append((rng.choice(["temp", "pressure", "speed"]), moment, round(rng.uniform(-50, 500), 3)))
    return rows


def naive(
    rows: list[tuple[str, datetime, float]], start: datetime, end: datetime, bucket: timedelta
) -> list[BucketRow]:
    """The reference: group in Python, whole buckets aligned to midnight UTC covering [start, end)."""
    groups: dict[tuple[str, datetime], list[tuple[datetime, float]]] = defaultdict(list)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight + (start - midnight) // bucket * bucket
    end = midnight + -(-(end - midnight) // bucket) * bucket
    for tag, ts, value in rows:
        if start <= ts < end:
            index = (ts - midnight) // bucket
            groups[(tag, midnight + index * bucket)].append((ts, value))
    return [
        BucketRow(
            bucket=key[1],
            tag=key[0],
            avg=sum(v for _, v in values) / len(values),
            min=min(v for _, v in values),
            max=max(v for _, v in values),
            count=len(values),
            last=max(values)[1],
        )
        for key, values in sorted(groups.items())
    ]


async def load(engine: AsyncEngine, rows: list[tuple[str, datetime, float]]) -> int:
    async with transaction(session_factory(engine)) as session:
        machine = await make_machine(session, "m", site="p")
        await add_readings(session, machine.id, rows)
        # Another machine's readings must never leak into the series.
        other = await make_machine(session, "o", site="p")
        await add_readings(session, other.id, [("temp", T0 + timedelta(minutes=5), 1e9)])
    return machine.id


def assert_same(actual: list[BucketRow], expected: list[BucketRow]) -> None:
    assert [(row.tag, row.bucket, row.count) for row in actual] == [
        (row.tag, row.bucket, row.count) for row in expected
    ]
    for got, want in zip(actual, expected, strict=True):
        assert got.avg == pytest.approx(want.avg, rel=1e-9, abs=1e-9)
        assert (got.min, got.max, got.last) == (want.min, want.max, want.last)


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

"""Rollups as rows and generated series, for tests that compare `bucketed_points` with a naive computation."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import session_factory, transaction
from core.timeseries import bucketed_points
from tests.support.factories import add_readings, make_machine


@dataclass(frozen=True)
class BucketRow:
    """The aggregates of one tag in one bucket (None where not asked for)."""

    bucket: datetime
    tag: str
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None
    last: float | None = None
    not_good: int | None = None


async def bucketed(conn: AsyncConnection, *, tags: Sequence[str], **query: Any) -> list[BucketRow]:
    """`bucketed_points(conn, tags=…, **query)` as one `BucketRow` per tag and bucket, ordered by tag then time."""
    points = await bucketed_points(conn, tags=sorted(set(tags)), **query)
    return [
        BucketRow(bucket=point["t"], tag=tag, **{key: value for key, value in point.items() if key != "t"})
        for tag, series in points.items()
        for point in series
    ]


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

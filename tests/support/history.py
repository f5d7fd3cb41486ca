"""Generated readings and the naive reference that the machine-history tests (every database tier) compare with."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.factories import add_readings, make_machine

T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AGGS = ("avg", "min", "max", "last", "count")
Row = tuple[str, datetime, float]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def generated(seed: int, *, start: datetime, hours: int, count: int, tags: tuple[str, ...]) -> list[Row]:
    """Irregular millisecond timestamps, values with decimals, at most one reading per (tag, ts)."""
    rng = random.Random(seed)
    rows: dict[tuple[str, datetime], float] = {}
    while len(rows) < count:
        moment = start + timedelta(milliseconds=rng.randrange(hours * 3_600_000))
        rows[(rng.choice(tags), moment)] = round(rng.uniform(-50, 500), 3)
    return [(tag, ts, value) for (tag, ts), value in rows.items()]


async def machine_with_data(api: Api, rows: list[Row]) -> int:
    """A machine holding `rows`, next to another machine whose readings must never leak in."""
    async with api.session() as session:
        machine = await make_machine(session)
        await add_readings(session, machine.id, rows)
        other = await make_machine(session, "other")
        await add_readings(session, other.id, [(tag, ts + timedelta(microseconds=1), 1e9) for tag, ts, _ in rows[:50]])
    return machine.id


def floor_to(moment: datetime, size: timedelta) -> datetime:
    return EPOCH + (moment - EPOCH) // size * size


def ceil_to(moment: datetime, size: timedelta) -> datetime:
    return EPOCH + -(-(moment - EPOCH) // size) * size


def naive_points(rows: list[Row], tag: str, start: datetime, end: datetime, size: timedelta) -> list[dict[str, Any]]:
    """The reference: every aggregate of each bucket (counted from the epoch) over the widened range."""
    low, high = floor_to(start, size), ceil_to(end, size)
    groups: dict[datetime, list[tuple[datetime, float]]] = defaultdict(list)
    for row_tag, ts, value in rows:
        if row_tag == tag and low <= ts < high:
            groups[floor_to(ts, size)].append((ts, value))
    points = []
    for bucket, values in sorted(groups.items()):
        numbers = [value for _, value in values]
        points.append(
            {
                "t": bucket,
                "avg": sum(numbers) / len(numbers),
                "min": min(numbers),
                "max": max(numbers),
                "last": max(values)[1],
                "count": len(numbers),
            }
        )
    return points


def assert_points_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [datetime.fromisoformat(point["t"]) for point in got] == [point["t"] for point in want]
    for actual, expected in zip(got, want, strict=True):
        assert set(actual) == {"t", *AGGS, "not_good"}
        assert actual["not_good"] == 0  # every generated reading is good
        assert actual["avg"] == pytest.approx(expected["avg"], rel=1e-9, abs=1e-9)
        assert (actual["min"], actual["max"], actual["last"], actual["count"]) == (
            expected["min"],
            expected["max"],
            expected["last"],
            expected["count"],
        )


BUCKET_CASES = [
    ("1m", timedelta(minutes=1), T0 + timedelta(seconds=17), T0 + timedelta(hours=6, seconds=3)),
    ("5m", timedelta(minutes=5), T0 + timedelta(minutes=2), T0 + timedelta(days=1, minutes=7)),
    ("15m", timedelta(minutes=15), T0 - timedelta(minutes=59, seconds=20), T0 + timedelta(hours=50)),
    ("1h", timedelta(hours=1), T0 - timedelta(hours=3), T0 + timedelta(days=3)),
    ("1d", timedelta(days=1), T0 - timedelta(days=10), T0 + timedelta(days=20)),
]

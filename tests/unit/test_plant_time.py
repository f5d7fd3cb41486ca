"""Plant time (core.planttime): naive local times, plant days across clock changes, the offsets SQLite uses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from api.planttime import PlantDateTime
from core.planttime import align_days, day_from_number, day_of, from_local, midnight, oddity, offsets
from tests.support.planttime import BERLIN, utc

ISTANBUL = ZoneInfo("Europe/Istanbul")
# Chile's clocks went forward at local midnight (2024-09-08 00:00 became 01:00): that day has no 00:00.
SANTIAGO = ZoneInfo("America/Santiago")


def naive(text: str) -> datetime:
    """A wall-clock time without a zone, as a client sends it."""
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("naive", "instant", "odd"),
    [
        (naive("2026-03-29T01:59:00"), utc(2026, 3, 29, 0, 59), None),
        (naive("2026-03-29T02:00:00"), utc(2026, 3, 29, 1, 0), "nonexistent"),  # as if clocks had not moved
        (naive("2026-03-29T02:30:00"), utc(2026, 3, 29, 1, 30), "nonexistent"),
        (naive("2026-03-29T03:00:00"), utc(2026, 3, 29, 1, 0), None),
        (naive("2026-10-25T02:30:00"), utc(2026, 10, 25, 0, 30), "ambiguous"),  # the first 02:30 (CEST)
        (naive("2026-10-25T03:00:00"), utc(2026, 10, 25, 2, 0), None),
    ],
)
def test_naive_local_times_around_clock_changes(naive: datetime, instant: datetime, odd: str | None) -> None:
    assert from_local(naive, BERLIN) == instant
    assert from_local(naive, BERLIN).tzinfo is UTC
    assert oddity(naive, BERLIN) == odd


def test_an_aware_time_keeps_its_instant() -> None:
    aware = datetime(2026, 3, 29, 2, 30, tzinfo=ISTANBUL)
    assert from_local(aware, BERLIN) == utc(2026, 3, 28, 23, 30)


@pytest.mark.parametrize(
    ("at", "start", "length"),
    [
        (utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), timedelta(hours=23)),
        (utc(2026, 10, 25, 12), utc(2026, 10, 24, 22), timedelta(hours=25)),
        (utc(2026, 7, 1, 21, 59), utc(2026, 6, 30, 22), timedelta(hours=24)),
        (utc(2026, 7, 1, 22), utc(2026, 7, 1, 22), timedelta(hours=24)),
    ],
)
def test_plant_days_are_23_24_or_25_hours(at: datetime, start: datetime, length: timedelta) -> None:
    assert day_of(at, BERLIN) == (start, start + length)


def test_a_day_without_midnight_starts_when_the_clocks_jump() -> None:
    start, end = day_of(datetime(2024, 9, 8, 12, tzinfo=UTC), SANTIAGO)
    assert start == datetime(2024, 9, 8, 4, tzinfo=UTC)  # 00:00 -04 is 01:00 -03
    assert end - start == timedelta(hours=23)


def test_ranges_widen_to_whole_plant_days() -> None:
    assert align_days(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), BERLIN) == (
        utc(2026, 3, 28, 23),
        utc(2026, 3, 29, 22),
    )
    assert align_days(utc(2026, 3, 29, 5), utc(2026, 3, 29, 22, 0, 1), BERLIN) == (
        utc(2026, 3, 28, 23),
        utc(2026, 3, 30, 22),
    )
    assert midnight(date(2026, 3, 30), BERLIN) == utc(2026, 3, 29, 22)
    assert day_from_number((date(2026, 3, 30) - date(1970, 1, 1)).days, BERLIN) == utc(2026, 3, 29, 22)


def test_offsets_change_at_the_second_the_clocks_do() -> None:
    year = offsets(utc(2025, 12, 31, 23), utc(2026, 12, 31, 23), BERLIN)
    assert year == [
        (int(utc(2025, 12, 31, 23).timestamp()), 3600),
        (int(utc(2026, 3, 29, 1).timestamp()), 7200),
        (int(utc(2026, 10, 25, 1).timestamp()), 3600),
    ]
    assert offsets(utc(2026, 1, 1), utc(2027, 1, 1), ISTANBUL) == [(int(utc(2026, 1, 1).timestamp()), 10800)]


@pytest.mark.parametrize(
    ("zone", "local", "start"),
    [
        (BERLIN, naive("2026-03-29T23:59:59"), utc(2026, 3, 28, 23)),
        (BERLIN, naive("2026-10-25T02:30:00"), utc(2026, 10, 24, 22)),
        (SANTIAGO, naive("2024-09-08T01:00:00"), datetime(2024, 9, 8, 4, tzinfo=UTC)),
    ],
)
def test_the_local_day_number_sqlite_computes_finds_the_plant_day(
    zone: ZoneInfo, local: datetime, start: datetime
) -> None:
    # What the SQLite statement does: (epoch + the offset in force) // 86400, then Python's day start.
    instant = from_local(local, zone)
    epoch = int(instant.timestamp())
    offset = [seconds for since, seconds in offsets(start, start + timedelta(days=2), zone) if since <= epoch][-1]
    assert day_from_number((epoch + offset) // 86400, zone) == start


def test_plant_datetime_outside_a_request_reads_naive_as_utc() -> None:
    adapter = TypeAdapter(PlantDateTime)
    assert adapter.validate_python("2026-03-29T02:30:00") == utc(2026, 3, 29, 2, 30)
    assert adapter.validate_python("2026-03-29T02:30:00+03:00") == utc(2026, 3, 28, 23, 30)
    with pytest.raises(ValidationError, match="first or last representable"):
        adapter.validate_python("0001-01-01T00:00:00+05:00")

"""The plant's local time (PLANT_TIMEZONE): naive times read in its zone, and its local days.

A naive time in the hour repeated when clocks go back is its first occurrence (`fold=0`); one in the hour skipped
when they go forward is read as if the clocks had not moved yet, with the offset in force before the change (02:30
on the spring-forward night of Europe/Berlin is 01:30 UTC, 03:30 CEST). PostgreSQL reads a skipped local time the
same way, so local-day boundaries computed here and in SQL agree. A plant day runs from local midnight to local
midnight: 23 or 25 hours long across a daylight-saving change.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

DAY = timedelta(days=1)
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def from_local(naive: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time of `zone` as an aware instant in UTC (an aware time is only converted to UTC)."""
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def oddity(naive: datetime, zone: ZoneInfo) -> Literal["ambiguous", "nonexistent"] | None:
    """Whether a naive local time of `zone` falls in a repeated hour (ambiguous) or a skipped one (nonexistent)."""
    local = naive.replace(tzinfo=zone, fold=0)
    if local.replace(fold=1).utcoffset() == local.utcoffset():
        return None
    round_trip = local.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return "ambiguous" if round_trip == naive.replace(tzinfo=None) else "nonexistent"


def midnight(day: date, zone: ZoneInfo) -> datetime:
    """When the plant day `day` begins, in UTC."""
    return from_local(datetime.combine(day, time()), zone)


def local_date(at: datetime, zone: ZoneInfo) -> date:
    """The plant's calendar day at the instant `at`."""
    return at.astimezone(zone).date()


def day_start(at: datetime, zone: ZoneInfo) -> datetime:
    """The start, in UTC, of the plant day `at` falls in."""
    return midnight(local_date(at, zone), zone)


def day_of(at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The plant day `at` falls in, as [start, end) in UTC."""
    day = local_date(at, zone)
    return midnight(day, zone), midnight(day + DAY, zone)


def align_days(start: datetime, end: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) widened to whole plant days."""
    low = day_start(start, zone)
    last = local_date(end, zone)
    high = midnight(last, zone)
    if high < end:
        high = midnight(last + DAY, zone)
    return low, high


def day_from_number(number: int, zone: ZoneInfo) -> datetime:
    """The start, in UTC, of the plant day counted `number` days from 1970-01-01."""
    return midnight(date.fromordinal(_EPOCH_DAY + number), zone)


def offsets(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[int, int]]:
    """The zone's UTC offsets over [start, end): `(from epoch second, offset in seconds)`, the first from `start`.

    Local wall time is epoch seconds plus the offset in force; SQL without a time-zone database (SQLite) finds a
    reading's plant day from these. The changes are found to the second between consecutive plant days.
    """
    first = int(start.timestamp())
    found = [(first, _offset(first, zone))]
    for day_begin, day_end in _days(start, end, zone):
        low, high = int(day_begin.timestamp()), int(day_end.timestamp())
        if _offset(high, zone) == _offset(low, zone):
            continue
        after = _offset(high, zone)
        # The first second of the day with the new offset.
        while high - low > 1:
            middle = (low + high) // 2
            if _offset(middle, zone) == after:
                high = middle
            else:
                low = middle
        if high > first:
            found.append((high, after))
    return found


def _days(start: datetime, end: datetime, zone: ZoneInfo) -> Iterator[tuple[datetime, datetime]]:
    day = local_date(start, zone)
    begin = midnight(day, zone)
    while begin < end:
        day += DAY
        following = midnight(day, zone)
        yield begin, following
        begin = following


def _offset(epoch: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(epoch, UTC).astimezone(zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0

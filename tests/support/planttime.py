"""Readings around Europe/Berlin's 2026 clock changes and the plant days they must fall in (every database tier).

Clocks go forward on Sunday 29 March (02:00 CET becomes 03:00 CEST, at 01:00 UTC) and back on Sunday 25 October
(03:00 CEST becomes 02:00 CET, at 01:00 UTC): those plant days last 23 and 25 hours.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A UTC instant."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (tag, ts, value); the comment is the plant's wall time.
DST_READINGS = [
    ("temp", utc(2026, 3, 28, 22, 59, 59), 1.0),  # Sat 28 Mar 23:59:59 CET
    ("temp", utc(2026, 3, 28, 23, 0, 0), 2.0),  # Sun 29 Mar 00:00 CET
    ("temp", utc(2026, 3, 29, 0, 59, 59), 3.0),  # 01:59:59 CET, the last second before the change
    ("temp", utc(2026, 3, 29, 1, 0, 0), 4.0),  # 03:00 CEST
    ("temp", utc(2026, 3, 29, 21, 59, 59), 5.0),  # 23:59:59 CEST
    ("temp", utc(2026, 3, 29, 22, 0, 0), 6.0),  # Mon 30 Mar 00:00 CEST
    ("temp", utc(2026, 10, 24, 21, 59, 59), 7.0),  # Sat 24 Oct 23:59:59 CEST
    ("temp", utc(2026, 10, 24, 22, 0, 0), 8.0),  # Sun 25 Oct 00:00 CEST
    ("temp", utc(2026, 10, 25, 0, 30), 9.0),  # 02:30 CEST, the first time
    ("temp", utc(2026, 10, 25, 1, 30), 10.0),  # 02:30 CET, the second time
    ("temp", utc(2026, 10, 25, 22, 59, 59), 11.0),  # 23:59:59 CET
    ("temp", utc(2026, 10, 25, 23, 0, 0), 12.0),  # Mon 26 Oct 00:00 CET
]
# A request for three plant days (naive: plant time) around each change, and the answer: the range widened to
# whole plant days, and (day start, count, last value) per day.
DST_CASES = {
    "spring forward": (
        {"from": "2026-03-28T00:00:00", "to": "2026-03-31T00:00:00"},
        (utc(2026, 3, 27, 23), utc(2026, 3, 30, 22)),
        [(utc(2026, 3, 27, 23), 1, 1.0), (utc(2026, 3, 28, 23), 4, 5.0), (utc(2026, 3, 29, 22), 1, 6.0)],
        timedelta(hours=23),
    ),
    "fall back": (
        {"from": "2026-10-24T00:00:00", "to": "2026-10-27T00:00:00"},
        (utc(2026, 10, 23, 22), utc(2026, 10, 26, 23)),
        [(utc(2026, 10, 23, 22), 1, 7.0), (utc(2026, 10, 24, 22), 4, 11.0), (utc(2026, 10, 25, 23), 1, 12.0)],
        timedelta(hours=25),
    ),
}


HAVANA = ZoneInfo("America/Havana")
# Havana's clocks go back at 01:00 CDT to 00:00 CST on Sunday 1 November 2026: its midnight comes twice, and the day
# begins at the first (04:00 UTC) and lasts 25 hours.
HAVANA_READINGS = [
    ("temp", utc(2026, 11, 1, 3, 59, 59), 1.0),  # Sat 31 Oct 23:59:59 CDT
    ("temp", utc(2026, 11, 1, 4, 0, 0), 2.0),  # Sun 1 Nov 00:00 CDT, the first midnight
    ("temp", utc(2026, 11, 1, 5, 30), 3.0),  # 00:30 CST, the second time
    ("temp", utc(2026, 11, 2, 4, 59, 59), 4.0),  # 23:59:59 CST
    ("temp", utc(2026, 11, 2, 5, 0, 0), 5.0),  # Mon 2 Nov 00:00 CST
]
HAVANA_DAYS = [(utc(2026, 10, 31, 4), 1, 1.0), (utc(2026, 11, 1, 4), 3, 4.0), (utc(2026, 11, 2, 5), 1, 5.0)]


def assert_plant_days(body: dict[str, Any], case: str) -> None:
    """A `bucket=1d` answer for `DST_CASES[case]`: plant days, the one with the clock change 23 or 25 hours long."""
    _, (low, high), days, changed = DST_CASES[case]
    assert (datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])) == (low, high)
    [series] = body["series"]
    got = [(datetime.fromisoformat(point["t"]), point["count"], point["last"]) for point in series["points"]]
    assert got == days
    starts = [start for start, _, _ in days]
    assert starts[2] - starts[1] == changed
    assert starts[1].astimezone(BERLIN).hour == 0  # each day starts at the plant's midnight

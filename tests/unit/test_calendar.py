"""The plant calendar (core.calendar): planned production time computed by hand, across midnight and DST."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.calendar import (
    Break,
    CalendarError,
    CalendarException,
    ExceptionKind,
    Interval,
    PlantCalendar,
    Shift,
    WeeklyPattern,
    group_by_day,
    local_day,
    total,
    weekly,
)

ISTANBUL = ZoneInfo("Europe/Istanbul")  # UTC+3 all year
BERLIN = ZoneInfo("Europe/Berlin")  # CET/CEST: forward 2026-03-29 02:00, back 2026-10-25 03:00
WEEKDAYS = (0, 1, 2, 3, 4)
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def three_shifts(days: tuple[int, ...] = WEEKDAYS, valid_from: date = date(2026, 1, 1)) -> list[object]:
    """Early, late and night shift of 8 h with a 30-minute break each."""
    return [
        weekly(
            valid_from,
            [
                ("early", days, time(6), time(14), [Break(time(10), time(10, 30))]),
                ("late", days, time(14), time(22), [Break(time(18), time(18, 30))]),
                ("night", days, time(22), time(6), [Break(time(2), time(2, 30))]),
            ],
        )
    ]


def plant(zone: ZoneInfo = ISTANBUL, days: tuple[int, ...] = WEEKDAYS, **extra: object) -> PlantCalendar:
    return PlantCalendar(zone, tuple(three_shifts(days)), **extra)  # type: ignore[arg-type] # rows are patterns


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def window(zone: ZoneInfo, start: tuple[int, ...], end: tuple[int, ...]) -> Interval:
    return Interval(at(zone, *start).astimezone(UTC), at(zone, *end).astimezone(UTC))


# --- hand-computed scenarios -------------------------------------------------------------------------------------


def test_a_three_shift_day_with_breaks_plans_22_and_a_half_hours() -> None:
    calendar = plant()
    monday = date(2026, 11, 30)
    shifts = calendar.shifts_on(monday)
    assert [shift.name for shift in shifts] == ["early", "late", "night"]
    assert [shift.planned() for shift in shifts] == [7.5 * H] * 3
    assert calendar.day_planned_time(monday) == 22.5 * H
    # The night shift belongs to Monday and ends on Tuesday at 06:00 local (03:00 UTC in Istanbul).
    assert shifts[2].span.end == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_a_local_midnight_window_counts_the_night_shift_on_both_sides() -> None:
    calendar = plant()
    # Tuesday 00:00-24:00: Monday's night shift 00:00-06:00 (break 02:00-02:30) = 5.5 h, early 7.5, late 7.5,
    # and Tuesday's night shift 22:00-24:00 = 2 h.
    tuesday = local_day(ISTANBUL, date(2026, 12, 1))
    assert calendar.planned_time(tuesday) == (5.5 + 7.5 + 7.5 + 2) * H
    # Monday (no Sunday shifts before it): 7.5 + 7.5 + 2.
    assert calendar.planned_time(local_day(ISTANBUL, date(2026, 11, 30))) == 17 * H


def test_a_window_cuts_shifts_and_breaks() -> None:
    calendar = plant()
    # 09:00-12:00 on Monday: 3 h of the early shift minus its 10:00-10:30 break.
    assert calendar.planned_time(window(ISTANBUL, (2026, 11, 30, 9), (2026, 11, 30, 12))) == 2.5 * H
    # 10:15-10:20 lies wholly inside the break.
    assert calendar.planned_time(window(ISTANBUL, (2026, 11, 30, 10, 15), (2026, 11, 30, 10, 20))) == timedelta(0)


def test_a_holiday_plans_nothing_and_an_extra_saturday_shift_counts() -> None:
    holiday = CalendarException(date(2026, 12, 2), ExceptionKind.NON_WORKING)
    saturday = CalendarException(
        date(2026, 12, 5),
        ExceptionKind.EXTRA_SHIFT,
        Shift("extra", 5, time(8), time(12), (Break(time(10), time(10, 15)),)),
    )
    calendar = plant(exceptions=(holiday, saturday))
    assert calendar.day_planned_time(date(2026, 12, 2)) == timedelta(0)
    assert calendar.day_planned_time(date(2026, 12, 5)) == 3.75 * H
    # The week: four working days of 22.5 h and the Saturday.
    assert calendar.week_planned_time(date(2026, 11, 30)) == 4 * 22.5 * H + 3.75 * H
    # Tuesday's night shift still runs into the holiday morning; the holiday removes only shifts starting on it.
    assert calendar.planned_time(local_day(ISTANBUL, date(2026, 12, 2))) == 5.5 * H


def test_a_new_pattern_applies_from_its_date_and_leaves_history_alone() -> None:
    old = three_shifts()[0]
    new = weekly(date(2026, 12, 3), [("day", WEEKDAYS, time(7), time(17), [Break(time(12), time(13))])])
    calendar = PlantCalendar(ISTANBUL, (new, old))  # type: ignore[arg-type] # rows are patterns
    assert calendar.day_planned_time(date(2026, 12, 2)) == 22.5 * H
    assert calendar.day_planned_time(date(2026, 12, 3)) == 9 * H
    assert calendar.day_planned_time(date(2025, 12, 31)) == timedelta(0)  # before any pattern: nothing planned


def test_the_night_the_clocks_go_forward_is_an_hour_shorter() -> None:
    calendar = plant(BERLIN, EVERY_DAY)
    saturday = date(2026, 3, 28)
    night = calendar.shifts_on(saturday)[2]
    # 22:00 CET (21:00 UTC) to 06:00 CEST (04:00 UTC): 7 h. Its break 02:00-02:30 does not exist on the wall; it is
    # read with the offset from before the change (01:00-01:30 UTC, shown as 03:00-03:30 CEST).
    assert night.span == Interval(datetime(2026, 3, 28, 21, tzinfo=UTC), datetime(2026, 3, 29, 4, tzinfo=UTC))
    assert night.breaks == (Interval(datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),)
    assert night.planned() == 6.5 * H
    assert calendar.day_planned_time(saturday) == (7.5 + 7.5 + 6.5) * H
    assert local_day(BERLIN, date(2026, 3, 29)).duration == 23 * H


def test_the_night_the_clocks_go_back_is_an_hour_longer() -> None:
    calendar = plant(BERLIN, EVERY_DAY)
    saturday = date(2026, 10, 24)
    night = calendar.shifts_on(saturday)[2]
    # 22:00 CEST (20:00 UTC) to 06:00 CET (05:00 UTC): 9 h; the break at 02:00 is the first of the two 02:00s.
    assert night.span.duration == 9 * H
    assert night.breaks[0].start == datetime(2026, 10, 25, 0, tzinfo=UTC)
    assert night.planned() == 8.5 * H
    assert local_day(BERLIN, date(2026, 10, 25)).duration == 25 * H
    # Sunday 00:00-24:00 local holds 25 hours: the end of Saturday's night shift (6 h + 1 repeated, minus the break),
    # early, late, and 2 h of Sunday's night shift.
    assert calendar.planned_time(local_day(BERLIN, date(2026, 10, 25))) == (6.5 + 7.5 + 7.5 + 2) * H


def test_shifts_group_by_their_production_day() -> None:
    calendar = plant()
    shifts = calendar.shifts_between(window(ISTANBUL, (2026, 11, 30, 0), (2026, 12, 2, 0)))
    grouped = group_by_day(shifts)
    assert {day: [shift.name for shift in found] for day, found in grouped.items()} == {
        date(2026, 11, 30): ["early", "late", "night"],
        date(2026, 12, 1): ["early", "late", "night"],
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Shift("a", 0, time(6), time(14), (Break(time(13, 45), time(14, 15)),)), "not inside"),
        (lambda: Shift("a", 0, time(22), time(6), (Break(time(21), time(21, 30)),)), "not inside"),
        (lambda: Shift("a", 7, time(6), time(14)), "weekday"),
        (lambda: CalendarException(date(2026, 1, 1), ExceptionKind.EXTRA_SHIFT), "extra shift"),
        (lambda: PlantCalendar(ISTANBUL, (weekly(date(2026, 1, 1), []), weekly(date(2026, 1, 1), []))), "same date"),
        (lambda: plant().week_planned_time(date(2026, 12, 1)), "not a Monday"),
    ],
    ids=["break-after-end", "break-before-night-start", "weekday", "extra-without-shift", "two-patterns", "week"],
)
def test_a_calendar_that_cannot_be_meant_is_refused(make: object, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        make()  # type: ignore[operator] # the lambdas above


# --- properties --------------------------------------------------------------------------------------------------

# hypothesis takes naive bounds and attaches the zone itself.
instants = st.datetimes(
    min_value=datetime(2026, 3, 20),  # noqa: DTZ001 -- see above
    max_value=datetime(2026, 11, 5),  # noqa: DTZ001 -- see above
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=0))


@settings(max_examples=150, deadline=None)
@given(first=instants, second=instants, third=instants)
def test_planned_time_of_adjacent_windows_adds_up(first: datetime, second: datetime, third: datetime) -> None:
    start, middle, end = sorted((first, second, third))
    calendar = plant(BERLIN, EVERY_DAY)
    whole = calendar.planned_time(Interval(start, end))
    assert whole == calendar.planned_time(Interval(start, middle)) + calendar.planned_time(Interval(middle, end))
    assert timedelta(0) <= whole <= Interval(start, end).duration


@settings(max_examples=60, deadline=None)
@given(
    monday=st.dates(min_value=date(2026, 1, 5), max_value=date(2026, 12, 21)).map(lambda d: d - timedelta(d.weekday()))
)
def test_days_add_up_to_their_week_and_shifts_to_their_day(monday: date) -> None:
    calendar = plant(BERLIN, EVERY_DAY)
    days = [monday + timedelta(days=offset) for offset in range(7)]
    assert calendar.week_planned_time(monday) == sum((calendar.day_planned_time(day) for day in days), timedelta(0))
    for day in days:
        assert calendar.day_planned_time(day) == sum(
            (shift.planned() for shift in calendar.shifts_on(day)), timedelta(0)
        )
    # The week's shifts, measured as instants over a window holding all of them, give the same total.
    shifts = [shift for day in days for shift in calendar.shifts_on(day)]
    span = Interval(shifts[0].span.start, shifts[-1].span.end)
    assert calendar.planned_time(span) == calendar.week_planned_time(monday)


@settings(max_examples=100, deadline=None)
@given(first=instants, second=instants)
def test_planned_intervals_measure_the_planned_time(first: datetime, second: datetime) -> None:
    calendar = plant(BERLIN, EVERY_DAY)
    span = Interval(min(first, second), max(first, second))
    pieces = calendar.planned_intervals(span)
    assert total(pieces) == calendar.planned_time(span)
    assert all(span.start <= piece.start < piece.end <= span.end for piece in pieces)
    assert all(earlier.end < later.start for earlier, later in itertools.pairwise(pieces))  # disjoint, sorted, merged


def test_planned_intervals_leave_out_breaks() -> None:
    calendar = plant()
    pieces = calendar.planned_intervals(window(ISTANBUL, (2026, 11, 30, 9), (2026, 11, 30, 15)))
    assert [(piece.start.astimezone(ISTANBUL).time(), piece.end.astimezone(ISTANBUL).time()) for piece in pieces] == [
        (time(9), time(10)),
        (time(10, 30), time(15)),  # early and late shifts touch at 14:00: one piece
    ]


@pytest.mark.parametrize(
    ("saturday", "start", "end", "starts_at"),
    [
        # Spring: 02:30 does not exist (read as 01:30 UTC); 03:00 is CEST (01:00 UTC), before its start.
        (date(2026, 3, 28), time(2, 30), time(3), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        # Autumn: 02:45 is its first occurrence (CEST, 00:45 UTC); 03:15 CET would be 90 minutes later.
        (date(2026, 10, 24), time(2, 45), time(3, 15), datetime(2026, 10, 25, 0, 45, tzinfo=UTC)),
    ],
    ids=["spring", "autumn"],
)
def test_a_break_across_a_clock_change_keeps_its_length(
    saturday: date, start: time, end: time, starts_at: datetime
) -> None:
    night = Shift("night", 5, time(22), time(6), (Break(start, end),))
    calendar = PlantCalendar(BERLIN, (WeeklyPattern(date(2026, 1, 1), (night,)),))
    [shift] = calendar.shifts_on(saturday)
    assert shift.breaks == (Interval(starts_at, starts_at + 30 * M),)
    assert shift.planned() == shift.span.duration - 30 * M

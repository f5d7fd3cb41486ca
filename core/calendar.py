"""The plant calendar: when production is planned, as pure functions (no I/O, no clock).

A calendar is a list of weekly patterns, each valid from a local date until the next one starts (changing the
pattern never rewrites history), plus one-off exceptions per local date: a non-working day (a holiday) or an extra
shift (a Saturday worked once). A shift is given in the plant's local wall time on a weekday; it may cross midnight
(end at or before start), and its breaks are local wall times inside it.

Rules a plant manager can check by hand:
- A shift belongs to the **production day** it starts on (a night shift 22:00-06:00 started on Monday is Monday's),
  and a production day's planned time is the sum of its shifts'. So "sum of shifts = day" and "sum of days = week"
  hold by construction, across midnight and across a change of daylight saving time.
- Wall times become instants in the plant's zone. Across a DST change a shift lasts what the clocks say: a night shift
  22:00-06:00 is 7 h when the clocks go forward and 9 h when they go back. A wall time that does not exist (inside
  the skipped hour) is read as if the clocks had not moved yet; one that exists twice (the repeated hour) as its first
  occurrence (`fold=0`). A break starts at its wall time read the same way and lasts its wall-clock length: a
  30-minute break is 30 minutes even when the clocks change during it.
- Planned production time = scheduled shift time minus breaks (a break outside its shift counts for nothing).
- A window's planned time counts only the part of each shift (and break) inside the window, so planned time over
  adjacent windows adds up to the planned time over their union.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

ZERO = timedelta(0)


class CalendarError(ValueError):
    """A calendar that cannot be meant (an empty shift, a break outside its shift, two patterns on one date)."""


@dataclass(frozen=True)
class Interval:
    """A half-open span of time [start, end) between two aware instants."""

    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        """How long it lasts (never negative)."""
        return max(self.end - self.start, ZERO)

    def overlap(self, other: Interval) -> timedelta:
        """How much of `other` lies inside this interval."""
        return max(min(self.end, other.end) - max(self.start, other.start), ZERO)


@dataclass(frozen=True)
class Break:
    """A planned stop inside a shift, in local wall time (it may cross midnight with its shift)."""

    start: time
    end: time


@dataclass(frozen=True)
class Shift:
    """A shift on a weekday (0 = Monday), from `start` to `end` local wall time; end <= start crosses midnight."""

    name: str
    weekday: int
    start: time
    end: time
    breaks: tuple[Break, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise CalendarError(f"shift {self.name}: weekday must be 0 (Monday) to 6 (Sunday)")
        if not self.name:
            raise CalendarError("a shift needs a name")
        length = _wall_length(self.start, self.end)
        for pause in self.breaks:
            offset = _wall_length(self.start, pause.start) if pause.start != self.start else ZERO
            if offset + _wall_length(pause.start, pause.end) > length:
                raise CalendarError(f"shift {self.name}: break {pause.start}-{pause.end} is not inside the shift")


class ExceptionKind(StrEnum):
    """What a one-off calendar entry does to its local date."""

    NON_WORKING = "non_working"  # no shift starts on that date
    EXTRA_SHIFT = "extra_shift"  # one more shift starts on that date


@dataclass(frozen=True)
class CalendarException:
    """A one-off change of one local date; an extra shift's `weekday` is ignored (the date says it)."""

    day: date
    kind: ExceptionKind
    shift: Shift | None = None

    def __post_init__(self) -> None:
        if (self.kind is ExceptionKind.EXTRA_SHIFT) != (self.shift is not None):
            raise CalendarError(f"{self.day}: an extra shift names its shift, a non-working day none")


@dataclass(frozen=True)
class WeeklyPattern:
    """The shifts of each weekday, from `valid_from` (a local date) until the next pattern starts."""

    valid_from: date
    shifts: tuple[Shift, ...]


@dataclass(frozen=True)
class ShiftInstance:
    """One shift on one production day, as instants (UTC), with its breaks."""

    name: str
    day: date
    span: Interval
    breaks: tuple[Interval, ...]

    def planned(self, window: Interval | None = None) -> timedelta:
        """Planned production time of this shift (inside `window` when given): its time minus its breaks."""
        window = window or self.span
        return self.span.overlap(window) - sum((window.overlap(pause) for pause in self.breaks), ZERO)


@dataclass(frozen=True)
class PlantCalendar:
    """Weekly patterns and exceptions in the plant's zone."""

    zone: ZoneInfo
    patterns: tuple[WeeklyPattern, ...]
    exceptions: tuple[CalendarException, ...] = ()
    _starts: tuple[date, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.patterns, key=lambda pattern: pattern.valid_from))
        starts = tuple(pattern.valid_from for pattern in ordered)
        if len(set(starts)) != len(starts):
            raise CalendarError("two weekly patterns start on the same date")
        object.__setattr__(self, "patterns", ordered)
        object.__setattr__(self, "_starts", starts)

    def pattern_on(self, day: date) -> WeeklyPattern | None:
        """The pattern valid on a local date; None before the first one (no plan: nothing is planned)."""
        index = bisect.bisect_right(self._starts, day) - 1
        return self.patterns[index] if index >= 0 else None

    def shifts_on(self, day: date) -> list[ShiftInstance]:
        """The shifts of one production day, in order of start."""
        exceptions = [entry for entry in self.exceptions if entry.day == day]
        if any(entry.kind is ExceptionKind.NON_WORKING for entry in exceptions):
            planned: list[Shift] = []
        else:
            pattern = self.pattern_on(day)
            planned = [shift for shift in pattern.shifts if shift.weekday == day.weekday()] if pattern else []
        planned += [entry.shift for entry in exceptions if entry.shift is not None]
        instances = [self._instance(shift, day) for shift in planned]
        return sorted(instances, key=lambda instance: instance.span.start)

    def shifts_between(self, window: Interval) -> list[ShiftInstance]:
        """Every shift that overlaps the window (a night shift started the day before included)."""
        first = window.start.astimezone(self.zone).date() - timedelta(days=1)
        last = window.end.astimezone(self.zone).date()
        found = []
        for day in _days(first, last):
            found += [shift for shift in self.shifts_on(day) if shift.span.overlap(window) > ZERO]
        return found

    def planned_intervals(self, window: Interval) -> list[Interval]:
        """The parts of the window that are planned production time (shifts minus breaks), sorted, disjoint."""
        pieces: list[Interval] = []
        for shift in self.shifts_between(window):
            cursor = max(shift.span.start, window.start)
            finish = min(shift.span.end, window.end)
            for pause in sorted(shift.breaks, key=lambda interval: interval.start):
                if pause.end <= cursor or pause.start >= finish:
                    continue
                if pause.start > cursor:
                    pieces.append(Interval(cursor, pause.start))
                cursor = max(cursor, pause.end)
            if finish > cursor:
                pieces.append(Interval(cursor, finish))
        return merge(pieces)

    def planned_time(self, window: Interval) -> timedelta:
        """Planned production time inside the window: scheduled shift time minus breaks."""
        return sum((shift.planned(window) for shift in self.shifts_between(window)), ZERO)

    def day_planned_time(self, day: date) -> timedelta:
        """Planned production time of a production day: the sum of its shifts, wherever they end."""
        return sum((shift.planned() for shift in self.shifts_on(day)), ZERO)

    def week_planned_time(self, monday: date) -> timedelta:
        """Planned production time of the production days Monday to Sunday of one week."""
        if monday.weekday() != 0:
            raise CalendarError(f"{monday} is not a Monday")
        return sum((self.day_planned_time(day) for day in _days(monday, monday + timedelta(days=6))), ZERO)

    def _instance(self, shift: Shift, day: date) -> ShiftInstance:
        start = self._instant(day, shift.start)
        end_day = day + timedelta(days=1) if shift.end <= shift.start else day
        span = Interval(start, self._instant(end_day, shift.end))
        breaks = []
        for pause in shift.breaks:
            # A break's start is read on the date that puts it inside its shift; it lasts its wall-clock length
            # whatever the clocks do meanwhile (a 30-minute break across a DST change is still 30 minutes), cut to
            # the shift.
            pause_day = day if pause.start >= shift.start else day + timedelta(days=1)
            pause_start = self._instant(pause_day, pause.start)
            pause_end = min(pause_start + _wall_length(pause.start, pause.end), span.end)
            breaks.append(Interval(pause_start, max(pause_end, pause_start)))
        return ShiftInstance(shift.name, day, span, tuple(breaks))

    def _instant(self, day: date, wall: time) -> datetime:
        """A local wall time as a UTC instant. `fold=0` (the default) is the module's DST rule: the first occurrence
        of a repeated wall time, and a skipped one read with the offset from before the change."""
        return datetime.combine(day, wall, tzinfo=self.zone).astimezone(UTC)


def local_day(zone: ZoneInfo, day: date) -> Interval:
    """A local calendar day, midnight to midnight, as instants (23 or 25 hours across a DST change)."""
    return Interval(
        datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC),
        datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC),
    )


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same instants (empty ones dropped)."""
    merged: list[Interval] = []
    for interval in sorted(intervals, key=lambda item: item.start):
        if interval.end <= interval.start:
            continue
        if merged and interval.start <= merged[-1].end:
            merged[-1] = Interval(merged[-1].start, max(merged[-1].end, interval.end))
        else:
            merged.append(interval)
    return merged


def total(intervals: Iterable[Interval]) -> timedelta:
    """The summed duration of intervals (disjoint ones: merge first otherwise)."""
    return sum((interval.duration for interval in intervals), ZERO)


def around_the_clock(window: Interval) -> timedelta:
    """Planned time without a calendar: the whole window (24/7), as the OEE without a calendar has always done."""
    return window.duration


def group_by_day(shifts: Iterable[ShiftInstance]) -> dict[date, list[ShiftInstance]]:
    """Shifts by production day, in date order."""
    grouped: dict[date, list[ShiftInstance]] = {}
    for shift in sorted(shifts, key=lambda instance: (instance.day, instance.span.start)):
        grouped.setdefault(shift.day, []).append(shift)
    return grouped


def _wall_length(start: time, end: time) -> timedelta:
    """Wall-clock length from `start` to `end`, crossing midnight when end <= start."""
    base = date(2000, 1, 3)
    begin = datetime.combine(base, start)
    finish = datetime.combine(base if end > start else base + timedelta(days=1), end)
    return finish - begin


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def weekly(valid_from: date, shifts: Sequence[tuple[str, Sequence[int], time, time, Sequence[Break]]]) -> WeeklyPattern:
    """A pattern from (name, weekdays, start, end, breaks) rows: the same shift on several weekdays."""
    return WeeklyPattern(
        valid_from,
        tuple(
            Shift(name, weekday, start, end, tuple(breaks))
            for name, weekdays, start, end, breaks in shifts
            for weekday in weekdays
        ),
    )

"""OEE over planned production time with losses by reason (core.losses), computed by hand; shifts add up to days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.calendar import Break, Interval, PlantCalendar, local_day, weekly
from core.downtime import DEFAULT_REASONS
from core.losses import UNCLASSIFIED, ClassifiedStop, LossReport, loss_report

ISTANBUL = ZoneInfo("Europe/Istanbul")
REASONS = {reason.code: reason for reason in DEFAULT_REASONS}
M = timedelta(minutes=1)
MONDAY = date(2026, 11, 30)
CALENDAR = PlantCalendar(
    ISTANBUL,
    (
        weekly(
            date(2026, 1, 1),
            [
                ("early", (0, 1, 2, 3, 4), time(6), time(14), [Break(time(10), time(10, 30))]),
                ("late", (0, 1, 2, 3, 4), time(14), time(22), [Break(time(18), time(18, 30))]),
                ("night", (0, 1, 2, 3, 4), time(22), time(6), [Break(time(2), time(2, 30))]),
            ],
        ),
    ),
)


def local(hour: int, minute: int = 0, second: int = 0, day: date = MONDAY) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=ISTANBUL).astimezone(UTC)


def stop(start: datetime, end: datetime, code: str | None = None) -> ClassifiedStop:
    return ClassifiedStop(Interval(start, end), REASONS[code] if code else None)


STOPS = [
    stop(local(9), local(9, 20), "setup"),  # 20 min downtime, classified as setup
    stop(local(10, 5), local(10, 25), "breakdown"),  # inside the planned break: counts for nothing
    stop(local(12), local(12, 10)),  # not classified yet
    stop(local(15), local(15, 30), "planned_maintenance"),  # a planned stop: out of planned production time
]
MINOR = [Interval(local(8), local(8, 1, 30))]  # a 90-second stop


def report_for(window: Interval, **counts: int) -> LossReport:
    return loss_report(
        window,
        scheduled=CALENDAR.planned_intervals(window),
        stops=STOPS,
        minor_stops=MINOR,
        ideal_cycle_time_s=60.0,
        **counts,  # type: ignore[arg-type] # only total_count and good_count are passed
    )


def test_the_early_shift_by_hand() -> None:
    early = CALENDAR.shifts_on(MONDAY)[0]
    report = loss_report(
        early.span,
        scheduled=CALENDAR.planned_intervals(early.span),
        stops=STOPS,
        minor_stops=MINOR,
        total_count=400,
        good_count=390,
        ideal_cycle_time_s=60.0,
    )
    assert report.scheduled == 450 * M  # 8 h minus the 30-minute break
    assert report.planned_stops == 0 * M
    assert report.by_reason == {"setup": 20 * M, UNCLASSIFIED: 10 * M}  # the breakdown in the break is not there
    assert report.planned_production == 450 * M
    assert report.run_time == 420 * M
    assert (report.minor_stops, report.minor_stop_time) == (1, 1.5 * M)
    assert report.availability == pytest.approx(420 / 450)
    assert report.performance == pytest.approx(400 / 420)  # 400 parts x 60 s ideal over 420 min of run time
    assert report.quality == pytest.approx(390 / 400)
    assert report.oee == pytest.approx(420 / 450 * 400 / 420 * 390 / 400)
    assert any("not classified" in note for note in report.notes)


def test_the_late_shift_takes_its_planned_stop_out_of_planned_time() -> None:
    late = CALENDAR.shifts_on(MONDAY)[1]
    report = loss_report(
        late.span, scheduled=CALENDAR.planned_intervals(late.span), stops=STOPS, total_count=0, good_count=0
    )
    assert (report.scheduled, report.planned_stops, report.planned_production) == (450 * M, 30 * M, 420 * M)
    assert report.by_category["planned_stop"] == 30 * M
    assert report.availability == 1.0
    assert report.quality is None  # nothing made


def test_shifts_add_up_to_the_production_day() -> None:
    shifts = CALENDAR.shifts_on(MONDAY)
    day = Interval(shifts[0].span.start, shifts[-1].span.end)
    parts = [report_for(shift.span) for shift in shifts]
    whole = report_for(day)
    for name in ("scheduled", "planned_stops", "planned_production", "run_time", "minor_stop_time", "unknown"):
        assert getattr(whole, name) == sum((getattr(part, name) for part in parts), timedelta(0)), name
    assert whole.scheduled == CALENDAR.day_planned_time(MONDAY)


def test_a_data_gap_is_neither_running_nor_a_stop() -> None:
    window = Interval(local(6), local(14))
    gap = Interval(local(9, 10), local(9, 40))  # overlaps the end of the setup stop
    report = loss_report(
        window, scheduled=CALENDAR.planned_intervals(window), stops=STOPS, unknown=[gap], ideal_cycle_time_s=None
    )
    assert report.unknown == 30 * M
    assert report.by_reason["setup"] == 10 * M  # 09:00-09:10; the rest of it lies in the gap
    assert report.planned_production == 420 * M
    assert report.run_time == 400 * M  # 420 - 10 setup - 10 unclassified


def test_without_a_calendar_the_whole_window_is_planned_and_says_so() -> None:
    window = Interval(local(0), local(1))
    report = loss_report(window, scheduled=None, stops=[stop(local(0, 10), local(0, 40), "breakdown")])
    assert (report.scheduled, report.run_time) == (60 * M, 30 * M)
    assert report.notes[0].startswith("no calendar")


def test_a_stage_finished_in_a_fraction_of_a_second_gets_no_absurd_figure() -> None:
    window = Interval(local(7), local(7) + timedelta(milliseconds=300))
    report = loss_report(window, scheduled=None, stops=[], total_count=5, good_count=5, ideal_cycle_time_s=60.0)
    assert (report.availability, report.performance, report.oee) == (None, None, None)
    assert report.quality == 1.0
    assert any("not computed" in note for note in report.notes)


minutes = st.integers(min_value=0, max_value=3 * 24 * 60)


@settings(max_examples=150, deadline=None)
@given(
    start=minutes, cut=minutes, end=minutes, picks=st.lists(st.sampled_from([None, *REASONS]), min_size=8, max_size=8)
)
def test_adjacent_windows_add_up(start: int, cut: int, end: int, picks: list[str | None]) -> None:
    low, middle, high = sorted((start, cut, end))
    origin = local(0)
    # Disjoint stops of 40 min every 6 h over three days, each with an arbitrary reason (or none).
    stops = [
        ClassifiedStop(Interval(origin + index * 360 * M, origin + (index * 360 + 40) * M), REASONS.get(code or ""))
        for index, code in enumerate(picks)
    ]
    unknown = [Interval(origin + 500 * M, origin + 620 * M)]

    def measured(lo: int, hi: int) -> LossReport:
        window = Interval(origin + lo * M, origin + hi * M)
        return loss_report(window, scheduled=CALENDAR.planned_intervals(window), stops=stops, unknown=unknown)

    whole, left, right = measured(low, high), measured(low, middle), measured(middle, high)
    for name in ("scheduled", "planned_stops", "unknown", "planned_production", "run_time"):
        assert getattr(whole, name) == getattr(left, name) + getattr(right, name), name
    for key in {*whole.by_reason, *left.by_reason, *right.by_reason}:
        parts = left.by_reason.get(key, timedelta(0)) + right.by_reason.get(key, timedelta(0))
        assert whole.by_reason.get(key, timedelta(0)) == parts


def test_local_days_hold_what_their_shifts_hold_in_them() -> None:
    # A local-midnight day and the production day differ by the night shifts; both are sums of overlaps.
    day = local_day(ISTANBUL, MONDAY)
    report = loss_report(day, scheduled=CALENDAR.planned_intervals(day), stops=STOPS)
    assert report.scheduled == CALENDAR.planned_time(day)

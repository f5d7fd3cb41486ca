"""Efficiency arithmetic on hand-computed cases: fixed timezone-aware times, never the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.efficiency.calc import (
    EventPoint,
    StageMetrics,
    StageOutcome,
    StageTiming,
    WorkOrderMetrics,
    minutes,
    stage_metrics,
    stage_timing,
    work_order_metrics,
)
from core.models import StageEventKind, StageStatus

START = StageEventKind.START
PAUSE = StageEventKind.PAUSE
RESUME = StageEventKind.RESUME
DONE = StageEventKind.DONE


def at(hour: int, minute: int = 0) -> datetime:
    """A time on one fixed day, in UTC."""
    return datetime(2025, 3, 10, hour, minute, tzinfo=UTC)


def mins(value: int) -> timedelta:
    return timedelta(minutes=value)


def events(*points: tuple[StageEventKind, datetime]) -> list[EventPoint]:
    return [EventPoint(kind=kind, at=when) for kind, when in points]


def metrics(
    *,
    planned: tuple[datetime, datetime],
    status: StageStatus,
    log: list[EventPoint],
    now: datetime,
) -> StageMetrics:
    """Timing and metrics of one stage, the way the API chains them."""
    return stage_metrics(
        planned_start=planned[0],
        planned_end=planned[1],
        status=status,
        timing=stage_timing(log, now=now),
        now=now,
    )


TWO_PAUSES = events(
    (START, at(8, 0)),
    (PAUSE, at(8, 20)),
    (RESUME, at(8, 30)),
    (PAUSE, at(9, 0)),
    (RESUME, at(9, 15)),
    (DONE, at(9, 40)),
)


# stage_timing


def test_timing_of_a_stage_done_without_pauses() -> None:
    timing = stage_timing(events((START, at(8, 0)), (DONE, at(8, 45))), now=at(12))
    # 08:00 → 08:45 = 45 min working
    assert timing == StageTiming(actual_start=at(8, 0), actual_end=at(8, 45), working=mins(45), paused=mins(0))


def test_timing_with_two_pauses() -> None:
    timing = stage_timing(TWO_PAUSES, now=at(12))
    # working 08:00-08:20 (20) + 08:30-09:00 (30) + 09:15-09:40 (25) = 75; paused 10 + 15 = 25
    assert timing == StageTiming(actual_start=at(8, 0), actual_end=at(9, 40), working=mins(75), paused=mins(25))


def test_events_given_out_of_order_are_sorted_by_time() -> None:
    shuffled = [TWO_PAUSES[i] for i in (5, 2, 0, 4, 1, 3)]
    # the same 75 working / 25 paused as when given in time order
    assert stage_timing(shuffled, now=at(12)) == StageTiming(
        actual_start=at(8, 0), actual_end=at(9, 40), working=mins(75), paused=mins(25)
    )


def test_done_while_paused_counts_the_pause_until_done() -> None:
    timing = stage_timing(events((START, at(8, 0)), (PAUSE, at(8, 40)), (DONE, at(9, 0))), now=at(12))
    # working 08:00-08:40 = 40; paused 08:40-09:00 = 20
    assert timing == StageTiming(actual_start=at(8, 0), actual_end=at(9, 0), working=mins(40), paused=mins(20))


def test_a_running_stage_works_until_now() -> None:
    timing = stage_timing(events((START, at(8, 0)), (PAUSE, at(8, 10)), (RESUME, at(8, 20))), now=at(8, 50))
    # working 08:00-08:10 (10) + 08:20-now 08:50 (30) = 40; paused 10
    assert timing == StageTiming(actual_start=at(8, 0), actual_end=None, working=mins(40), paused=mins(10))


def test_a_paused_stage_is_paused_until_now() -> None:
    timing = stage_timing(events((START, at(8, 0)), (PAUSE, at(8, 30))), now=at(9, 0))
    # working 08:00-08:30 = 30; paused 08:30-now 09:00 = 30
    assert timing == StageTiming(actual_start=at(8, 0), actual_end=None, working=mins(30), paused=mins(30))


def test_a_stage_without_events_has_no_time() -> None:
    assert stage_timing([], now=at(9)) == StageTiming(
        actual_start=None, actual_end=None, working=mins(0), paused=mins(0)
    )


# stage_metrics: done stages


def test_late_done_stage() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (DONE, at(9, 20))),
        now=at(12),
    )
    # planned 60, worked 80; delay 09:20 - 09:00 = +20; efficiency 60 / 80 * 100 = 75.0
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=mins(80),
        paused=mins(0),
        end=at(9, 20),
        delay=mins(20),
        efficiency_percent=75.0,
        on_time=False,
        projected=False,
    )


@pytest.mark.parametrize(("worked", "expected"), [(timedelta(milliseconds=300), None), (timedelta(seconds=59), None),
                                                   (timedelta(seconds=60), 6000.0)])  # fmt: skip
def test_a_stage_done_within_a_minute_has_no_efficiency(worked: timedelta, expected: float | None) -> None:
    """A stage started and finished in 0.3 s of a 1 h plan showed 1,200,000 %: below a minute of working time there
    is no meaningful efficiency (MIN_WORKING)."""
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (DONE, at(8, 0) + worked)),
        now=at(12),
    )
    assert result.efficiency_percent == expected
    assert result.actual_duration == worked


def test_early_done_stage() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (DONE, at(8, 48))),
        now=at(12),
    )
    # worked 48; delay 08:48 - 09:00 = -12; efficiency 60 / 48 * 100 = 125.0
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=mins(48),
        paused=mins(0),
        end=at(8, 48),
        delay=mins(-12),
        efficiency_percent=125.0,
        on_time=True,
        projected=False,
    )


def test_done_stage_with_pauses_measures_efficiency_on_working_time_only() -> None:
    result = metrics(planned=(at(8, 0), at(9, 0)), status=StageStatus.DONE, log=TWO_PAUSES, now=at(12))
    # worked 75 (25 paused not counted); delay 09:40 - 09:00 = +40; efficiency 60 / 75 * 100 = 80.0
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=mins(75),
        paused=mins(25),
        end=at(9, 40),
        delay=mins(40),
        efficiency_percent=80.0,
        on_time=False,
        projected=False,
    )


def test_done_while_paused_ends_at_the_done_event() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (PAUSE, at(8, 40)), (DONE, at(9, 0))),
        now=at(12),
    )
    # worked 40, paused 20; ends 09:00 = planned end, so on time; efficiency 60 / 40 * 100 = 150.0
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=mins(40),
        paused=mins(20),
        end=at(9, 0),
        delay=mins(0),
        efficiency_percent=150.0,
        on_time=True,
        projected=False,
    )


def test_efficiency_is_rounded_to_two_decimals() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (DONE, at(9, 10))),
        now=at(12),
    )
    # 60 / 70 * 100 = 85.714… → 85.71
    assert result.efficiency_percent == 85.71


# stage_metrics: projections


def test_running_stage_is_projected_from_now_with_the_planned_work_left() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.IN_PROGRESS,
        log=events((START, at(8, 0)), (PAUSE, at(8, 10)), (RESUME, at(8, 20))),
        now=at(8, 50),
    )
    # worked 40 of 60 planned → 20 left; end 08:50 + 20 = 09:10; delay +10
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=mins(40),
        paused=mins(10),
        end=at(9, 10),
        delay=mins(10),
        efficiency_percent=None,
        on_time=False,
        projected=True,
    )


def test_running_stage_ahead_of_plan_is_projected_on_time() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.IN_PROGRESS,
        log=events((START, at(7, 30))),
        now=at(8, 0),
    )
    # worked 30 of 60 → 30 left; end 08:00 + 30 = 08:30; delay -30
    assert (result.end, result.delay, result.on_time, result.projected) == (at(8, 30), mins(-30), True, True)


def test_running_stage_past_its_planned_work_is_projected_to_end_now() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.IN_PROGRESS,
        log=events((START, at(8, 0))),
        now=at(9, 30),
    )
    # worked 90 > 60 planned → nothing left; end = now 09:30; delay +30
    assert (result.actual_duration, result.end, result.delay, result.on_time) == (
        mins(90),
        at(9, 30),
        mins(30),
        False,
    )
    assert result.efficiency_percent is None


def test_paused_stage_is_projected_as_if_it_resumed_now() -> None:
    result = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.PAUSED,
        log=events((START, at(8, 0)), (PAUSE, at(8, 30))),
        now=at(9, 0),
    )
    # worked 30 of 60 → 30 left; paused 08:30-09:00 = 30; end 09:00 + 30 = 09:30; delay +30
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=mins(30),
        paused=mins(30),
        end=at(9, 30),
        delay=mins(30),
        efficiency_percent=None,
        on_time=False,
        projected=True,
    )


def test_stage_not_started_before_its_planned_start_is_projected_on_plan() -> None:
    result = metrics(planned=(at(10, 0), at(11, 0)), status=StageStatus.PLANNED, log=[], now=at(8, 0))
    # end = max(08:00, 10:00) + 60 = 11:00; delay 0, which is on time
    assert result == StageMetrics(
        planned_duration=mins(60),
        actual_duration=None,
        paused=mins(0),
        end=at(11, 0),
        delay=mins(0),
        efficiency_percent=None,
        on_time=True,
        projected=True,
    )


def test_stage_not_started_after_its_planned_start_is_projected_from_now() -> None:
    result = metrics(planned=(at(10, 0), at(11, 0)), status=StageStatus.PLANNED, log=[], now=at(10, 30))
    # end = max(10:30, 10:00) + 60 = 11:30; delay +30
    assert (result.end, result.delay, result.on_time, result.actual_duration) == (
        at(11, 30),
        mins(30),
        False,
        None,
    )


def test_a_projection_past_the_calendar_s_end_stops_at_its_last_moment() -> None:
    """A plan from year 25 to year 9000 projected from today would end after year 9999: capped, not a crash."""
    start, end = datetime(25, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
    result = metrics(planned=(start, end), status=StageStatus.PLANNED, log=[], now=at(8))
    assert result.end == datetime.max.replace(tzinfo=UTC)
    assert (result.projected, result.on_time) == (True, False)


# work_order_metrics


def outcome(result: StageMetrics, good: int | None, scrap: int | None) -> StageOutcome:
    return StageOutcome(metrics=result, good_qty=good, scrap_qty=scrap)


def test_work_order_sums_its_stages_and_ends_with_the_latest() -> None:
    now = at(11, 0)
    late = metrics(  # worked 30 + 50 = 80 of 60, paused 10, ends 09:30: +30, efficiency 75.0
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (PAUSE, at(8, 30)), (RESUME, at(8, 40)), (DONE, at(9, 30))),
        now=now,
    )
    early = metrics(  # worked 50 of 60, ends 10:20: -10, efficiency 120.0
        planned=(at(9, 30), at(10, 30)),
        status=StageStatus.DONE,
        log=events((START, at(9, 30)), (DONE, at(10, 20))),
        now=now,
    )
    paused = metrics(  # worked 20 of 90, paused 10 so far; projected end 11:00 + 70 = 12:10
        planned=(at(10, 30), at(12, 0)),
        status=StageStatus.PAUSED,
        log=events((START, at(10, 30)), (PAUSE, at(10, 50))),
        now=now,
    )
    assert (late.delay, early.delay, paused.end) == (mins(30), mins(-10), at(12, 10))

    result = work_order_metrics(
        planned_start=at(8, 0),
        planned_end=at(12, 0),
        stages=[outcome(late, 100, 5), outcome(early, 95, None), outcome(paused, None, 2)],
    )
    assert result == WorkOrderMetrics(
        planned_duration=mins(240),  # the work order's window 08:00-12:00
        actual_duration=mins(150),  # 80 + 50 + 20
        paused=mins(20),  # 10 + 0 + 10
        end=at(12, 10),  # the latest stage end, here projected
        delay=mins(10),  # 12:10 - 12:00
        efficiency_percent=92.31,  # done stages only: (60 + 60) / (80 + 50) * 100 = 92.307…
        on_time=False,
        projected=True,
        on_time_stage_percent=50.0,  # done stages only: 1 on time of 2
        total_good_qty=195,  # 100 + 95 + 0
        total_scrap_qty=7,  # 5 + 0 + 2
    )


def test_work_order_with_every_stage_done_is_not_projected() -> None:
    first = metrics(
        planned=(at(8, 0), at(8, 30)),
        status=StageStatus.DONE,
        log=events((START, at(8, 0)), (DONE, at(8, 30))),
        now=at(12),
    )
    second = metrics(
        planned=(at(8, 30), at(9, 30)),
        status=StageStatus.DONE,
        log=events((START, at(8, 30)), (DONE, at(9, 20))),
        now=at(12),
    )
    result = work_order_metrics(
        planned_start=at(8, 0), planned_end=at(9, 30), stages=[outcome(first, 10, 1), outcome(second, 9, 0)]
    )
    # ends 09:20, 10 min early; efficiency (30 + 60) / (30 + 50) * 100 = 112.5; both stages on time
    assert (result.end, result.delay, result.on_time, result.projected) == (at(9, 20), mins(-10), True, False)
    assert (result.efficiency_percent, result.on_time_stage_percent) == (112.5, 100.0)
    assert (result.total_good_qty, result.total_scrap_qty) == (19, 1)


def test_a_done_stage_without_a_start_is_left_out_of_the_work_order_efficiency() -> None:
    """Imported from the original app with only its end: no working time, so its planned time is not counted."""
    imported = metrics(
        planned=(at(8, 0), at(9, 0)),
        status=StageStatus.DONE,
        log=events((DONE, at(8, 50))),
        now=at(12),
    )
    measured = metrics(  # worked 60 of 120: efficiency 200.0
        planned=(at(9, 0), at(11, 0)),
        status=StageStatus.DONE,
        log=events((START, at(9, 0)), (DONE, at(10, 0))),
        now=at(12),
    )
    assert (imported.actual_duration, imported.projected, imported.end) == (None, False, at(8, 50))
    result = work_order_metrics(
        planned_start=at(8, 0), planned_end=at(11, 0), stages=[outcome(imported, 5, 0), outcome(measured, 5, 0)]
    )
    # Counting the imported stage would give (60 + 120) / (0 + 60) * 100 = 300.0.
    assert result.efficiency_percent == 200.0  # 120 / 60 * 100
    assert result.actual_duration == mins(60)
    # Its end is known, so it still counts for the end, the delay and the on-time share.
    assert (result.end, result.delay, result.projected) == (at(10, 0), mins(-60), False)
    assert result.on_time_stage_percent == 100.0


def test_a_work_order_whose_done_stages_all_lack_a_start_has_no_efficiency() -> None:
    imported = metrics(planned=(at(8, 0), at(9, 0)), status=StageStatus.DONE, log=events((DONE, at(9, 0))), now=at(12))
    result = work_order_metrics(planned_start=at(8, 0), planned_end=at(9, 0), stages=[outcome(imported, 1, 0)])
    assert (result.efficiency_percent, result.actual_duration) == (None, None)


def test_work_order_with_no_stage_started() -> None:
    now = at(7, 0)
    first = metrics(planned=(at(8, 0), at(9, 0)), status=StageStatus.PLANNED, log=[], now=now)
    second = metrics(planned=(at(9, 0), at(10, 0)), status=StageStatus.PLANNED, log=[], now=now)
    result = work_order_metrics(
        planned_start=at(8, 0),
        planned_end=at(10, 0),
        stages=[outcome(first, None, None), outcome(second, None, None)],
    )
    assert result == WorkOrderMetrics(
        planned_duration=mins(120),
        actual_duration=None,
        paused=mins(0),
        end=at(10, 0),  # each stage projected on plan: 09:00 and 10:00
        delay=mins(0),
        efficiency_percent=None,
        on_time=True,
        projected=True,
        on_time_stage_percent=None,
        total_good_qty=0,
        total_scrap_qty=0,
    )


# minutes


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(minutes=75), 75.0),
        (timedelta(seconds=90), 1.5),
        (timedelta(seconds=100), 1.67),  # 100 / 60 = 1.666… → 1.67
        (timedelta(seconds=-100), -1.67),
        (timedelta(0), 0.0),
        (timedelta(hours=2, seconds=1), 120.02),  # 7201 / 60 = 120.0166… → 120.02
    ],
)
def test_minutes_rounds_to_two_decimals(delta: timedelta, expected: float) -> None:
    assert minutes(delta) == expected

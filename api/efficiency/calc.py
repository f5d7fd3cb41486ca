"""Efficiency arithmetic, pure: durations from stage events, delays and projections (see docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.models import StageEventKind, StageStatus

_ZERO = timedelta(0)
# Below this much working time efficiency is not computed (null): a stage started and finished within a second
# would otherwise show an efficiency of a million percent. The same rule as OEE's factors (core.losses).
MIN_WORKING = timedelta(seconds=60)


@dataclass(frozen=True)
class EventPoint:
    """One stage event: what happened and when."""

    kind: StageEventKind
    at: datetime


@dataclass(frozen=True)
class StageTiming:
    """What the events of one stage add up to."""

    actual_start: datetime | None
    actual_end: datetime | None
    working: timedelta
    paused: timedelta


def actual_window(events: Sequence[EventPoint]) -> tuple[datetime | None, datetime | None]:
    """When the stage first started and when it was done, as far as its events say."""
    starts = [event.at for event in events if event.kind is StageEventKind.START]
    ends = [event.at for event in events if event.kind is StageEventKind.DONE]
    return (min(starts) if starts else None, max(ends) if ends else None)


def stage_timing(events: Sequence[EventPoint], *, now: datetime) -> StageTiming:
    """Working and paused time from the event log; an open interval runs until `now`."""
    working = paused = _ZERO
    start = end = None
    running_since: datetime | None = None
    paused_since: datetime | None = None
    for event in sorted(events, key=lambda e: e.at):
        if event.kind is StageEventKind.START:
            start = start or event.at
            running_since = event.at
        elif event.kind is StageEventKind.PAUSE and running_since is not None:
            working += event.at - running_since
            running_since, paused_since = None, event.at
        elif event.kind is StageEventKind.RESUME and paused_since is not None:
            paused += event.at - paused_since
            running_since, paused_since = event.at, None
        elif event.kind is StageEventKind.DONE:
            if running_since is not None:
                working += event.at - running_since
            if paused_since is not None:
                paused += event.at - paused_since
            running_since = paused_since = None
            end = event.at
    if running_since is not None:
        working += max(now - running_since, _ZERO)
    if paused_since is not None:
        paused += max(now - paused_since, _ZERO)
    return StageTiming(actual_start=start, actual_end=end, working=working, paused=paused)


def _plus(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, or the calendar's last moment when that lies beyond it (a plan reaching into year 9999)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=moment.tzinfo)


def minutes(delta: timedelta) -> float:
    """A duration in minutes, to two decimals."""
    return round(delta.total_seconds() / 60, 2)


@dataclass(frozen=True)
class Durations:
    """Planned against actual: what stage and work-order metrics have in common."""

    planned_duration: timedelta
    actual_duration: timedelta | None
    paused: timedelta
    end: datetime
    delay: timedelta
    efficiency_percent: float | None
    on_time: bool
    projected: bool


@dataclass(frozen=True)
class StageMetrics(Durations):
    """Planned against actual for one stage; `projected` when the stage is not done yet."""


def stage_metrics(
    *, planned_start: datetime, planned_end: datetime, status: StageStatus, timing: StageTiming, now: datetime
) -> StageMetrics:
    """Delay is measured at the end: the actual one when done, else projected from `now`."""
    planned = planned_end - planned_start
    if status is StageStatus.DONE and timing.actual_end is not None:
        end, projected = timing.actual_end, False
    elif timing.actual_start is not None:
        # The planned working time not yet spent is still ahead (a paused stage resumes now at the earliest).
        end, projected = _plus(now, max(planned - timing.working, _ZERO)), True
    else:
        end, projected = _plus(max(now, planned_start), planned), True
    efficiency = None
    if not projected and timing.working >= MIN_WORKING:
        efficiency = round(planned / timing.working * 100, 2)
    return StageMetrics(
        planned_duration=planned,
        actual_duration=timing.working if timing.actual_start is not None else None,
        paused=timing.paused,
        end=end,
        delay=end - planned_end,
        efficiency_percent=efficiency,
        on_time=end <= planned_end,
        projected=projected,
    )


@dataclass(frozen=True)
class StageOutcome:
    """A stage's metrics with what it produced."""

    metrics: StageMetrics
    good_qty: int | None
    scrap_qty: int | None


@dataclass(frozen=True)
class WorkOrderMetrics(Durations):
    """A work order's stages taken together."""

    on_time_stage_percent: float | None
    total_good_qty: int
    total_scrap_qty: int


def work_order_metrics(
    *, planned_start: datetime, planned_end: datetime, stages: Sequence[StageOutcome]
) -> WorkOrderMetrics:
    """Sums over stages; the work order ends when its last stage ends (actually or as projected).

    Efficiency compares the done stages whose working time is known: a stage done without a start (imported from
    the original app with only its end) would add its planned time against no working time.
    """
    started = [stage.metrics.actual_duration for stage in stages if stage.metrics.actual_duration is not None]
    done = [stage.metrics for stage in stages if not stage.metrics.projected]
    measured = [metrics for metrics in done if metrics.actual_duration is not None]
    done_working = sum((metrics.actual_duration or _ZERO for metrics in measured), _ZERO)
    done_planned = sum((metrics.planned_duration for metrics in measured), _ZERO)
    end = max((stage.metrics.end for stage in stages), default=planned_end)
    return WorkOrderMetrics(
        planned_duration=planned_end - planned_start,
        actual_duration=sum(started, _ZERO) if started else None,
        paused=sum((stage.metrics.paused for stage in stages), _ZERO),
        end=end,
        delay=end - planned_end,
        efficiency_percent=round(done_planned / done_working * 100, 2) if done_working >= MIN_WORKING else None,
        on_time=end <= planned_end,
        projected=any(stage.metrics.projected for stage in stages),
        on_time_stage_percent=round(sum(m.on_time for m in done) / len(done) * 100, 2) if done else None,
        total_good_qty=sum(stage.good_qty or 0 for stage in stages),
        total_scrap_qty=sum(stage.scrap_qty or 0 for stage in stages),
    )

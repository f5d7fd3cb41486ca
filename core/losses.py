"""OEE over planned production time with its losses by reason: the one calculation for shift, day, week, machine
and stage figures (pure: no I/O, no clock).

Everything is measured as time inside the **scheduled** intervals (the calendar's shifts minus breaks, or the whole
window for a machine without a calendar: 24/7, said in a note). Inside them:

- a stop classified as a **planned stop** (break, no order, planned maintenance) is taken out of planned production
  time: planned production = scheduled - planned stops;
- **unknown** time (no data: the machine was not heard from) is neither running nor stopped; it is taken out of
  planned production time too and reported, so a data gap never looks like a good or a bad shift;
- **availability losses** are the classified availability stops plus the stops nobody classified yet (their own bar,
  so the Pareto shows what is left to explain); run time = planned production - those;
- **performance** = ideal cycle time x total count / run time; minor stops and stops classified as performance losses
  are inside this factor (reported in minutes, not subtracted twice);
- **quality** = good / total.

Every figure is a sum of overlaps with the scheduled intervals, so shift figures add up to the day's and days to the
week's. A factor is null (with a note) when its denominator is below `min_run` (default 60 s): a stage finished in a
fraction of a second has no meaningful performance, never an absurd one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from core.calendar import ZERO, Interval, merge, total
from core.downtime import LossCategory, Reason

UNCLASSIFIED = "unclassified"
DEFAULT_MIN_RUN = timedelta(seconds=60)


@dataclass(frozen=True)
class ClassifiedStop:
    """A downtime event over [start, end) and its reason (None: not classified yet)."""

    span: Interval
    reason: Reason | None = None


@dataclass(frozen=True)
class LossReport:
    """Planned time, losses and the OEE factors of one window."""

    window: Interval
    scheduled: timedelta
    planned_stops: timedelta
    unknown: timedelta
    planned_production: timedelta
    run_time: timedelta
    by_reason: dict[str, timedelta]
    by_category: dict[str, timedelta]
    minor_stops: int
    minor_stop_time: timedelta
    total_count: int | None
    good_count: int | None
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def unclassified(self) -> timedelta:
        """Downtime nobody has explained yet."""
        return self.by_reason.get(UNCLASSIFIED, ZERO)


def loss_report(
    window: Interval,
    *,
    scheduled: Sequence[Interval] | None,
    stops: Sequence[ClassifiedStop],
    minor_stops: Sequence[Interval] = (),
    unknown: Sequence[Interval] = (),
    total_count: int | None = None,
    good_count: int | None = None,
    ideal_cycle_time_s: float | None = None,
    min_run: timedelta = DEFAULT_MIN_RUN,
) -> LossReport:
    """The OEE of `window` over the scheduled intervals (None: no calendar, the whole window), with its losses."""
    notes: list[str] = []
    if scheduled is None:
        notes.append("no calendar: planned production time is the whole window (24/7)")
        scheduled = [window]
    plan = [piece for piece in (_clip(item, window) for item in merge(scheduled)) if piece is not None]
    scheduled_time = total(plan)

    unknown_pieces = _inside(merge(unknown), plan)
    unknown_time = total(unknown_pieces)
    by_reason: dict[str, timedelta] = {}
    by_category: dict[str, timedelta] = {category.value: ZERO for category in LossCategory} | {UNCLASSIFIED: ZERO}
    for stop in stops:
        # A stop is counted only where it is scheduled and known (an overlap with a data gap is the gap's).
        pieces = _minus(_inside([stop.span], plan), unknown_pieces)
        length = total(pieces)
        if length <= ZERO:
            continue
        key = stop.reason.code if stop.reason else UNCLASSIFIED
        category = stop.reason.category.value if stop.reason else UNCLASSIFIED
        by_reason[key] = by_reason.get(key, ZERO) + length
        by_category[category] += length
    planned_stops = by_category[LossCategory.PLANNED_STOP.value]
    planned_production = scheduled_time - planned_stops - unknown_time
    availability_loss = by_category[LossCategory.AVAILABILITY.value] + by_category[UNCLASSIFIED]
    run_time = max(planned_production - availability_loss, ZERO)
    minor = _minus(_inside(merge(minor_stops), plan), unknown_pieces)
    if unknown_time > ZERO:
        notes.append(f"{unknown_time.total_seconds():g} s of scheduled time with no data: not planned production time")
    if by_category[UNCLASSIFIED] > ZERO:
        notes.append(
            f"{by_category[UNCLASSIFIED].total_seconds():g} s of downtime not classified yet: "
            "counted as availability loss"
        )

    availability = _ratio(run_time, planned_production, min_run, "availability", "planned production time", notes)
    performance = None
    if ideal_cycle_time_s is None:
        notes.append("no ideal cycle time: performance is null")
    elif total_count is None:
        notes.append("no total count: performance is null")
    else:
        performance = _ratio(
            timedelta(seconds=ideal_cycle_time_s * total_count), run_time, min_run, "performance", "run time", notes
        )
    quality = None
    if total_count is None or good_count is None:
        notes.append("no good and total counts: quality is null")
    elif total_count == 0:
        notes.append("nothing was made: quality is null")
    else:
        quality = good_count / total_count
    oee = availability * performance * quality if None not in (availability, performance, quality) else None  # type: ignore[operator] # checked
    return LossReport(
        window=window,
        scheduled=scheduled_time,
        planned_stops=planned_stops,
        unknown=unknown_time,
        planned_production=planned_production,
        run_time=run_time,
        by_reason=dict(sorted(by_reason.items(), key=lambda item: item[1], reverse=True)),
        by_category=by_category,
        minor_stops=len(minor),
        minor_stop_time=total(minor),
        total_count=total_count,
        good_count=good_count,
        availability=availability,
        performance=performance,
        quality=quality,
        oee=oee,
        notes=notes,
    )


def _ratio(
    numerator: timedelta, denominator: timedelta, minimum: timedelta, name: str, what: str, notes: list[str]
) -> float | None:
    if denominator < minimum or denominator <= ZERO:
        notes.append(f"{what} below {minimum.total_seconds():g} s: {name} is not computed")
        return None
    return numerator / denominator


def _clip(interval: Interval, window: Interval) -> Interval | None:
    start, end = max(interval.start, window.start), min(interval.end, window.end)
    return Interval(start, end) if end > start else None


def _inside(intervals: Sequence[Interval], plan: Sequence[Interval]) -> list[Interval]:
    """The parts of `intervals` that lie inside the (sorted, disjoint) plan."""
    pieces = [piece for item in intervals for part in plan if (piece := _clip(item, part)) is not None]
    return merge(pieces)


def _minus(intervals: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    """The parts of `intervals` outside every hole."""
    result: list[Interval] = []
    for item in intervals:
        cursor = item.start
        for hole in holes:
            if hole.end <= cursor or hole.start >= item.end:
                continue
            if hole.start > cursor:
                result.append(Interval(cursor, hole.start))
            cursor = max(cursor, hole.end)
        if item.end > cursor:
            result.append(Interval(cursor, item.end))
    return result

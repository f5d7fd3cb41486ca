"""The plant calendar, loss reasons, a machine's downtime events and their classification, and OEE by shift, day
and week (see docs/metrics.md).

Plain async functions over a session (no FastAPI, no commit, no wall clock: `now` is an argument). Stops are not
stored: they follow from the machine's states (core.downtime) whenever they are asked for; what people say about them
is (`DowntimeClassification`), keyed by the machine and the start of the piece of the stop it names.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.machines.history import state_changes
from api.machines.service import get_machine
from api.oee.calc import counter_increase
from api.oee.service import counter_readings
from core.calendar import (
    Break,
    CalendarError,
    ExceptionKind,
    Interval,
    PlantCalendar,
    Shift,
    WeeklyPattern,
    local_day,
    merge,
)
from core.calendar import CalendarException as CalendarEntry
from core.downtime import (
    LossCategory,
    Reason,
    StateChange,
    Stop,
    detect_stops,
    states_from_counter,
    unknown_spans,
)
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.losses import UNCLASSIFIED, ClassifiedStop, LossReport, loss_report
from core.models import (
    CalendarException,
    CalendarExceptionKind,
    DowntimeClassification,
    Issue,
    LossReason,
    Machine,
    PatternShift,
    Reading,
    Role,
    ShiftBreak,
    ShiftPattern,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    WorkOrder,
    WorkOrderStage,
)
from core.security import Principal

# Overlaps of shifts are judged in wall time, as the plant writes its shifts.
WALL = ZoneInfo("UTC")
# Stops that began before the window asked for are found by looking this far back.
LOOKBACK = timedelta(days=1)
MAX_SPAN = timedelta(days=62)
MAX_HEARD = 200_000


@dataclass(frozen=True)
class DowntimeRules:
    """The micro-stop threshold, the silence after which a state is unknown, and the counter tags."""

    micro_stop: timedelta
    max_silence: timedelta
    total_tag: str
    good_tag: str


# ---- calendar ------------------------------------------------------------------------------------------------------


async def patterns(session: AsyncSession) -> list[ShiftPattern]:
    """Every weekly pattern, oldest first."""
    rows = await session.scalars(select(ShiftPattern).order_by(ShiftPattern.valid_from))
    return list(rows)


async def pattern_shifts(session: AsyncSession, pattern_ids: Sequence[int]) -> dict[int, list[PatternShift]]:
    """The shifts of each pattern, by weekday and start."""
    found: dict[int, list[PatternShift]] = {pattern_id: [] for pattern_id in pattern_ids}
    rows = await session.scalars(
        select(PatternShift)
        .where(PatternShift.pattern_id.in_(pattern_ids))
        .order_by(PatternShift.weekday, PatternShift.start_time, PatternShift.id)
    )
    for row in rows:
        found[row.pattern_id].append(row)
    return found


async def shift_breaks(session: AsyncSession, shift_ids: Sequence[int]) -> dict[int, list[ShiftBreak]]:
    """The breaks of each shift, by start."""
    found: dict[int, list[ShiftBreak]] = {shift_id: [] for shift_id in shift_ids}
    rows = await session.scalars(
        select(ShiftBreak).where(ShiftBreak.shift_id.in_(shift_ids)).order_by(ShiftBreak.start_time)
    )
    for row in rows:
        found[row.shift_id].append(row)
    return found


async def calendar_exceptions(session: AsyncSession) -> list[CalendarException]:
    """Every one-off calendar entry, by date."""
    return list(await session.scalars(select(CalendarException).order_by(CalendarException.day, CalendarException.id)))


async def load_calendar(session: AsyncSession, zone: ZoneInfo) -> PlantCalendar | None:
    """The plant calendar, or None when nothing is planned at all (machines then run 24/7, as before)."""
    rows = await patterns(session)
    entries = await calendar_exceptions(session)
    if not rows and not entries:
        return None
    shifts = await pattern_shifts(session, [row.id for row in rows])
    breaks = await shift_breaks(session, [shift.id for found in shifts.values() for shift in found])
    weekly = tuple(
        WeeklyPattern(
            row.valid_from,
            tuple(
                Shift(
                    shift.name,
                    shift.weekday,
                    shift.start_time,
                    shift.end_time,
                    tuple(Break(pause.start_time, pause.end_time) for pause in breaks[shift.id]),
                )
                for shift in shifts[row.id]
            ),
        )
        for row in rows
    )
    exceptions = tuple(_entry(entry) for entry in entries)
    return PlantCalendar(zone, weekly, exceptions)


def _entry(row: CalendarException) -> CalendarEntry:
    if row.kind is CalendarExceptionKind.NON_WORKING:
        return CalendarEntry(row.day, ExceptionKind.NON_WORKING)
    # The API refuses an extra shift without its name and times; a row written otherwise is a plain holiday-less day.
    if row.shift_name is None or row.start_time is None or row.end_time is None:
        raise Conflict(f"Calendar exception {row.id} is an extra shift without its times", code="invalid_calendar")
    return CalendarEntry(
        row.day, ExceptionKind.EXTRA_SHIFT, Shift(row.shift_name, row.day.weekday(), row.start_time, row.end_time)
    )


@dataclass(frozen=True)
class ShiftSpec:
    """A shift as the API receives it: a name, weekdays, wall times and breaks."""

    name: str
    weekdays: Sequence[int]
    start: time
    end: time
    breaks: Sequence[tuple[time, time]]


async def create_pattern(
    session: AsyncSession, *, actor: Principal, valid_from: date, name: str, shifts: Sequence[ShiftSpec]
) -> ShiftPattern:
    """A new weekly pattern from `valid_from`; the one before it keeps its days. One pattern per date."""
    checked = []
    for spec in shifts:
        for weekday in dict.fromkeys(spec.weekdays):
            try:
                checked.append(
                    Shift(spec.name, weekday, spec.start, spec.end, tuple(Break(*pause) for pause in spec.breaks))
                )
            except CalendarError as error:
                raise InvalidInput(str(error), fields={"shifts": str(error)}, code="invalid_shift") from None
    _refuse_overlaps(checked)
    if await session.scalar(select(ShiftPattern.id).where(ShiftPattern.valid_from == valid_from)) is not None:
        raise Conflict(f"A pattern already starts on {valid_from}: delete it first", code="pattern_exists")
    plant = await load_calendar(session, WALL)
    if plant is not None:
        # The extra shifts already planned from this pattern's first day on must not overlap its shifts.
        candidate = PlantCalendar(WALL, (*plant.patterns, WeeklyPattern(valid_from, tuple(checked))), plant.exceptions)
        for entry in plant.exceptions:
            if entry.kind is ExceptionKind.EXTRA_SHIFT and entry.day >= valid_from - timedelta(days=1):
                _refuse_overlap_with(candidate, entry)
    pattern = ShiftPattern(valid_from=valid_from, name=name, created_by_id=actor.user_id)
    session.add(pattern)
    await session.flush()
    for shift in checked:
        row = PatternShift(
            pattern_id=pattern.id, name=shift.name, weekday=shift.weekday, start_time=shift.start, end_time=shift.end
        )
        session.add(row)
        await session.flush()
        session.add_all(
            ShiftBreak(shift_id=row.id, start_time=pause.start, end_time=pause.end) for pause in shift.breaks
        )
    await session.flush()
    return pattern


def _refuse_overlaps(shifts: Sequence[Shift]) -> None:
    """Two shifts of one pattern may not overlap (a week of the pattern, laid out in wall time)."""
    base = date(2001, 1, 1)  # a Monday
    calendar = PlantCalendar(ZoneInfo("UTC"), (WeeklyPattern(base, tuple(shifts)),))
    instances = [shift for offset in range(7) for shift in calendar.shifts_on(base + timedelta(days=offset))]
    instances.sort(key=lambda shift: shift.span.start)
    for earlier, later in itertools.pairwise(instances):
        if later.span.start < earlier.span.end:
            message = f"shifts {earlier.name} and {later.name} overlap on weekday {later.day.weekday()}"
            raise InvalidInput(message, fields={"shifts": message}, code="overlapping_shifts")


async def delete_pattern(session: AsyncSession, *, pattern_id: int) -> None:
    """Remove a pattern (its shifts and breaks go with it); the previous pattern then holds for its days."""
    pattern = await session.get(ShiftPattern, pattern_id)
    if pattern is None:
        raise NotFound(f"Shift pattern {pattern_id} does not exist")
    await session.delete(pattern)
    await session.flush()


async def create_exception(
    session: AsyncSession,
    *,
    actor: Principal,
    day: date,
    kind: CalendarExceptionKind,
    shift_name: str | None,
    start: time | None,
    end: time | None,
    note: str | None,
) -> CalendarException:
    """A holiday or an extra shift on one local date."""
    if kind is CalendarExceptionKind.EXTRA_SHIFT and start is not None and end is not None and start == end:
        raise InvalidInput("an extra shift cannot start and end at the same time", code="invalid_shift")
    if kind is CalendarExceptionKind.EXTRA_SHIFT and shift_name is not None and start is not None and end is not None:
        await _refuse_overlapping_extra(
            session, CalendarEntry(day, ExceptionKind.EXTRA_SHIFT, Shift(shift_name, day.weekday(), start, end))
        )
    row = CalendarException(
        day=day,
        kind=kind,
        shift_name=shift_name,
        start_time=start,
        end_time=end,
        note=note,
        created_by_id=actor.user_id,
    )
    session.add(row)
    await session.flush()
    return row


async def _refuse_overlapping_extra(session: AsyncSession, entry: CalendarEntry) -> None:
    """An extra shift may not overlap a shift of its day or of the days around it (wall time, as for patterns)."""
    plant = await load_calendar(session, WALL)
    calendar = PlantCalendar(WALL, plant.patterns if plant else (), (*(plant.exceptions if plant else ()), entry))
    _refuse_overlap_with(calendar, entry)


def _refuse_overlap_with(calendar: PlantCalendar, entry: CalendarEntry) -> None:
    """Refuse a shift of `calendar` that overlaps the extra shift of `entry` on its day or the days around it; an
    overlap between two other shifts is not this entry's business."""
    mine = {(shift.day, shift.span) for shift in PlantCalendar(WALL, (), (entry,)).shifts_on(entry.day)}
    instances = sorted(
        (shift for offset in (-1, 0, 1) for shift in calendar.shifts_on(entry.day + timedelta(days=offset))),
        key=lambda shift: shift.span.start,
    )
    for index, earlier in enumerate(instances):
        for later in instances[index + 1 :]:
            if later.span.start >= earlier.span.end:
                break
            if (earlier.day, earlier.span) in mine or (later.day, later.span) in mine:
                message = f"shifts {earlier.name} and {later.name} overlap on {later.day}"
                raise InvalidInput(message, fields={"start": message}, code="overlapping_shifts")


async def delete_exception(session: AsyncSession, *, exception_id: int) -> None:
    """Remove a one-off calendar entry."""
    result = await session.execute(delete(CalendarException).where(CalendarException.id == exception_id))
    if not result.rowcount:  # type: ignore[attr-defined] # CursorResult of a DELETE
        raise NotFound(f"Calendar exception {exception_id} does not exist")


# ---- reasons -------------------------------------------------------------------------------------------------------


async def reasons(session: AsyncSession, *, include_inactive: bool = False) -> list[LossReason]:
    """The loss reasons by category and code."""
    query = select(LossReason).order_by(LossReason.category, LossReason.code)
    if not include_inactive:
        query = query.where(LossReason.active.is_(True))
    return list(await session.scalars(query))


async def create_reason(
    session: AsyncSession, *, code: str, category: LossCategory, label_tr: str, label_en: str
) -> LossReason:
    """A plant's own reason."""
    if await session.get(LossReason, code) is not None:
        raise Conflict(f"Reason {code} exists already", code="reason_exists")
    row = LossReason(code=code, category=category, label_tr=label_tr, label_en=label_en, active=True)
    session.add(row)
    await session.flush()
    return row


async def update_reason(
    session: AsyncSession, *, code: str, label_tr: str | None, label_en: str | None, active: bool | None
) -> LossReason:
    """New labels, or in or out of use; code and category never change (they are what past losses were booked as)."""
    row = await session.get(LossReason, code)
    if row is None:
        raise NotFound(f"Reason {code} does not exist")
    if label_tr is not None:
        row.label_tr = label_tr
    if label_en is not None:
        row.label_en = label_en
    if active is not None:
        row.active = active
    await session.flush()
    return row


def _reason(row: LossReason) -> Reason:
    return Reason(row.code, row.category, row.label_tr, row.label_en)


# ---- downtime ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DowntimePiece:
    """A downtime event, or the piece of one a classification names, with what was said about it and the issues
    (breakdown, material shortage) raised on the machine's stages while it lasted."""

    start: datetime
    end: datetime | None
    stop: Stop
    stage_id: int | None
    classification: DowntimeClassification | None
    reason: LossReason | None
    # (issue id, its stage id) of the breakdown / shortage issues raised meanwhile.
    issues: tuple[tuple[int, int], ...] = ()


# Issues of these types raised during a stop are shown with it.
DOWNTIME_ISSUE_TYPES = ("machine_breakdown", "material_shortage")


@dataclass(frozen=True)
class Downtimes:
    """Downtime pieces of a window and the minor stops counted."""

    machine_id: int
    start: datetime
    end: datetime
    pieces: list[DowntimePiece]
    minor: list[Stop]
    now: datetime


@dataclass(frozen=True)
class _Observed:
    stops: list[Stop]
    minor: list[Stop]
    first_known: datetime | None
    heard: list[datetime]


def _check_window(start: datetime, end: datetime, now: datetime) -> datetime:
    if start >= end:
        raise InvalidInput("`from` must be before `to`", fields={"from": "must be before to"}, code="invalid_window")
    if end - start > MAX_SPAN:
        raise InvalidInput(
            f"at most {MAX_SPAN.days} days at a time", fields={"from": "too far before to"}, code="range_too_large"
        )
    if start >= now:
        raise InvalidInput("`from` is in the future", fields={"from": "must be before now"}, code="window_in_future")
    return min(end, now)


async def _observe(
    session: AsyncSession, *, machine: Machine, start: datetime, end: datetime, now: datetime, rules: DowntimeRules
) -> _Observed:
    machine_id = machine.id
    since = start - LOOKBACK
    changes = [
        StateChange(ts, state)
        for ts, state in await state_changes(session, machine_id=machine_id, start=since, end=end)
    ]
    if not changes:  # a machine without a state tag: its cycle counter says when it ran
        changes = await _counter_changes(session, machine=machine, since=since, end=end, now=now, rules=rules)
    heard: list[datetime] = []
    if rules.max_silence > timedelta(0):
        heard = list(
            await session.scalars(
                select(Reading.ts)
                .where(Reading.machine_id == machine_id, Reading.tag.in_((rules.total_tag, rules.good_tag)))
                .where(Reading.ts >= since, Reading.ts < end)
                .order_by(Reading.ts)
                .limit(MAX_HEARD)
            )
        )
    found = detect_stops(
        changes, now=min(end, now), micro_stop=rules.micro_stop, heard=heard, max_silence=rules.max_silence
    )

    def overlaps(stop: Stop) -> bool:
        return (stop.end or now) > start and stop.start < end

    return _Observed(
        stops=[stop for stop in found.events if overlaps(stop)],
        minor=[stop for stop in found.minor if overlaps(stop)],
        first_known=changes[0].ts if changes else None,
        heard=heard,
    )


async def _counter_changes(
    session: AsyncSession, *, machine: Machine, since: datetime, end: datetime, now: datetime, rules: DowntimeRules
) -> list[StateChange]:
    """The state changes the machine's total counter implies (its good counter when it has no total one)."""
    for tag in (rules.total_tag, rules.good_tag):
        points = (
            await counter_readings(session, machine_id=machine.id, tags=(tag,), since=since, start=since, end=end)
        )[tag]
        if points:
            cycle = timedelta(seconds=machine.ideal_cycle_time_s) if machine.ideal_cycle_time_s else None
            readings = [(point.ts, point.value) for point in points]
            return states_from_counter(readings, now=min(end, now), ideal_cycle=cycle)
    return []


async def _stage_running(session: AsyncSession, *, machine_id: int, at: datetime) -> int | None:
    """The stage started on the machine at or before `at` and not done by then."""
    started = await session.scalar(
        select(StageEvent.stage_id)
        .join(WorkOrderStage, WorkOrderStage.id == StageEvent.stage_id)
        .where(WorkOrderStage.machine_id == machine_id, StageEvent.kind == StageEventKind.START, StageEvent.at <= at)
        .order_by(StageEvent.at.desc())
        .limit(1)
    )
    if started is None:
        return None
    done = await session.scalar(
        select(StageEvent.id).where(
            StageEvent.stage_id == started, StageEvent.kind == StageEventKind.DONE, StageEvent.at <= at
        )
    )
    return None if done is not None else started


async def _current(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime
) -> list[DowntimeClassification]:
    return list(
        await session.scalars(
            select(DowntimeClassification)
            .where(DowntimeClassification.machine_id == machine_id, DowntimeClassification.replaced_at.is_(None))
            .where(DowntimeClassification.start_at >= start, DowntimeClassification.start_at < end)
            .order_by(DowntimeClassification.start_at)
        )
    )


async def _pieces(
    session: AsyncSession, *, machine_id: int, stops: Sequence[Stop], now: datetime
) -> list[DowntimePiece]:
    if not stops:
        return []
    earliest = min(stop.start for stop in stops)
    latest = max((stop.end or now) for stop in stops)
    current = await _current(session, machine_id=machine_id, start=earliest, end=latest + timedelta(microseconds=1))
    by_start = {row.start_at: row for row in current}
    reasons_by_code = {row.code: row for row in await reasons(session, include_inactive=True)}
    pieces = []
    for stop in stops:
        end = stop.end or now
        # A piece starts at the stop's start and at every classification's start; a classification that was given to
        # the first part of a split ends at the split, which starts an unclassified piece if nothing starts there.
        ends = {row.end_at for row in current if row.end_at is not None}
        cuts = sorted({stop.start, *(at for at in {*by_start, *ends} if stop.start < at < end)})
        for index, cut in enumerate(cuts):
            row = by_start.get(cut)
            piece_end = cuts[index + 1] if index + 1 < len(cuts) else stop.end
            pieces.append(
                DowntimePiece(
                    start=cut,
                    end=piece_end,
                    stop=stop,
                    stage_id=await _stage_running(session, machine_id=machine_id, at=cut),
                    classification=row,
                    reason=reasons_by_code.get(row.reason_code) if row else None,
                    issues=await _issues_during(session, machine_id=machine_id, start=cut, end=piece_end or now),
                )
            )
    return pieces


async def _issues_during(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime
) -> tuple[tuple[int, int], ...]:
    rows = await session.execute(
        select(Issue.id, Issue.stage_id)
        .join(WorkOrderStage, WorkOrderStage.id == Issue.stage_id)
        .where(WorkOrderStage.machine_id == machine_id, Issue.type.in_(DOWNTIME_ISSUE_TYPES))
        .where(Issue.created_at >= start, Issue.created_at < end)
        .order_by(Issue.id)
    )
    return tuple((issue_id, stage_id) for issue_id, stage_id in rows)


async def visible_stages(session: AsyncSession, *, actor: Principal) -> set[int] | None:
    """The stages whose ids the actor may see: a worker's assigned ones; None for planners and admins (all)."""
    if actor.role is not Role.WORKER:
        return None
    rows = await session.scalars(select(StageAssignment.stage_id).where(StageAssignment.user_id == actor.user_id))
    return set(rows)


async def machine_downtimes(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime, now: datetime, rules: DowntimeRules
) -> Downtimes:
    """The downtime events (and pieces of them classified apart) of [start, min(end, now)), newest last."""
    machine = await get_machine(session, machine_id=machine_id)
    until = _check_window(start, end, now)
    observed = await _observe(session, machine=machine, start=start, end=until, now=now, rules=rules)
    pieces = await _pieces(session, machine_id=machine.id, stops=observed.stops, now=until)
    return Downtimes(machine.id, start, until, pieces, observed.minor, until)


async def _may_classify(session: AsyncSession, *, actor: Principal, machine_id: int, stage_id: int | None) -> None:
    """Planners and admins classify any stop; a worker those of a machine they work on (a stage assigned to them that
    ran then, or runs on it now)."""
    if actor.role is not Role.WORKER:
        return
    assigned = select(StageAssignment.stage_id).where(StageAssignment.user_id == actor.user_id)
    if stage_id is not None and await session.scalar(assigned.where(StageAssignment.stage_id == stage_id)):
        return
    running = await session.scalar(
        select(WorkOrderStage.id)
        .where(WorkOrderStage.machine_id == machine_id)
        .where(WorkOrderStage.status.in_((StageStatus.IN_PROGRESS, StageStatus.PAUSED)))
        .where(WorkOrderStage.id.in_(assigned))
        .limit(1)
    )
    if running is None:
        raise Forbidden(
            "Workers classify the stops of the machine of a stage assigned to them", code="not_your_machine"
        )


async def classify(
    session: AsyncSession,
    *,
    actor: Principal,
    machine_id: int,
    start: datetime,
    reason_code: str,
    note: str | None,
    split_at: datetime | None,
    now: datetime,
    rules: DowntimeRules,
) -> list[DowntimePiece]:
    """Give the piece of a stop that starts at `start` a reason (its earlier reason, if any, becomes history); with
    `split_at`, only [start, split_at): the rest stays as it was, a piece of its own. Returns the stop's pieces."""
    machine = await get_machine(session, machine_id=machine_id)
    reason = await session.get(LossReason, reason_code)
    if reason is None or not reason.active:
        raise InvalidInput(f"Unknown reason {reason_code}", fields={"reason_code": "unknown"}, code="unknown_reason")
    if reason.category is LossCategory.QUALITY:
        raise InvalidInput(
            f"{reason_code} is a scrap reason, not a downtime reason",
            fields={"reason_code": "a quality loss is reported as scrap"},
            code="not_a_downtime_reason",
        )
    observed = await _observe(
        session, machine=machine, start=start - timedelta(microseconds=1), end=now, now=now, rules=rules
    )
    pieces = await _pieces(session, machine_id=machine.id, stops=observed.stops, now=now)
    target = next((piece for piece in pieces if piece.start == start), None)
    if target is None:
        raise NotFound(f"No downtime of machine {machine.id} starts at {start.isoformat()}")
    await _may_classify(session, actor=actor, machine_id=machine.id, stage_id=target.stage_id)
    piece_end = target.end or now
    if split_at is not None and not start < split_at < piece_end:
        raise InvalidInput(
            "split_at must lie inside the stop", fields={"split_at": "inside the stop"}, code="split_outside"
        )
    if target.classification is not None:
        target.classification.replaced_at = now
        target.classification.replaced_by_id = actor.user_id
        await session.flush()
    session.add(
        DowntimeClassification(
            machine_id=machine.id,
            start_at=start,
            end_at=split_at or target.end,
            reason_code=reason.code,
            stage_id=target.stage_id,
            classified_by_id=actor.user_id,
            classified_at=now,
            note=note,
        )
    )
    if split_at is not None and target.classification is not None:
        # The rest keeps the reason it had: a classification of its own from the split on.
        previous = target.classification
        session.add(
            DowntimeClassification(
                machine_id=machine.id,
                start_at=split_at,
                end_at=target.end,
                reason_code=previous.reason_code,
                stage_id=target.stage_id,
                classified_by_id=previous.classified_by_id,
                classified_at=now,
                note=previous.note,
            )
        )
    await session.flush()
    return await _pieces(session, machine_id=machine.id, stops=[target.stop], now=now)


async def classification_history(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime
) -> list[DowntimeClassification]:
    """Every classification of the machine's stops starting in [start, end), replaced ones included, oldest first."""
    await get_machine(session, machine_id=machine_id)
    return list(
        await session.scalars(
            select(DowntimeClassification)
            .where(DowntimeClassification.machine_id == machine_id)
            .where(DowntimeClassification.start_at >= start, DowntimeClassification.start_at < end)
            .order_by(DowntimeClassification.start_at, DowntimeClassification.classified_at, DowntimeClassification.id)
        )
    )


# ---- OEE by shift, day, week ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One row of a grouped OEE: a shift, a production day or a week, and its window; a work order's row counts only
    the runs of its stages inside that window (`runs`), never the time of other orders between them."""

    group: str
    label: str
    span: Interval
    runs: tuple[Interval, ...] | None = None


@dataclass(frozen=True)
class GroupedOee:
    """OEE rows of a machine and the total of the window."""

    machine_id: int
    group_by: str
    zone: ZoneInfo
    calendar: bool
    rows: list[tuple[Bucket, LossReport]]
    total: tuple[Bucket, LossReport]


async def run_buckets(
    session: AsyncSession, *, machine_id: int, window: Interval, group_by: str, visible: set[int] | None
) -> list[Bucket]:
    """The stages (or work orders) that ran on the machine in the window: a stage from its first start to its done
    (or the window's end while it runs), a work order over the runs of its stages on the machine (not the time
    between them); cut to the window, oldest first. Cancelled work orders are left out, and so are stages the actor
    may not see (`visible`: a worker's assigned stages; None: all)."""
    query = (
        select(
            WorkOrderStage.id, WorkOrderStage.stage_name, WorkOrder.id, WorkOrder.lot_no, StageEvent.kind, StageEvent.at
        )
        .join(WorkOrder, WorkOrder.id == WorkOrderStage.work_order_id)
        .join(StageEvent, StageEvent.stage_id == WorkOrderStage.id)
        .where(WorkOrderStage.machine_id == machine_id, WorkOrder.cancelled_at.is_(None))
        .where(StageEvent.kind.in_((StageEventKind.START, StageEventKind.DONE)), StageEvent.at < window.end)
    )
    if visible is not None:
        query = query.where(WorkOrderStage.id.in_(sorted(visible)))
    starts: dict[int, datetime] = {}
    dones: dict[int, datetime] = {}
    labels: dict[int, tuple[str, str]] = {}
    for stage_id, stage_name, order_id, lot_no, kind, at in await session.execute(query):
        labels[stage_id] = (f"{lot_no} {stage_name} (stage {stage_id})", f"{lot_no} (work order {order_id})")
        if kind is StageEventKind.START:
            starts[stage_id] = min(at, starts.get(stage_id, at))
        else:
            dones[stage_id] = max(at, dones.get(stage_id, at))
    runs: dict[str, list[Interval]] = {}
    for stage_id, started in starts.items():
        ended = dones[stage_id] if stage_id in dones and dones[stage_id] >= started else window.end
        low, high = max(started, window.start), min(ended, window.end)
        if high > low:
            label = labels[stage_id][0 if group_by == "stage" else 1]
            runs.setdefault(label, []).append(Interval(low, high))
    found = []
    for label, pieces in runs.items():
        merged = merge(pieces)
        span = Interval(merged[0].start, merged[-1].end)
        found.append(Bucket(group_by, label, span, tuple(merged) if group_by == "work_order" else None))
    return sorted(found, key=lambda bucket: (bucket.span.start, bucket.label))


def buckets(calendar: PlantCalendar | None, zone: ZoneInfo, window: Interval, group_by: str) -> list[Bucket]:
    """The shifts, production days or weeks overlapping the window, each clipped to it."""
    found: list[Bucket] = []
    if group_by == "shift":
        if calendar is None:
            raise Conflict("No plant calendar: OEE by shift needs shifts (POST /calendar/patterns)", code="no_calendar")
        for shift in calendar.shifts_between(window):
            found.append(Bucket("shift", f"{shift.day.isoformat()} {shift.name}", shift.span))
    else:
        first = window.start.astimezone(zone).date() - timedelta(days=1)
        last = window.end.astimezone(zone).date()
        day = first - timedelta(days=first.weekday()) if group_by == "week" else first
        step = timedelta(days=7 if group_by == "week" else 1)
        while day <= last:
            span = _production_span(calendar, zone, day, step)
            if span is not None:
                label = (
                    f"{day.isocalendar().year}-W{day.isocalendar().week:02d}" if group_by == "week" else day.isoformat()
                )
                found.append(Bucket(group_by, label, span))
            day += step
    clipped = []
    for bucket in found:
        start, end = max(bucket.span.start, window.start), min(bucket.span.end, window.end)
        if end > start:
            clipped.append(Bucket(bucket.group, bucket.label, Interval(start, end)))
    return clipped


def _production_span(calendar: PlantCalendar | None, zone: ZoneInfo, first: date, step: timedelta) -> Interval | None:
    """Local midnight to midnight without a calendar; with one, from the first shift's start to the last shift's end
    of the production days (so a night shift counts for the day it started on)."""
    days = [first + timedelta(days=offset) for offset in range(step.days)]
    if calendar is None:
        return Interval(local_day(zone, days[0]).start, local_day(zone, days[-1]).end)
    shifts = [shift for day in days for shift in calendar.shifts_on(day)]
    if not shifts:
        return None
    return Interval(min(shift.span.start for shift in shifts), max(shift.span.end for shift in shifts))


async def grouped_oee(
    session: AsyncSession,
    *,
    machine_id: int,
    group_by: str,
    start: datetime,
    end: datetime,
    now: datetime,
    zone: ZoneInfo,
    rules: DowntimeRules,
    actor: Principal | None = None,
) -> GroupedOee:
    """OEE and losses of a machine by shift, production day or week, or by the stages or work orders that ran on it
    (those the actor may see), over [start, min(end, now))."""
    machine = await get_machine(session, machine_id=machine_id)
    until = _check_window(start, end, now)
    window = Interval(start, until)
    calendar = await load_calendar(session, zone)
    if group_by in ("stage", "work_order"):
        visible = None if actor is None else await visible_stages(session, actor=actor)
        rows_of = await run_buckets(session, machine_id=machine.id, window=window, group_by=group_by, visible=visible)
    else:
        rows_of = buckets(calendar, zone, window, group_by)
    observed = await _observe(session, machine=machine, start=start, end=until, now=now, rules=rules)
    pieces = await _pieces(session, machine_id=machine.id, stops=observed.stops, now=until)
    stops = [
        ClassifiedStop(Interval(piece.start, piece.end or until), _reason(piece.reason) if piece.reason else None)
        for piece in pieces
    ]
    minor = [Interval(stop.start, stop.end or until) for stop in observed.minor]
    unknown = [
        Interval(low, high)
        for low, high in unknown_spans(
            first_known=observed.first_known,
            heard=observed.heard,
            start=start,
            end=until,
            max_silence=rules.max_silence,
        )
    ]
    counters = await counter_readings(
        session, machine_id=machine.id, tags=(rules.total_tag, rules.good_tag), since=start, start=start, end=until
    )

    def planned_pieces(bucket: Bucket) -> list[Interval] | None:
        """Where a row's time counts: its shifts (None without a calendar: all of it), within its runs if it has
        any (a work order: its stages' runs, not what ran between them)."""
        span = bucket.span
        pieces = None if calendar is None else [
            Interval(max(shift.span.start, span.start), min(shift.span.end, span.end))
            for shift in calendar.shifts_between(span)
        ]  # fmt: skip
        if bucket.runs is not None:
            pieces = [
                Interval(max(piece.start, run.start), min(piece.end, run.end))
                for piece in (pieces if pieces is not None else [span])
                for run in bucket.runs
                if min(piece.end, run.end) > max(piece.start, run.start)
            ]
        return None if pieces is None else merge(pieces)

    def counted(tag: str, pieces: list[Interval] | None, span: Interval) -> int | None:
        """The parts a counter rose by inside the pieces (the whole span when None), so parts made on a holiday or
        between shifts count in no row, and shifts, days and weeks add up."""
        found = [counter_increase(counters[tag], start=piece.start, end=piece.end) for piece in pieces or [span]]
        rises = [increase.count if pieces != [] else 0.0 for increase in found if increase is not None]
        return round(sum(rises)) if rises else None

    def report(bucket: Bucket) -> LossReport:
        span = bucket.span
        pieces = planned_pieces(bucket)
        scheduled = calendar.planned_intervals(span) if calendar is not None else None
        if bucket.runs is not None:
            scheduled = [
                Interval(max(plan.start, run.start), min(plan.end, run.end))
                for plan in (scheduled if scheduled is not None else [span])
                for run in bucket.runs
                if min(plan.end, run.end) > max(plan.start, run.start)
            ]
        return loss_report(
            span,
            scheduled=scheduled,
            stops=stops,
            minor_stops=minor,
            unknown=unknown,
            total_count=counted(rules.total_tag, pieces, span),
            good_count=counted(rules.good_tag, pieces, span),
            ideal_cycle_time_s=machine.ideal_cycle_time_s,
        )

    rows = [(bucket, report(bucket)) for bucket in rows_of]
    whole = Bucket("total", f"{start.astimezone(zone).isoformat()} / {until.astimezone(zone).isoformat()}", window)
    return GroupedOee(machine.id, group_by, zone, calendar is not None, rows, (whole, report(whole)))


def pareto(report: LossReport, reason_categories: dict[str, LossCategory]) -> list[tuple[str, float]]:
    """Losses by reason in minutes, largest first; planned stops are not losses and are left out."""
    return [
        (code, round(length.total_seconds() / 60, 3))
        for code, length in report.by_reason.items()
        if reason_categories.get(code) is not LossCategory.PLANNED_STOP
        and (code == UNCLASSIFIED or code in reason_categories)
    ]


CSV_COLUMNS = (
    "group",
    "label",
    "start",
    "end",
    "scheduled_min",
    "planned_stop_min",
    "unknown_min",
    "planned_production_min",
    "run_min",
    "unclassified_min",
    "minor_stops",
    "minor_stop_min",
    "total_count",
    "good_count",
    "availability",
    "performance",
    "quality",
    "oee",
)


def to_csv(rows: Sequence[dict[str, object]]) -> str:
    """The rows as CSV (the columns of CSV_COLUMNS, then one column per loss reason)."""
    reasons_seen = sorted({code for row in rows for code in row["losses_by_reason_min"]})  # type: ignore[attr-defined] # dict
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"loss_{code}_min" for code in reasons_seen)])
    for row in rows:
        losses = row["losses_by_reason_min"]
        writer.writerow([row[name] for name in CSV_COLUMNS] + [losses.get(code, 0) for code in reasons_seen])  # type: ignore[attr-defined] # dict
    return buffer.getvalue()

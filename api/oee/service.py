"""OEE of a machine over a window or over a stage's run, and the stages that run on a machine.

Plain async functions over a session (no FastAPI, no commit, no wall clock: `now` is an argument); the arithmetic
is in `api/oee/calc.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from api.efficiency.calc import actual_window
from api.machines.history import state_changes
from api.machines.service import get_machine
from api.oee.calc import Counter, CounterPoint, Oee, StatePoint, compute_oee
from api.stages.service import StageDetails, get_visible_stage, one_stage_details, stage_details
from core.errors import Conflict, InvalidInput
from core.models import (
    Issue,
    IssueStatus,
    Machine,
    Reading,
    Role,
    StageAssignment,
    StageStatus,
    WorkOrder,
    WorkOrderStage,
)
from core.security import Principal
from core.settings import OeeSettings

MAX_SPAN = timedelta(days=31)
MAX_COUNTER_READINGS = 500_000


@dataclass(frozen=True)
class OeeRules:
    """The counter tags to count parts from and how long a sign of life vouches for the machine's state."""

    total_tag: str
    good_tag: str
    scrap_tag: str
    max_silence: timedelta

    @classmethod
    def of(cls, settings: OeeSettings) -> OeeRules:
        """The rules the settings give."""
        return cls(
            total_tag=settings.oee_total_count_tag,
            good_tag=settings.oee_good_count_tag,
            scrap_tag=settings.oee_scrap_count_tag,
            max_silence=timedelta(seconds=settings.oee_max_silence_s),
        )


@dataclass(frozen=True)
class IssueBrief:
    """An issue reported on the stage during its run."""

    id: int
    type: str
    status: IssueStatus
    opened_at: datetime
    description: str


@dataclass(frozen=True)
class OeeReport:
    """OEE of a machine, for a stage (`stage_id`) or for a window asked for (`stage_id` None)."""

    machine_id: int
    stage_id: int | None
    oee: Oee
    issues: list[IssueBrief]
    reported: ReportedCounts | None = None


@dataclass(frozen=True)
class ReportedCounts:
    """What the workers reported for a stage (good and scrap) against what its machine counted over the stage's run;
    a difference is shown, never hidden (None when either side is missing)."""

    good_qty: int | None
    scrap_qty: int | None
    machine_total: int | None
    machine_good: int | None

    @property
    def total(self) -> int | None:
        """Good plus scrap as reported; None until something is reported."""
        if self.good_qty is None and self.scrap_qty is None:
            return None
        return (self.good_qty or 0) + (self.scrap_qty or 0)

    @property
    def total_difference(self) -> int | None:
        """Reported total minus the machine's total count."""
        return None if self.total is None or self.machine_total is None else self.total - self.machine_total

    @property
    def good_difference(self) -> int | None:
        """Reported good minus the machine's good count."""
        return None if self.good_qty is None or self.machine_good is None else self.good_qty - self.machine_good

    def notes(self) -> list[str]:
        """One line per count that disagrees."""
        found = []
        if self.total_difference:
            found.append(
                f"reported {self.total} parts (good + scrap), the machine counted {self.machine_total}: "
                f"difference {self.total_difference:+d}"
            )
        if self.good_difference:
            found.append(
                f"reported {self.good_qty} good parts, the machine counted {self.machine_good}: "
                f"difference {self.good_difference:+d}"
            )
        return found


async def machine_oee(
    session: AsyncSession, *, machine_id: int, start: datetime, end: datetime, now: datetime, rules: OeeRules
) -> OeeReport:
    """OEE over [start, min(end, now)): `to` after `from`, at most 31 days, and `from` already past."""
    if start >= end:
        raise InvalidInput("`from` must be before `to`", fields={"from": "must be before to"}, code="invalid_window")
    if end - start > MAX_SPAN:
        raise InvalidInput(
            f"OEE covers at most {MAX_SPAN.days} days; ask for a shorter window",
            fields={"from": f"at most {MAX_SPAN.days} days before to"},
            code="range_too_large",
        )
    machine = await get_machine(session, machine_id=machine_id)
    if start >= now:
        raise InvalidInput(
            "`from` is in the future: there is nothing to measure yet",
            fields={"from": "must be before now"},
            code="window_in_future",
        )
    result = await _oee(session, machine=machine, start=start, end=min(end, now), rules=rules)
    return OeeReport(machine_id=machine.id, stage_id=None, oee=result, issues=[])


async def stage_oee(
    session: AsyncSession, *, actor: Principal, stage_id: int, now: datetime, rules: OeeRules
) -> OeeReport:
    """OEE of the stage's machine over the stage's run: first start to done (or now), with the issues reported."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    if stage.machine_id is None:
        raise Conflict(
            f"Stage {stage.id} has no machine: set one (PATCH /stages/{stage.id} with machine_id) to measure OEE",
            code="stage_without_machine",
        )
    details = await one_stage_details(session, stage)
    started, done = actual_window(details.events)
    if started is None:
        raise Conflict(f"Stage {stage.id} has not started: OEE covers a stage's run", code="stage_not_started")
    end = done if stage.status is StageStatus.DONE and done is not None else max(now, started)
    machine = await get_machine(session, machine_id=stage.machine_id)
    result = await _oee(session, machine=machine, start=started, end=end, rules=rules)
    rows = await session.scalars(
        select(Issue)
        .where(Issue.stage_id == stage.id, Issue.created_at >= started, Issue.created_at <= end)
        .order_by(Issue.created_at, Issue.id)
    )
    issues = [IssueBrief(row.id, row.type, row.status, row.created_at, row.description) for row in rows]
    reported = ReportedCounts(stage.good_qty, stage.scrap_qty, result.total_count, result.good_count)
    return OeeReport(machine_id=machine.id, stage_id=stage.id, oee=result, issues=issues, reported=reported)


async def _oee(session: AsyncSession, *, machine: Machine, start: datetime, end: datetime, rules: OeeRules) -> Oee:
    changes = [
        StatePoint(ts=ts, state=state)
        for ts, state in await state_changes(session, machine_id=machine.id, start=start, end=end)
    ]
    tags = (rules.total_tag, rules.good_tag, rules.scrap_tag)
    readings = await counter_readings(
        session, machine_id=machine.id, tags=tags, since=start - rules.max_silence, start=start, end=end
    )
    return compute_oee(
        start=start,
        end=end,
        changes=changes,
        total=Counter(rules.total_tag, readings.get(rules.total_tag, [])),
        good=Counter(rules.good_tag, readings.get(rules.good_tag, [])),
        scrap=Counter(rules.scrap_tag, readings.get(rules.scrap_tag, [])),
        ideal_cycle_time_s=machine.ideal_cycle_time_s,
        max_silence=rules.max_silence,
        subject=f"machine {machine.id}",
    )


async def counter_readings(
    session: AsyncSession, *, machine_id: int, tags: Sequence[str], since: datetime, start: datetime, end: datetime
) -> dict[str, list[CounterPoint]]:
    """Each counter tag's readings in [since, end), plus its last reading before `start` (its value then)."""
    in_range = (Reading.machine_id == machine_id, Reading.tag.in_(tags), Reading.ts >= since, Reading.ts < end)
    count = await session.scalar(select(func.count()).select_from(Reading).where(*in_range))
    if (count or 0) > MAX_COUNTER_READINGS:
        raise InvalidInput(
            f"The window holds {count} counter readings, more than {MAX_COUNTER_READINGS}; ask for a shorter one",
            fields={"from": f"the window holds more than {MAX_COUNTER_READINGS} counter readings"},
            code="range_too_large",
        )
    found: dict[str, dict[datetime, float]] = {tag: {} for tag in tags}
    # A counter is read from its good values only: an uncertain or bad count (or a missing one) is not a count.
    good = (Reading.machine_id == machine_id, Reading.quality.is_(None), Reading.value.is_not(None))
    for tag in dict.fromkeys(tags):
        baseline = (
            await session.execute(
                select(Reading.ts, Reading.value)
                .where(*good, Reading.tag == tag, Reading.ts < start)
                .order_by(Reading.ts.desc())
                .limit(1)
            )
        ).first()
        if baseline is not None and baseline.value is not None:
            found[tag][baseline.ts] = baseline.value
    for tag, ts, value in await session.execute(select(Reading.tag, Reading.ts, Reading.value).where(*in_range, *good)):
        if value is not None:  # excluded in SQL already; says so to the type checker
            found[tag][ts] = value
    return {tag: [CounterPoint(ts, value) for ts, value in sorted(values.items())] for tag, values in found.items()}


async def machine_stages(
    session: AsyncSession,
    *,
    actor: Principal,
    machine_id: int,
    statuses: Sequence[StageStatus],
    limit: int,
    offset: int,
) -> tuple[list[StageDetails], int]:
    """The stages set to run on a machine, newest planned start first; cancelled work orders are left out.

    A worker sees only the stages assigned to them, as everywhere else.
    """
    await get_machine(session, machine_id=machine_id)
    query = (
        select(WorkOrderStage)
        .join(WorkOrder, WorkOrder.id == WorkOrderStage.work_order_id)
        .where(WorkOrderStage.machine_id == machine_id, WorkOrder.cancelled_at.is_(None))
    )
    if statuses:
        query = query.where(WorkOrderStage.status.in_(statuses))
    if actor.role is Role.WORKER:
        query = query.where(
            exists().where(StageAssignment.stage_id == WorkOrderStage.id, StageAssignment.user_id == actor.user_id)
        )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    stages = await session.scalars(
        query.options(selectinload(WorkOrderStage.work_order))
        .order_by(WorkOrderStage.planned_start.desc(), WorkOrderStage.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return await stage_details(session, list(stages)), int(total or 0)

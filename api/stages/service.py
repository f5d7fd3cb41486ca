"""Stages: who works on them, the start / pause / resume / done actions, and their history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager, selectinload

from api.efficiency.calc import EventPoint
from api.stages.transitions import transition
from core.downtime import LossCategory
from core.errors import Conflict, InvalidInput, NotFound
from core.models import (
    Issue,
    IssueStatus,
    LossReason,
    Machine,
    Role,
    ScrapLine,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    UserAccount,
    WorkOrder,
    WorkOrderStage,
)
from core.security import Principal


@dataclass(frozen=True)
class StagePlan:
    """A stage as planned: its name, its window and optionally its machine."""

    stage_name: str
    planned_start: datetime
    planned_end: datetime
    machine_id: int | None = None


@dataclass(frozen=True)
class Assignee:
    """A user on a stage."""

    user_id: int
    username: str
    full_name: str | None
    assigned_at: datetime


@dataclass(frozen=True)
class StageDetails:
    """A stage with what is derived from other tables: its events, assignees and open issues."""

    stage: WorkOrderStage
    events: list[EventPoint]
    assignees: list[Assignee]
    open_issues: int
    scrap_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StageAction:
    """What a worker asks of a stage."""

    kind: StageEventKind
    reason: str | None = None
    good_qty: int | None = None
    scrap_qty: int | None = None
    scrap: tuple[tuple[str, int], ...] = ()


def open_issue_count() -> ScalarSelect[int]:
    """The open (not resolved) issues of the stage of the enclosing query: a column to select with the stage."""
    return (
        select(func.count(Issue.id))
        .where(Issue.stage_id == WorkOrderStage.id, Issue.status != IssueStatus.RESOLVED)
        .correlate(WorkOrderStage)
        .scalar_subquery()
    )


async def stage_details(
    session: AsyncSession, stages: Sequence[WorkOrderStage], *, open_issues: Mapping[int, int] | None = None
) -> list[StageDetails]:
    """Events, assignees, scrap lines and open-issue counts of many stages in four queries (three when the counts
    came with the stages, `open_issue_count`)."""
    ids = [stage.id for stage in stages]
    if not ids:
        return []
    events: dict[int, list[EventPoint]] = {stage_id: [] for stage_id in ids}
    for stage_id, kind, at in await session.execute(
        select(StageEvent.stage_id, StageEvent.kind, StageEvent.at)
        .where(StageEvent.stage_id.in_(ids))
        .order_by(StageEvent.at, StageEvent.id)
    ):
        events[stage_id].append(EventPoint(kind=kind, at=at))
    assignees: dict[int, list[Assignee]] = {stage_id: [] for stage_id in ids}
    for stage_id, user_id, username, full_name, assigned_at in await session.execute(
        select(
            StageAssignment.stage_id,
            UserAccount.id,
            UserAccount.username,
            UserAccount.full_name,
            StageAssignment.assigned_at,
        )
        .join(UserAccount, UserAccount.id == StageAssignment.user_id)
        .where(StageAssignment.stage_id.in_(ids))
        .order_by(StageAssignment.assigned_at, UserAccount.id)
    ):
        assignees[stage_id].append(Assignee(user_id, username, full_name, assigned_at))
    if open_issues is None:
        open_issues = dict(
            (
                await session.execute(
                    select(Issue.stage_id, func.count(Issue.id))
                    .where(Issue.stage_id.in_(ids), Issue.status != IssueStatus.RESOLVED)
                    .group_by(Issue.stage_id)
                )
            ).all()
        )
    scrap: dict[int, dict[str, int]] = {stage_id: {} for stage_id in ids}
    for stage_id, reason, qty in await session.execute(
        select(ScrapLine.stage_id, ScrapLine.reason_code, func.sum(ScrapLine.qty))
        .where(ScrapLine.stage_id.in_(ids))
        .group_by(ScrapLine.stage_id, ScrapLine.reason_code)
        .order_by(ScrapLine.stage_id, ScrapLine.reason_code)
    ):
        scrap[stage_id][reason] = int(qty)
    return [
        StageDetails(stage, events[stage.id], assignees[stage.id], open_issues.get(stage.id, 0), scrap[stage.id])
        for stage in stages
    ]


async def one_stage_details(session: AsyncSession, stage: WorkOrderStage) -> StageDetails:
    """The details of a single stage."""
    (details,) = await stage_details(session, [stage])
    return details


async def is_assigned(session: AsyncSession, *, stage_id: int, user_id: int) -> bool:
    """True when the user is assigned to the stage."""
    found = await session.scalar(
        select(StageAssignment.stage_id).where(StageAssignment.stage_id == stage_id, StageAssignment.user_id == user_id)
    )
    return found is not None


async def can_see_work_order(session: AsyncSession, *, actor: Principal, work_order_id: int) -> bool:
    """Planners and admins see every work order; a worker those with a stage assigned to them."""
    if actor.role is not Role.WORKER:
        return True
    found = await session.scalar(
        select(StageAssignment.stage_id)
        .join(WorkOrderStage, WorkOrderStage.id == StageAssignment.stage_id)
        .where(WorkOrderStage.work_order_id == work_order_id, StageAssignment.user_id == actor.user_id)
        .limit(1)
    )
    return found is not None


async def get_stage(session: AsyncSession, *, stage_id: int) -> WorkOrderStage:
    """A stage with its work order loaded."""
    stage = await session.scalar(
        select(WorkOrderStage).where(WorkOrderStage.id == stage_id).options(selectinload(WorkOrderStage.work_order))
    )
    if stage is None:
        raise NotFound(f"Stage {stage_id} does not exist")
    return stage


async def get_visible_stage(session: AsyncSession, *, actor: Principal, stage_id: int) -> WorkOrderStage:
    """A stage the actor may read and act on: any for planners and admins, a worker's only when assigned to them.

    Anything else is the 404 of a stage that does not exist, so a worker cannot tell the two apart.
    """
    stage = await get_stage(session, stage_id=stage_id)
    if actor.role is Role.WORKER and not await is_assigned(session, stage_id=stage.id, user_id=actor.user_id):
        raise NotFound(f"Stage {stage_id} does not exist")
    return stage


def ensure_open(work_order: WorkOrder) -> None:
    """A cancelled work order takes no new actions."""
    if work_order.cancelled_at is not None:
        raise Conflict(f"Work order {work_order.id} is cancelled", code="work_order_cancelled")


async def _previous_not_started(
    session: AsyncSession, actor: Principal, stage: WorkOrderStage
) -> WorkOrderStage | None:
    """The previous stage when it has not started yet: refused to a worker (409), allowed to planners and admins,
    who may start any stage (the plan's rule), and then returned so the start event records it."""
    previous = await session.scalar(
        select(WorkOrderStage)
        .where(WorkOrderStage.work_order_id == stage.work_order_id, WorkOrderStage.position < stage.position)
        .order_by(WorkOrderStage.position.desc())
        .limit(1)
    )
    if previous is None or previous.status is not StageStatus.PLANNED:
        return None
    if actor.role is Role.WORKER:
        # Only workers get here, and the previous stage need not be theirs: its name, never its id.
        raise Conflict(
            f"The previous stage {previous.stage_name!r} has not started yet",
            code="previous_stage_not_started",
        )
    return previous


async def act_on_stage(
    session: AsyncSession,
    *,
    actor: Principal,
    stage_id: int,
    action: StageAction,
    now: datetime,
    require_previous_started: bool,
) -> StageDetails:
    """Apply start / pause / resume / done; a concurrent change of the same stage makes exactly one win."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    ensure_open(stage.work_order)
    current = stage.status
    target = transition(current, action.kind)
    reason = action.reason
    if action.kind is StageEventKind.START and require_previous_started:
        skipped = await _previous_not_started(session, actor, stage)
        if skipped is not None:
            reason = f"started before {skipped.stage_name!r} (#{skipped.id}) by a {actor.role.value}"
    values: dict[str, object] = {"status": target, "updated_at": now}
    if action.kind is StageEventKind.DONE:
        await _check_scrap_reasons(session, action.scrap)
        lined = sum(qty for _, qty in action.scrap)
        earlier = await _scrap_reported(session, stage.id)
        scrap_qty = action.scrap_qty
        if action.scrap and scrap_qty is not None and scrap_qty != earlier + lined:
            raise InvalidInput(
                f"scrap_qty {scrap_qty} is not the sum of the scrap lines ({earlier} reported before, {lined} now)",
                fields={"scrap_qty": "must equal the scrap lines' total"},
                code="scrap_mismatch",
            )
        if scrap_qty is None and (action.scrap or earlier):
            scrap_qty = earlier + lined
        good_qty = action.good_qty if action.good_qty is not None else stage.good_qty
        values |= {"good_qty": good_qty, "scrap_qty": scrap_qty}
    # Conditional on the status read above: of two concurrent requests only one matches (PostgreSQL re-checks
    # the condition after the first commits; SQLite serialises writers).
    result = await session.execute(
        update(WorkOrderStage)
        .where(WorkOrderStage.id == stage.id, WorkOrderStage.status == current)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(stage)
    if result.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE has rowcount
        transition(stage.status, action.kind)
        raise Conflict("The stage was changed by someone else; reload it", code="concurrent_change")
    session.add(StageEvent(stage_id=stage.id, kind=action.kind, at=now, user_id=actor.user_id, reason=reason))
    session.add_all(
        ScrapLine(stage_id=stage.id, reason_code=code, qty=qty, reported_by_id=actor.user_id, reported_at=now)
        for code, qty in action.scrap
    )
    await session.flush()
    return await one_stage_details(session, stage)


async def _check_scrap_reasons(session: AsyncSession, scrap: Sequence[tuple[str, int]]) -> None:
    codes = sorted({code for code, _ in scrap})
    if not codes:
        return
    known = set(
        await session.scalars(
            select(LossReason.code).where(
                LossReason.code.in_(codes), LossReason.active.is_(True), LossReason.category == LossCategory.QUALITY
            )
        )
    )
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise InvalidInput(
            f"Not a scrap reason: {', '.join(unknown)} (GET /loss-reasons, category quality)",
            fields={"scrap": f"unknown scrap reason {unknown[0]}"},
            code="unknown_scrap_reason",
        )


async def _scrap_reported(session: AsyncSession, stage_id: int) -> int:
    total = await session.scalar(select(func.sum(ScrapLine.qty)).where(ScrapLine.stage_id == stage_id))
    return int(total or 0)


async def report_counts(
    session: AsyncSession,
    *,
    actor: Principal,
    stage_id: int,
    good_qty: int,
    scrap: Sequence[tuple[str, int]],
    now: datetime,
) -> StageDetails:
    """Interim counts of a running or paused stage: good parts add to its good quantity, scrap lines are kept by
    reason (and add up to its scrap quantity)."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    ensure_open(stage.work_order)
    if stage.status not in (StageStatus.IN_PROGRESS, StageStatus.PAUSED):
        raise Conflict(
            f"Stage {stage.id} is {stage.status.value}: counts are reported while it runs (or is paused)",
            code="stage_not_running",
        )
    await _check_scrap_reasons(session, scrap)
    session.add_all(
        ScrapLine(stage_id=stage.id, reason_code=code, qty=qty, reported_by_id=actor.user_id, reported_at=now)
        for code, qty in scrap
    )
    await session.flush()
    stage.good_qty = (stage.good_qty or 0) + good_qty
    stage.scrap_qty = await _scrap_reported(session, stage.id) if (scrap or stage.scrap_qty is not None) else None
    stage.updated_at = now
    await session.flush()
    return await one_stage_details(session, stage)


async def update_stage(
    session: AsyncSession,
    *,
    actor: Principal,
    stage_id: int,
    stage_name: str | None,
    planned_start: datetime | None,
    planned_end: datetime | None,
    machine_id: int | None,
    set_machine: bool,
) -> StageDetails:
    """Re-plan a planned stage inside its work order's window without overlapping its neighbours."""
    stage = await get_stage(session, stage_id=stage_id)
    ensure_open(stage.work_order)
    replanning = stage_name is not None or planned_start is not None or planned_end is not None
    if replanning and stage.status is not StageStatus.PLANNED:
        raise Conflict(
            f"Stage {stage.id} is {stage.status.value}; only a planned stage can be re-planned",
            code="plan_locked",
        )
    start = planned_start or stage.planned_start
    end = planned_end or stage.planned_end
    siblings = await session.scalars(
        select(WorkOrderStage)
        .where(WorkOrderStage.work_order_id == stage.work_order_id, WorkOrderStage.id != stage.id)
        .order_by(WorkOrderStage.position)
    )
    check_stage_window(start, end, stage.work_order, field_prefix="")
    for sibling in siblings:
        before = sibling.position < stage.position
        if (before and sibling.planned_end > start) or (not before and sibling.planned_start < end):
            raise InvalidInput(
                f"The stage would overlap stage {sibling.stage_name!r} (#{sibling.id})",
                fields={"planned_start" if before else "planned_end": f"overlaps stage #{sibling.id}"},
            )
    if set_machine and machine_id is not None:
        await ensure_machines_exist(session, {"machine_id": machine_id})
    stage.planned_start, stage.planned_end = start, end
    if stage_name is not None:
        stage.stage_name = stage_name
    if set_machine:
        stage.machine_id = machine_id
    await session.flush()
    return await one_stage_details(session, stage)


async def ensure_machines_exist(session: AsyncSession, machine_ids: dict[str, int]) -> None:
    """Every referenced machine is registered; `machine_ids` maps the field path to the id."""
    wanted = set(machine_ids.values())
    if not wanted:
        return
    found = set(await session.scalars(select(Machine.id).where(Machine.id.in_(wanted))))
    missing = {
        field: f"machine {machine_id} does not exist"
        for field, machine_id in machine_ids.items()
        if machine_id not in found
    }
    if missing:
        raise InvalidInput("A stage names a machine that is not registered", fields=missing, code="unknown_machine")


def check_stage_window(start: datetime, end: datetime, work_order: WorkOrder, *, field_prefix: str) -> None:
    """A stage lies inside its work order's planned window and is not empty."""
    if start >= end:
        raise InvalidInput(
            "A stage's planned_start must be before its planned_end",
            fields={f"{field_prefix}planned_end": "must be after planned_start"},
        )
    if start < work_order.planned_start or end > work_order.planned_end:
        wrong = "planned_start" if start < work_order.planned_start else "planned_end"
        raise InvalidInput(
            "Stages must lie inside the work order's planned window",
            fields={f"{field_prefix}{wrong}": "outside the work order's planned window"},
        )


async def assign(
    session: AsyncSession, *, actor: Principal, stage_id: int, user_id: int, now: datetime
) -> StageDetails:
    """Add an active user to a stage; assigning twice is a conflict."""
    stage = await get_stage(session, stage_id=stage_id)
    ensure_open(stage.work_order)
    user = await session.get(UserAccount, user_id)
    if user is None or not user.is_active:
        raise InvalidInput(
            f"User {user_id} does not exist or is deactivated", fields={"user_id": "no such active user"}
        )
    if await is_assigned(session, stage_id=stage.id, user_id=user_id):
        raise Conflict(
            f"User {user.username!r} is already assigned to stage {stage.id}",
            code="already_assigned",
            fields={"stage_id": "already in use", "user_id": "already in use"},
        )
    session.add(StageAssignment(stage_id=stage.id, user_id=user_id, assigned_at=now, assigned_by_id=actor.user_id))
    await session.flush()
    return await one_stage_details(session, stage)


async def unassign(session: AsyncSession, *, actor: Principal, stage_id: int, user_id: int) -> None:
    """Remove a user from a stage."""
    stage = await get_stage(session, stage_id=stage_id)
    assignment = await session.get(StageAssignment, (stage.id, user_id))
    if assignment is None:
        raise NotFound(f"User {user_id} is not assigned to stage {stage.id}")
    await session.delete(assignment)
    await session.flush()


async def my_stages(
    session: AsyncSession, *, actor: Principal, status: StageStatus | None, limit: int, offset: int
) -> tuple[list[StageDetails], int]:
    """The caller's stages, soonest first, with their work orders loaded.

    What every tablet asks at each shift change, so few statements: the page, its work orders, the list's total and
    the open issues come in one; events, assignees and scrap lines in one each (`stage_details`)."""
    query = (
        select(WorkOrderStage)
        .join(StageAssignment, StageAssignment.stage_id == WorkOrderStage.id)
        .join(WorkOrder, WorkOrder.id == WorkOrderStage.work_order_id)
        .where(StageAssignment.user_id == actor.user_id, WorkOrder.cancelled_at.is_(None))
    )
    if status is not None:
        query = query.where(WorkOrderStage.status == status)
    rows = (
        await session.execute(
            query.add_columns(func.count().over(), open_issue_count())
            .options(contains_eager(WorkOrderStage.work_order))
            .order_by(WorkOrderStage.planned_start, WorkOrderStage.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    if rows:
        total = rows[0][1]
    elif offset == 0:
        total = 0
    else:  # a page past the end: the total is still the list's
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    stages = [row[0] for row in rows]
    details = await stage_details(session, stages, open_issues={row[0].id: row[2] for row in rows})
    return details, int(total)


async def stage_events(session: AsyncSession, *, actor: Principal, stage_id: int) -> list[StageEvent]:
    """A stage's history, oldest first."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    events = await session.scalars(
        select(StageEvent).where(StageEvent.stage_id == stage.id).order_by(StageEvent.at, StageEvent.id)
    )
    return list(events)

"""Work orders: planning with stages, listing with derived status, changes, cancellation, metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, UnaryExpression, and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from api.stages.service import StageDetails, StagePlan, can_see_work_order, ensure_machines_exist, stage_details
from core.errors import Conflict, InvalidInput, NotFound
from core.models import (
    Issue,
    IssueStatus,
    Role,
    StageAssignment,
    StageStatus,
    WorkOrder,
    WorkOrderStage,
)
from core.security import Principal
from core.settings import StageTemplate


class WorkOrderStatus(StrEnum):
    """Derived from the stages: planned, in_progress, done, or cancelled."""

    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class WorkOrderSort(StrEnum):
    """Sort keys for the work-order list; a leading '-' sorts descending."""

    ID = "id"
    ID_DESC = "-id"
    PLANNED_START = "planned_start"
    PLANNED_START_DESC = "-planned_start"
    PLANNED_END = "planned_end"
    PLANNED_END_DESC = "-planned_end"
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"


@dataclass(frozen=True)
class WorkOrderDetails:
    """A work order with its derived status, open-issue count and detailed stages."""

    work_order: WorkOrder
    status: WorkOrderStatus
    open_issues: int
    stages: list[StageDetails]


@dataclass(frozen=True)
class WorkOrderFilters:
    """What the work-order list can be narrowed by."""

    status: WorkOrderStatus | None = None
    product_code: str | None = None
    lot_no: str | None = None
    planned_from: datetime | None = None
    planned_to: datetime | None = None
    has_open_issues: bool | None = None


@dataclass(frozen=True)
class WorkOrderPlan:
    """The plan fields of a work order."""

    product_code: str
    lot_no: str
    qty: int
    planned_start: datetime
    planned_end: datetime
    notes: str | None


def status_expression() -> ColumnElement[str]:
    """The work-order status in SQL, derived from its stages (the only place that rule lives)."""
    stage = aliased(WorkOrderStage)
    not_planned = exists().where(stage.work_order_id == WorkOrder.id, stage.status != StageStatus.PLANNED)
    not_done = exists().where(stage.work_order_id == WorkOrder.id, stage.status != StageStatus.DONE)
    return case(
        (WorkOrder.cancelled_at.is_not(None), WorkOrderStatus.CANCELLED.value),
        (~not_planned, WorkOrderStatus.PLANNED.value),
        (~not_done, WorkOrderStatus.DONE.value),
        else_=WorkOrderStatus.IN_PROGRESS.value,
    )


def open_issues_expression(actor: Principal) -> ColumnElement[int]:
    """How many issues of the work order are not resolved (for a worker: of the stages assigned to them)."""
    query = (
        select(func.count(Issue.id))
        .join(WorkOrderStage, WorkOrderStage.id == Issue.stage_id)
        .where(WorkOrderStage.work_order_id == WorkOrder.id, Issue.status != IssueStatus.RESOLVED)
    )
    if actor.role is Role.WORKER:
        query = query.join(
            StageAssignment,
            and_(StageAssignment.stage_id == WorkOrderStage.id, StageAssignment.user_id == actor.user_id),
        )
    return query.scalar_subquery()


def default_stage_plans(
    templates: Sequence[StageTemplate], *, planned_start: datetime, planned_end: datetime
) -> list[StagePlan]:
    """The configured default stages laid one after another from the work order's start."""
    fixed = sum(template.duration_min or 0 for template in templates)
    needs_rest = templates[-1].duration_min is None
    available = planned_end - planned_start
    if timedelta(minutes=fixed) > available or (needs_rest and timedelta(minutes=fixed) >= available):
        names = " + ".join(
            f"{t.name} {t.duration_min} min" if t.duration_min else f"{t.name} (the rest)" for t in templates
        )
        raise InvalidInput(
            f"The work order is too short for the default stages ({names}): it lasts "
            f"{available.total_seconds() / 60:g} min; give a longer window or your own stages",
            fields={"planned_end": f"must leave room for the default stages ({names})"},
            code="window_too_short",
        )
    plans, cursor = [], planned_start
    for template in templates:
        end = planned_end if template.duration_min is None else cursor + timedelta(minutes=template.duration_min)
        plans.append(StagePlan(stage_name=template.name, planned_start=cursor, planned_end=end))
        cursor = end
    return plans


def check_stage_plans(plans: Sequence[StagePlan], *, planned_start: datetime, planned_end: datetime) -> None:
    """Stages are ordered, inside the work order's window, non-empty and do not overlap."""
    previous_end: datetime | None = None
    for index, plan in enumerate(plans):
        prefix = f"stages.{index}."
        if plan.planned_start >= plan.planned_end:
            raise InvalidInput(
                f"Stage {index} ({plan.stage_name}) must start before it ends",
                fields={f"{prefix}planned_end": "must be after planned_start"},
            )
        if plan.planned_start < planned_start or plan.planned_end > planned_end:
            wrong = "planned_start" if plan.planned_start < planned_start else "planned_end"
            raise InvalidInput(
                f"Stage {index} ({plan.stage_name}) lies outside the work order's planned window",
                fields={f"{prefix}{wrong}": "outside the work order's planned window"},
            )
        if previous_end is not None and plan.planned_start < previous_end:
            raise InvalidInput(
                f"Stage {index} ({plan.stage_name}) overlaps the stage before it; list stages in order",
                fields={f"{prefix}planned_start": "overlaps the previous stage"},
            )
        previous_end = plan.planned_end


async def create_work_order(
    session: AsyncSession,
    *,
    actor: Principal,
    plan: WorkOrderPlan,
    stages: Sequence[StagePlan] | None,
    templates: Sequence[StageTemplate],
) -> WorkOrderDetails:
    """A new work order with its stages: the given ones, or the configured defaults."""
    if stages is None:
        stages = default_stage_plans(templates, planned_start=plan.planned_start, planned_end=plan.planned_end)
    else:
        check_stage_plans(stages, planned_start=plan.planned_start, planned_end=plan.planned_end)
        await ensure_machines_exist(
            session,
            {f"stages.{index}.machine_id": stage.machine_id for index, stage in enumerate(stages) if stage.machine_id},
        )
    work_order = WorkOrder(
        product_code=plan.product_code,
        lot_no=plan.lot_no,
        qty=plan.qty,
        planned_start=plan.planned_start,
        planned_end=plan.planned_end,
        notes=plan.notes,
        created_by_id=actor.user_id,
        stages=[
            WorkOrderStage(
                position=index + 1,
                stage_name=stage.stage_name,
                planned_start=stage.planned_start,
                planned_end=stage.planned_end,
                machine_id=stage.machine_id,
                status=StageStatus.PLANNED,
            )
            for index, stage in enumerate(stages)
        ],
    )
    session.add(work_order)
    await session.flush()
    return await get_work_order(session, actor=actor, work_order_id=work_order.id)


def _visible_to(query: Select[WorkOrder, str, int], actor: Principal) -> Select[WorkOrder, str, int]:
    if actor.role is not Role.WORKER:
        return query
    stage = aliased(WorkOrderStage)
    return query.where(
        exists()
        .where(stage.work_order_id == WorkOrder.id)
        .where(StageAssignment.stage_id == stage.id, StageAssignment.user_id == actor.user_id)
    )


def _base_query(actor: Principal) -> Select[WorkOrder, str, int]:
    return select(WorkOrder, status_expression().label("status"), open_issues_expression(actor).label("open_issues"))


def _sees(actor: Principal, details: StageDetails) -> bool:
    """Planners and admins see every stage of a work order; a worker only those assigned to them."""
    return actor.role is not Role.WORKER or any(assignee.user_id == actor.user_id for assignee in details.assignees)


async def _details(
    session: AsyncSession, rows: Sequence[tuple[WorkOrder, str, int]], actor: Principal
) -> list[WorkOrderDetails]:
    stages = [stage for work_order, _, _ in rows for stage in work_order.stages]
    by_stage = {details.stage.id: details for details in await stage_details(session, stages)}
    return [
        WorkOrderDetails(
            work_order=work_order,
            status=WorkOrderStatus(status),
            open_issues=int(open_issues or 0),
            stages=[by_stage[stage.id] for stage in work_order.stages if _sees(actor, by_stage[stage.id])],
        )
        for work_order, status, open_issues in rows
    ]


async def get_work_order(session: AsyncSession, *, actor: Principal, work_order_id: int) -> WorkOrderDetails:
    """One work order the actor may see, with the stages they may see; 404 for anything else, so ids do not leak."""
    query = _visible_to(_base_query(actor).where(WorkOrder.id == work_order_id), actor)
    row = (await session.execute(query.options(selectinload(WorkOrder.stages)))).first()
    if row is None:
        raise NotFound(f"Work order {work_order_id} does not exist")
    await session.refresh(row[0], ["stages"])
    (details,) = await _details(session, [row], actor)
    return details


_SORTS: dict[WorkOrderSort, UnaryExpression[Any]] = {
    WorkOrderSort.ID: WorkOrder.id.asc(),
    WorkOrderSort.ID_DESC: WorkOrder.id.desc(),
    WorkOrderSort.PLANNED_START: WorkOrder.planned_start.asc(),
    WorkOrderSort.PLANNED_START_DESC: WorkOrder.planned_start.desc(),
    WorkOrderSort.PLANNED_END: WorkOrder.planned_end.asc(),
    WorkOrderSort.PLANNED_END_DESC: WorkOrder.planned_end.desc(),
    WorkOrderSort.CREATED_AT: WorkOrder.created_at.asc(),
    WorkOrderSort.CREATED_AT_DESC: WorkOrder.created_at.desc(),
}


async def list_work_orders(
    session: AsyncSession,
    *,
    actor: Principal,
    filters: WorkOrderFilters,
    sort: WorkOrderSort,
    limit: int,
    offset: int,
) -> tuple[list[WorkOrderDetails], int]:
    """A page of the work orders the actor may see, filtered and sorted, and how many match."""
    if filters.planned_from and filters.planned_to and filters.planned_from >= filters.planned_to:
        raise InvalidInput("planned_from must be before planned_to", fields={"planned_from": "after planned_to"})
    conditions: list[ColumnElement[bool]] = []
    if filters.status is not None:
        conditions.append(status_expression() == filters.status.value)
    if filters.product_code is not None:
        conditions.append(WorkOrder.product_code == filters.product_code)
    if filters.lot_no is not None:
        conditions.append(WorkOrder.lot_no == filters.lot_no)
    if filters.planned_from is not None:
        conditions.append(WorkOrder.planned_end > filters.planned_from)
    if filters.planned_to is not None:
        conditions.append(WorkOrder.planned_start < filters.planned_to)
    if filters.has_open_issues is not None:
        has_open = open_issues_expression(actor) > 0
        conditions.append(has_open if filters.has_open_issues else ~has_open)
    query = _visible_to(_base_query(actor), actor).where(and_(True, *conditions))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (
        await session.execute(
            query.options(selectinload(WorkOrder.stages))
            .order_by(_SORTS[sort], WorkOrder.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return await _details(session, list(rows), actor), int(total or 0)


async def planned_between(
    session: AsyncSession, *, actor: Principal, start: datetime, end: datetime
) -> list[WorkOrderDetails]:
    """Every work order the actor may see whose planned start lies in [start, end)."""
    query = _visible_to(_base_query(actor), actor).where(
        WorkOrder.planned_start >= start, WorkOrder.planned_start < end
    )
    rows = (await session.execute(query.options(selectinload(WorkOrder.stages)).order_by(WorkOrder.id))).all()
    return await _details(session, list(rows), actor)


async def update_work_order(
    session: AsyncSession, *, actor: Principal, work_order_id: int, changes: Mapping[str, Any]
) -> WorkOrderDetails:
    """Change the plan while no stage has started (notes at any time); stages must still fit the window.

    `changes` holds only the fields the caller gave (a null clears, which only the notes allow)."""
    details = await get_work_order(session, actor=actor, work_order_id=work_order_id)
    work_order = details.work_order
    if details.status is WorkOrderStatus.CANCELLED:
        raise Conflict(f"Work order {work_order_id} is cancelled", code="work_order_cancelled")
    given = dict(changes)
    plan = {key: value for key, value in given.items() if key != "notes"}
    if nulls := [key for key, value in plan.items() if value is None]:
        raise InvalidInput("Only notes can be cleared", fields=dict.fromkeys(nulls, "may not be null"))
    if plan and details.status is not WorkOrderStatus.PLANNED:
        raise Conflict(
            f"Work order {work_order_id} is {details.status.value}: its plan is fixed once a stage started",
            code="plan_locked",
        )
    start = given.get("planned_start") or work_order.planned_start
    end = given.get("planned_end") or work_order.planned_end
    if start >= end:
        raise InvalidInput("planned_start must be before planned_end", fields={"planned_end": "not after start"})
    for stage in work_order.stages:
        if stage.planned_start < start or stage.planned_end > end:
            raise InvalidInput(
                f"Stage {stage.stage_name!r} (#{stage.id}) falls outside the new window; re-plan it first",
                fields={"planned_start" if stage.planned_start < start else "planned_end": "cuts off a stage"},
            )
    for key, value in given.items():
        setattr(work_order, key, value)
    await session.flush()
    return await get_work_order(session, actor=actor, work_order_id=work_order_id)


async def cancel_work_order(
    session: AsyncSession, *, actor: Principal, work_order_id: int, reason: str | None, now: datetime
) -> WorkOrderDetails:
    """Cancel a work order that is not finished; its stages and events are kept as history."""
    details = await get_work_order(session, actor=actor, work_order_id=work_order_id)
    if details.status in {WorkOrderStatus.CANCELLED, WorkOrderStatus.DONE}:
        raise Conflict(
            f"Work order {work_order_id} is {details.status.value} and cannot be cancelled",
            code="invalid_transition",
            extra={"current_status": details.status.value},
        )
    details.work_order.cancelled_at = now
    details.work_order.cancelled_by_id = actor.user_id
    details.work_order.cancel_reason = reason
    await session.flush()
    return await get_work_order(session, actor=actor, work_order_id=work_order_id)


async def ensure_visible(session: AsyncSession, *, actor: Principal, work_order_id: int) -> None:
    """404 unless the work order exists and the actor may see it."""
    if await session.get(WorkOrder, work_order_id) is None or not await can_see_work_order(
        session, actor=actor, work_order_id=work_order_id
    ):
        raise NotFound(f"Work order {work_order_id} does not exist")

"""Work orders: plan, list, read, change, cancel, and their metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import CurrentUser, Now, PlannerUser, Session, Settings
from api.efficiency import service as metrics
from api.pagination import COUNTED, PAGED, Id, Pagination, counted
from api.planttime import PlantDateTime
from api.stages.schemas import StageRead
from api.workorders import service
from api.workorders.schemas import (
    CancelRequest,
    WorkOrderCreate,
    WorkOrderMetricsRead,
    WorkOrderRead,
    WorkOrderUpdate,
)
from api.workorders.service import WorkOrderSort, WorkOrderStatus

router = APIRouter(prefix="/workorders", tags=["work orders"])

ShortText = Annotated[str, Query(min_length=1, max_length=64)]


@router.post("/", response_model=WorkOrderRead, status_code=status.HTTP_201_CREATED)
@router.post("", response_model=WorkOrderRead, status_code=status.HTTP_201_CREATED, include_in_schema=False)
async def create_work_order(
    body: WorkOrderCreate, session: Session, planner: PlannerUser, settings: Settings
) -> WorkOrderRead:
    """Plan a work order; without `stages` it gets the default stages (Enjeksiyon 30 min, then Montaj)."""
    details = await service.create_work_order(
        session,
        actor=planner,
        plan=service.WorkOrderPlan(
            product_code=body.product_code,
            lot_no=body.lot_no,
            qty=body.qty,
            planned_start=body.planned_start,
            planned_end=body.planned_end,
            notes=body.notes,
        ),
        stages=None if body.stages is None else [plan.to_domain() for plan in body.stages],
        templates=settings.tracking.default_stages,
    )
    return WorkOrderRead.of(details)


@router.get("/", response_model=list[WorkOrderRead], responses=PAGED)
@router.get("", response_model=list[WorkOrderRead], responses=PAGED, include_in_schema=False)
async def list_work_orders(
    session: Session,
    actor: CurrentUser,
    page: Pagination,
    status: WorkOrderStatus | None = None,
    product_code: ShortText | None = None,
    lot_no: ShortText | None = None,
    planned_from: Annotated[PlantDateTime | None, Query(description="Overlapping this window: ends after")] = None,
    planned_to: Annotated[PlantDateTime | None, Query(description="Overlapping this window: starts before")] = None,
    has_open_issues: bool | None = None,
    sort: WorkOrderSort = WorkOrderSort.PLANNED_START,
) -> list[WorkOrderRead]:
    """List work orders (a worker sees only those with a stage assigned to them)."""
    filters = service.WorkOrderFilters(
        status=status,
        product_code=product_code,
        lot_no=lot_no,
        planned_from=planned_from,
        planned_to=planned_to,
        has_open_issues=has_open_issues,
    )
    items, total = await service.list_work_orders(
        session, actor=actor, filters=filters, sort=sort, limit=page.limit, offset=page.offset
    )
    return page.respond([WorkOrderRead.of(item) for item in items], total)


@router.get("/{work_order_id}", response_model=WorkOrderRead)
async def get_work_order(work_order_id: Id, session: Session, actor: CurrentUser) -> WorkOrderRead:
    """One work order with its stages."""
    return WorkOrderRead.of(await service.get_work_order(session, actor=actor, work_order_id=work_order_id))


@router.get("/{work_order_id}/stages", response_model=list[StageRead], responses=COUNTED)
async def list_stages(work_order_id: Id, session: Session, actor: CurrentUser, response: Response) -> list[StageRead]:
    """The stages of a work order in order, with their status and assignees."""
    details = await service.get_work_order(session, actor=actor, work_order_id=work_order_id)
    return counted(response, [StageRead.of(stage) for stage in details.stages])


@router.patch("/{work_order_id}", response_model=WorkOrderRead)
async def update_work_order(
    work_order_id: Id, body: WorkOrderUpdate, session: Session, planner: PlannerUser
) -> WorkOrderRead:
    """Change the plan (only while no stage has started) or the notes."""
    details = await service.update_work_order(
        session, actor=planner, work_order_id=work_order_id, changes=body.model_dump(exclude_unset=True)
    )
    return WorkOrderRead.of(details)


@router.post("/{work_order_id}/cancel", response_model=WorkOrderRead)
async def cancel_work_order(
    now: Now, work_order_id: Id, session: Session, planner: PlannerUser, body: CancelRequest | None = None
) -> WorkOrderRead:
    """Cancel a work order that is not done; its history is kept."""
    details = await service.cancel_work_order(
        session,
        actor=planner,
        work_order_id=work_order_id,
        reason=body.reason if body else None,
        now=now,
    )
    return WorkOrderRead.of(details)


@router.get("/{work_order_id}/metrics", response_model=WorkOrderMetricsRead)
async def work_order_metrics(now: Now, work_order_id: Id, session: Session, actor: CurrentUser) -> WorkOrderMetricsRead:
    """Planned against actual for the work order and each stage (see docs/metrics.md)."""
    details, totals, stages = await metrics.work_order_metrics_for(
        session, actor=actor, work_order_id=work_order_id, now=now
    )
    return WorkOrderMetricsRead.of(details, totals, stages)

"""Efficiency over a planning window."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Now, PlannerUser, Session, Settings
from api.efficiency import service
from api.planttime import PlantDateTime
from api.workorders.schemas import SummaryRead

router = APIRouter(prefix="/metrics", tags=["metrics"])


@router.get("/summary", response_model=SummaryRead)
async def summary(
    now: Now,
    session: Session,
    planner: PlannerUser,
    settings: Settings,
    start: Annotated[
        PlantDateTime | None,
        Query(alias="from", description="Work orders planned to start from (default: the plant's local midnight)"),
    ] = None,
    end: Annotated[
        PlantDateTime | None, Query(alias="to", description="… and before (default: the next local midnight)")
    ] = None,
) -> SummaryRead:
    """Work orders planned in the window (default: the plant's current day, in PLANT_TIMEZONE): counts by status,
    on-time share, mean delay per stage name."""
    result = await service.summary(
        session, actor=planner, start=start, end=end, now=now, zone=settings.tracking.plant_zone
    )
    return SummaryRead(
        planned_from=result.start,
        planned_to=result.end,
        work_orders=result.work_orders,
        by_status=result.by_status,
        on_time_percent=result.on_time_percent,
        avg_delay_min_by_stage=result.avg_delay_min_by_stage,
    )

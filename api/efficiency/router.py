"""Efficiency over a planning window."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import Now, PlannerUser, Session
from api.efficiency import service
from api.workorders.schemas import SummaryRead

router = APIRouter(prefix="/metrics", tags=["metrics"])


@router.get("/summary", response_model=SummaryRead)
async def summary(
    now: Now,
    session: Session,
    planner: PlannerUser,
    start: Annotated[AwareDatetime, Query(alias="from", description="Work orders planned to start from")],
    end: Annotated[AwareDatetime, Query(alias="to", description="… and before")],
) -> SummaryRead:
    """Work orders planned in the window: counts by status, on-time share, mean delay per stage name."""
    result = await service.summary(session, actor=planner, start=start, end=end, now=now)
    return SummaryRead(
        planned_from=start,
        planned_to=end,
        work_orders=result.work_orders,
        by_status=result.by_status,
        on_time_percent=result.on_time_percent,
        avg_delay_min_by_stage=result.avg_delay_min_by_stage,
    )

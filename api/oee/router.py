"""OEE of a stage's run or of a machine over a window, and the stages that run on a machine (see docs/metrics.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentUser, Now, Session, Settings
from api.machines.schemas import Moment
from api.oee import service as oee_service
from api.oee.schemas import MachineStageRead, OeeRead
from api.oee.service import OeeRules
from api.pagination import PAGED, Id, Pagination
from core.models import StageStatus

router = APIRouter()


@router.get("/stages/{stage_id}/oee", response_model=OeeRead, tags=["metrics"])
async def stage_oee(stage_id: Id, session: Session, actor: CurrentUser, now: Now, settings: Settings) -> OeeRead:
    """OEE of the stage's machine from the stage's first start to its done (or now), with the issues reported."""
    report = await oee_service.stage_oee(
        session, actor=actor, stage_id=stage_id, now=now, rules=OeeRules.of(settings.oee)
    )
    return OeeRead.of(report)


@router.get("/machines/{machine_id}/oee", response_model=OeeRead, tags=["metrics"])
async def machine_oee(
    machine_id: Id,
    session: Session,
    _user: CurrentUser,
    now: Now,
    settings: Settings,
    start: Annotated[Moment, Query(alias="from", description="Window start, ISO 8601 (no offset: plant time)")],
    end: Annotated[Moment, Query(alias="to", description="Window end (excluded; at most 31 days after from)")],
) -> OeeRead:
    """OEE of a machine over [from, to); a window reaching past now ends at now."""
    report = await oee_service.machine_oee(
        session, machine_id=machine_id, start=start, end=end, now=now, rules=OeeRules.of(settings.oee)
    )
    return OeeRead.of(report)


@router.get("/machines/{machine_id}/stages", response_model=list[MachineStageRead], responses=PAGED, tags=["machines"])
async def machine_stages(
    machine_id: Id,
    session: Session,
    actor: CurrentUser,
    page: Pagination,
    status: Annotated[
        list[StageStatus] | None,
        Query(description="Only stages in these statuses (repeat it: status=in_progress&status=paused)"),
    ] = None,
) -> list[MachineStageRead]:
    """The stages set to run on a machine, newest planned start first, with their work orders."""
    items, total = await oee_service.machine_stages(
        session, actor=actor, machine_id=machine_id, statuses=status or [], limit=page.limit, offset=page.offset
    )
    return page.respond([MachineStageRead.of(item) for item in items], total)

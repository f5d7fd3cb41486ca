"""Stages: assignment, start / pause / resume / done, re-planning, history, metrics; and the caller's stages."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.commands.router import send_job_data_on_start
from api.deps import Context, CurrentUser, Now, PlannerUser, Session, Settings
from api.efficiency import service as metrics
from api.pagination import COUNTED, PAGED, Id, Pagination, counted
from api.stages import service
from api.stages.schemas import (
    AssignmentCreate,
    CountsRequest,
    DoneRequest,
    MyStageRead,
    PauseRequest,
    StageEventRead,
    StageMetricsRead,
    StageRead,
    StageUpdate,
)
from api.stages.service import StageAction
from core.models import Machine, StageEventKind, StageStatus
from core.security import Principal
from core.settings import ApiProcessSettings

router = APIRouter(prefix="/stages", tags=["stages"])
me_router = APIRouter(prefix="/me", tags=["stages"])


async def _act(
    session: AsyncSession,
    actor: Principal,
    stage_id: int,
    action: StageAction,
    now: datetime,
    settings: ApiProcessSettings,
) -> StageRead:
    details = await service.act_on_stage(
        session,
        actor=actor,
        stage_id=stage_id,
        action=action,
        now=now,
        require_previous_started=settings.tracking.require_previous_stage_started,
    )
    return StageRead.of(details)


@router.get("/{stage_id}", response_model=StageRead)
async def get_stage(stage_id: Id, session: Session, actor: CurrentUser) -> StageRead:
    """One stage with its status, assignees and actual times."""
    stage = await service.get_visible_stage(session, actor=actor, stage_id=stage_id)
    return StageRead.of(await service.one_stage_details(session, stage))


@router.patch("/{stage_id}", response_model=StageRead)
async def update_stage(stage_id: Id, body: StageUpdate, session: Session, planner: PlannerUser) -> StageRead:
    """Re-plan a planned stage (name, window) or set its machine."""
    details = await service.update_stage(
        session,
        actor=planner,
        stage_id=stage_id,
        stage_name=body.stage_name,
        planned_start=body.planned_start,
        planned_end=body.planned_end,
        machine_id=body.machine_id,
        set_machine="machine_id" in body.model_fields_set,
    )
    return StageRead.of(details)


@router.post("/{stage_id}/start", response_model=StageRead)
async def start_stage(
    now: Now,
    stage_id: Id,
    session: Session,
    actor: CurrentUser,
    settings: Settings,
    context: Context,
    background: BackgroundTasks,
) -> StageRead:
    """Start a planned stage (workers: only their own stages). When its machine asks for it
    (`send_job_data_on_start`), the stage's job data is sent to the machine once the start is stored."""
    action = StageAction(StageEventKind.START)
    started = await _act(session, actor, stage_id, action, now, settings)
    if started.machine_id is not None and await session.scalar(
        select(Machine.send_job_data_on_start).where(Machine.id == started.machine_id)
    ):
        # A background task runs after the response, so after the request's transaction has committed the start.
        background.add_task(
            send_job_data_on_start, context, actor=actor, machine_id=started.machine_id, stage_id=stage_id
        )
    return started


@router.post("/{stage_id}/pause", response_model=StageRead)
async def pause_stage(
    now: Now, stage_id: Id, body: PauseRequest, session: Session, actor: CurrentUser, settings: Settings
) -> StageRead:
    """Pause a running stage, saying why."""
    action = StageAction(StageEventKind.PAUSE, reason=body.reason)
    return await _act(session, actor, stage_id, action, now, settings)


@router.post("/{stage_id}/resume", response_model=StageRead)
async def resume_stage(now: Now, stage_id: Id, session: Session, actor: CurrentUser, settings: Settings) -> StageRead:
    """Resume a paused stage."""
    action = StageAction(StageEventKind.RESUME)
    return await _act(session, actor, stage_id, action, now, settings)


@router.post("/{stage_id}/done", response_model=StageRead)
async def finish_stage(
    now: Now,
    stage_id: Id,
    session: Session,
    actor: CurrentUser,
    settings: Settings,
    body: DoneRequest | None = None,
) -> StageRead:
    """Finish a running or paused stage, with its good and scrap quantities when known (no body: not reported)."""
    reported = body or DoneRequest()
    action = StageAction(
        StageEventKind.DONE,
        good_qty=reported.good_qty,
        scrap_qty=reported.scrap_qty,
        scrap=tuple((line.reason, line.qty) for line in reported.scrap),
    )
    return await _act(session, actor, stage_id, action, now, settings)


@router.post("/{stage_id}/counts", response_model=StageRead)
async def report_counts(now: Now, stage_id: Id, body: CountsRequest, session: Session, actor: CurrentUser) -> StageRead:
    """Interim counts while a long stage runs: good parts since the last report, and scrap by reason."""
    details = await service.report_counts(
        session,
        actor=actor,
        stage_id=stage_id,
        good_qty=body.good_qty,
        scrap=[(line.reason, line.qty) for line in body.scrap],
        now=now,
    )
    return StageRead.of(details)


@router.post("/{stage_id}/assignments", response_model=StageRead, status_code=status.HTTP_201_CREATED)
async def assign(now: Now, stage_id: Id, body: AssignmentCreate, session: Session, planner: PlannerUser) -> StageRead:
    """Assign a worker to a stage (several may share one)."""
    details = await service.assign(session, actor=planner, stage_id=stage_id, user_id=body.user_id, now=now)
    return StageRead.of(details)


@router.delete("/{stage_id}/assignments/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def unassign(stage_id: Id, user_id: Id, session: Session, planner: PlannerUser) -> Response:
    """Take a worker off a stage."""
    await service.unassign(session, actor=planner, stage_id=stage_id, user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{stage_id}/events", response_model=list[StageEventRead], responses=COUNTED)
async def stage_events(stage_id: Id, session: Session, actor: CurrentUser, response: Response) -> list[StageEventRead]:
    """The stage's history: every start, pause (with reason), resume and done, with who and when."""
    events = await service.stage_events(session, actor=actor, stage_id=stage_id)
    return counted(response, [StageEventRead.model_validate(event) for event in events])


@router.get("/{stage_id}/metrics", response_model=StageMetricsRead)
async def stage_metrics(now: Now, stage_id: Id, session: Session, actor: CurrentUser) -> StageMetricsRead:
    """Planned against actual for one stage (see docs/metrics.md)."""
    details, result = await metrics.stage_metrics_for(session, actor=actor, stage_id=stage_id, now=now)
    return StageMetricsRead.of(details, result)


@me_router.get("/stages", response_model=list[MyStageRead], responses=PAGED)
async def my_stages(
    session: Session, actor: CurrentUser, page: Pagination, status: StageStatus | None = None
) -> list[MyStageRead]:
    """The stages assigned to the caller, soonest first, with their work orders."""
    items, total = await service.my_stages(session, actor=actor, status=status, limit=page.limit, offset=page.offset)
    return page.respond([MyStageRead.of(item) for item in items], total)

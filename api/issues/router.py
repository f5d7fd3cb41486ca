"""Issues: workers report them on their stages; planners and admins acknowledge, resolve and list them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import CurrentUser, Now, PlannerUser, Session, Settings
from api.issues import service
from api.issues.schemas import IssueCreate, IssueRead, IssueTypeRead, IssueUpdate
from api.issues.types import labelled
from api.pagination import COUNTED, PAGED, Id, Pagination, counted
from api.planttime import PlantDateTime
from core.models import IssueStatus

router = APIRouter(tags=["issues"])


@router.get("/issue-types", response_model=list[IssueTypeRead], responses=COUNTED)
async def issue_types(_user: CurrentUser, settings: Settings, response: Response) -> list[IssueTypeRead]:
    """The types an issue may be reported with (ISSUE_TYPES), with Turkish and English labels, in order."""
    return counted(response, [IssueTypeRead.model_validate(item) for item in labelled(settings.tracking.issue_types)])


@router.post("/stages/{stage_id}/issue", response_model=IssueRead, status_code=status.HTTP_201_CREATED)
async def report_issue(
    stage_id: Id, body: IssueCreate, session: Session, actor: CurrentUser, settings: Settings
) -> IssueRead:
    """Report a problem on a stage (workers: on their own stages)."""
    issue, work_order_id = await service.report_issue(
        session,
        actor=actor,
        stage_id=stage_id,
        issue_type=body.type,
        description=body.description,
        allowed_types=settings.tracking.issue_types,
    )
    return IssueRead.of(issue, work_order_id)


@router.get("/stages/{stage_id}/issues", response_model=list[IssueRead], responses=COUNTED)
async def stage_issues(stage_id: Id, session: Session, actor: CurrentUser, response: Response) -> list[IssueRead]:
    """The issues of one stage, newest first."""
    rows = await service.stage_issues(session, actor=actor, stage_id=stage_id)
    return counted(response, [IssueRead.of(issue, work_order_id) for issue, work_order_id in rows])


@router.patch("/stages/{stage_id}/issues/{issue_id}", response_model=IssueRead)
async def update_issue(
    now: Now, stage_id: Id, issue_id: Id, body: IssueUpdate, session: Session, planner: PlannerUser
) -> IssueRead:
    """Acknowledge an open issue or resolve an acknowledged one."""
    issue, work_order_id = await service.update_issue(
        session,
        actor=planner,
        stage_id=stage_id,
        issue_id=issue_id,
        status=body.status,
        note=body.note,
        now=now,
    )
    return IssueRead.of(issue, work_order_id)


@router.get("/issues", response_model=list[IssueRead], responses=PAGED)
async def list_issues(
    session: Session,
    _planner: PlannerUser,
    page: Pagination,
    status: IssueStatus | None = None,
    type: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    work_order_stage_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    work_order_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    created_from: PlantDateTime | None = None,
    created_to: PlantDateTime | None = None,
) -> list[IssueRead]:
    """List issues, newest first."""
    filters = service.IssueFilters(
        status=status,
        type=type,
        stage_id=work_order_stage_id,
        work_order_id=work_order_id,
        created_from=created_from,
        created_to=created_to,
    )
    rows, total = await service.list_issues(session, filters=filters, limit=page.limit, offset=page.offset)
    return page.respond([IssueRead.of(issue, work_order_id) for issue, work_order_id in rows], total)

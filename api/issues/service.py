"""Issues reported on stages: report, acknowledge, resolve, list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.issues.transitions import transition
from api.stages.service import ensure_open, get_visible_stage
from core.errors import InvalidInput, NotFound
from core.models import Issue, IssueStatus, WorkOrderStage
from core.security import Principal


@dataclass(frozen=True)
class IssueFilters:
    """What the issue list can be narrowed by."""

    status: IssueStatus | None = None
    type: str | None = None
    stage_id: int | None = None
    work_order_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _with_work_order() -> Select[Issue, int]:
    return select(Issue, WorkOrderStage.work_order_id).join(WorkOrderStage, WorkOrderStage.id == Issue.stage_id)


async def report_issue(
    session: AsyncSession,
    *,
    actor: Principal,
    stage_id: int,
    issue_type: str,
    description: str,
    allowed_types: Sequence[str],
) -> tuple[Issue, int]:
    """Open an issue on a stage; workers only on their own stages (others are 404)."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    ensure_open(stage.work_order)
    if issue_type not in allowed_types:
        raise InvalidInput(
            f"Unknown issue type {issue_type!r}",
            fields={"type": f"one of: {', '.join(allowed_types)}"},
            code="unknown_issue_type",
        )
    issue = Issue(
        stage_id=stage.id,
        type=issue_type,
        description=description,
        status=IssueStatus.OPEN,
        reported_by_id=actor.user_id,
    )
    session.add(issue)
    await session.flush()
    await session.refresh(issue)
    return issue, stage.work_order_id


async def update_issue(
    session: AsyncSession,
    *,
    actor: Principal,
    stage_id: int,
    issue_id: int,
    status: IssueStatus,
    note: str | None,
    now: datetime,
) -> tuple[Issue, int]:
    """Acknowledge an open issue or resolve an acknowledged one, recording who and when."""
    row = (
        await session.execute(
            _with_work_order().where(Issue.id == issue_id, Issue.stage_id == stage_id).with_for_update(of=Issue)
        )
    ).first()
    if row is None:
        raise NotFound(f"Issue {issue_id} does not exist on stage {stage_id}")
    issue, work_order_id = row
    issue.status = transition(issue.status, status)
    if issue.status is IssueStatus.ACK:
        issue.acked_at, issue.acked_by_id, issue.ack_note = now, actor.user_id, note
    else:
        issue.resolved_at, issue.resolved_by_id, issue.resolution_note = now, actor.user_id, note
    await session.flush()
    return issue, work_order_id


async def list_issues(
    session: AsyncSession, *, filters: IssueFilters, limit: int, offset: int
) -> tuple[list[tuple[Issue, int]], int]:
    """A page of issues, newest first, and how many match."""
    query = _with_work_order()
    if filters.status is not None:
        query = query.where(Issue.status == filters.status)
    if filters.type is not None:
        query = query.where(Issue.type == filters.type)
    if filters.stage_id is not None:
        query = query.where(Issue.stage_id == filters.stage_id)
    if filters.work_order_id is not None:
        query = query.where(WorkOrderStage.work_order_id == filters.work_order_id)
    if filters.created_from is not None:
        query = query.where(Issue.created_at >= filters.created_from)
    if filters.created_to is not None:
        query = query.where(Issue.created_at < filters.created_to)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.execute(query.order_by(Issue.created_at.desc(), Issue.id.desc()).limit(limit).offset(offset))
    return [(issue, work_order_id) for issue, work_order_id in rows], int(total or 0)


async def stage_issues(session: AsyncSession, *, actor: Principal, stage_id: int) -> list[tuple[Issue, int]]:
    """Every issue of a stage the actor may see, newest first."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    rows = await session.execute(
        _with_work_order().where(Issue.stage_id == stage.id).order_by(Issue.created_at.desc(), Issue.id.desc())
    )
    return [(issue, work_order_id) for issue, work_order_id in rows]

"""What the issue endpoints accept and return."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

from pydantic import ConfigDict, StringConstraints

from api.schemas import InputModel, ReadModel
from core.models import IssueStatus

if TYPE_CHECKING:
    from core.models import Issue

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class IssueCreate(InputModel):
    """A problem seen on a stage; `type` is one of the configured issue types."""

    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class IssueTypeLabels(ReadModel):
    """What the type is called in each language the plant uses."""

    tr: str
    en: str


class IssueTypeRead(ReadModel):
    """One type an issue may be reported with."""

    code: str
    labels: IssueTypeLabels


class IssueUpdate(InputModel):
    """Move an issue on: open → ack → resolved, with an optional note."""

    status: IssueStatus
    note: Note | None = None


class IssueRead(ReadModel):
    """An issue with who reported, acknowledged and resolved it, and when."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    stage_id: int
    work_order_id: int
    type: str
    description: str
    status: IssueStatus
    reported_by_id: int | None
    created_at: datetime
    acked_at: datetime | None
    acked_by_id: int | None
    ack_note: str | None
    resolved_at: datetime | None
    resolved_by_id: int | None
    resolution_note: str | None

    # The original app's names for `stage_id` and `reported_by_id`, which its mobile app reads.
    work_order_stage_id: int
    created_by: int | None

    @classmethod
    def of(cls, issue: Issue, work_order_id: int) -> Self:
        """Serialise an issue with the work order of its stage."""
        return cls.from_object(
            issue, work_order_id=work_order_id, work_order_stage_id=issue.stage_id, created_by=issue.reported_by_id
        )

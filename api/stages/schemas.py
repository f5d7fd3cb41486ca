"""What the stage endpoints accept and return."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.efficiency.calc import actual_window
from api.efficiency.schemas import DurationsRead, durations_of
from api.pagination import MAX_ID
from api.planttime import PlantDateTime
from api.schemas import InputModel, ReadModel
from api.stages.service import StagePlan
from api.stages.transitions import allowed_actions
from core.models import StageEventKind, StageStatus

if TYPE_CHECKING:
    from api.efficiency.calc import StageMetrics
    from api.stages.service import StageDetails

StageName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Quantity = Annotated[int, Field(ge=0, le=1_000_000_000)]
MachineRef = Annotated[int, Field(ge=1, le=MAX_ID, description="Machine id (the machine registry)")]


class StageCreate(InputModel):
    """A stage as planned: its name, its window and optionally its machine."""

    stage_name: StageName
    planned_start: PlantDateTime
    planned_end: PlantDateTime
    machine_id: MachineRef | None = None

    def to_domain(self) -> StagePlan:
        """The plan the services take."""
        return StagePlan(self.stage_name, self.planned_start, self.planned_end, self.machine_id)


class StageUpdate(InputModel):
    """Change a stage's plan (only while it is planned) or its machine; absent fields stay."""

    stage_name: StageName | None = None
    planned_start: PlantDateTime | None = None
    planned_end: PlantDateTime | None = None
    machine_id: MachineRef | None = None

    @field_validator("stage_name", "planned_start", "planned_end", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Absent means "keep"; an explicit null would mean "clear", which only machine_id allows.
        if value is None:
            raise ValueError("may not be null (only machine_id can be cleared)")
        return value


class AssignmentCreate(InputModel):
    """Assign a user to a stage."""

    user_id: Annotated[int, Field(ge=1, le=MAX_ID)]


class PauseRequest(InputModel):
    """Why the stage stops for now."""

    reason: Reason


class ScrapLineIn(InputModel):
    """Scrap of one reason (a quality-loss reason of GET /loss-reasons)."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    qty: Annotated[int, Field(ge=1, le=1_000_000_000)]


ScrapLines = Annotated[list[ScrapLineIn], Field(max_length=50)]


class DoneRequest(InputModel):
    """What the stage produced; either quantity may be left out (not reported), as the original app's clients do.

    `scrap` gives the scrap by reason: its total is the scrap quantity (and must equal `scrap_qty` when both are
    sent). Scrap reported earlier with POST /stages/{id}/counts counts too.
    """

    good_qty: Quantity | None = None
    scrap_qty: Quantity | None = None
    scrap: ScrapLines = Field(default_factory=list)


class CountsRequest(InputModel):
    """Interim counts during a long stage: good parts made since the last report, and scrap by reason."""

    good_qty: Quantity = 0
    scrap: ScrapLines = Field(default_factory=list)


class AssigneeRead(ReadModel):
    """A user assigned to a stage."""

    user_id: int
    username: str
    full_name: str | None
    assigned_at: datetime


class StageRead(ReadModel):
    """A stage with its state, who works on it, and its actual times derived from its events."""

    id: int
    work_order_id: int
    position: int
    stage_name: str
    planned_start: datetime
    planned_end: datetime
    machine_id: int | None
    status: StageStatus
    allowed_actions: list[StageEventKind]
    actual_start: datetime | None
    actual_end: datetime | None
    good_qty: int | None
    scrap_qty: int | None
    scrap_by_reason: dict[str, int] = Field(
        default_factory=dict, description="Scrap reported with a reason (done or interim counts), by reason code"
    )
    open_issues: int
    assignees: list[AssigneeRead]

    @classmethod
    def of(cls, details: StageDetails) -> Self:
        """Serialise a stage with the times its events give."""
        stage = details.stage
        actual_start, actual_end = actual_window(details.events)
        return cls.from_object(
            stage,
            allowed_actions=allowed_actions(stage.status),
            actual_start=actual_start,
            actual_end=actual_end,
            open_issues=details.open_issues,
            assignees=[AssigneeRead.from_object(assignee) for assignee in details.assignees],
            scrap_by_reason=details.scrap_by_reason,
        )


class WorkOrderBrief(ReadModel):
    """The work order a stage belongs to, in short."""

    id: int
    product_code: str
    lot_no: str
    qty: int
    planned_start: datetime
    planned_end: datetime


class MyStageRead(BaseModel):
    """One of the caller's stages, with its work order."""

    stage: StageRead
    work_order: WorkOrderBrief

    @classmethod
    def of(cls, details: StageDetails) -> Self:
        """Serialise a stage of the caller with its work order."""
        return cls(stage=StageRead.of(details), work_order=WorkOrderBrief.from_object(details.stage.work_order))


class StageEventRead(BaseModel):
    """One entry of a stage's history."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: StageEventKind
    at: datetime
    user_id: int | None
    reason: str | None


class StageMetricsRead(DurationsRead):
    """Planned against actual for one stage (minutes); `projected` while the stage is not done."""

    stage_id: int
    stage_name: str
    status: StageStatus

    @classmethod
    def of(cls, details: StageDetails, metrics: StageMetrics) -> Self:
        """Serialise a stage's metrics."""
        stage = details.stage
        return cls(stage_id=stage.id, stage_name=stage.stage_name, status=stage.status, **durations_of(metrics))

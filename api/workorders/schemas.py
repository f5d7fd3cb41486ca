"""What the work-order endpoints accept and return."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Self

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, model_validator

from api.metrics.schemas import DurationsRead, durations_of
from api.schemas import InputModel
from api.stages.schemas import StageMetricsRead, StagePlan, StageRead

if TYPE_CHECKING:
    from api.metrics.calc import StageMetrics, WorkOrderMetrics
    from api.stages.service import StageDetails
    from api.workorders.service import WorkOrderDetails

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Notes = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Qty = Annotated[int, Field(gt=0, le=1_000_000_000)]


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


class WorkOrderCreate(InputModel):
    """A new work order; without `stages` it gets the default stages of the settings."""

    product_code: Code
    lot_no: Code
    qty: Qty
    planned_start: AwareDatetime
    planned_end: AwareDatetime
    notes: Notes | None = None
    stages: Annotated[list[StagePlan], Field(min_length=1, max_length=50)] | None = None

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.planned_start >= self.planned_end:
            raise ValueError("planned_start must be before planned_end")
        return self


class WorkOrderUpdate(InputModel):
    """Change the plan (only while no stage has started) or the notes; absent fields stay."""

    product_code: Code | None = None
    lot_no: Code | None = None
    qty: Qty | None = None
    planned_start: AwareDatetime | None = None
    planned_end: AwareDatetime | None = None
    notes: Notes | None = None


class CancelRequest(InputModel):
    """Why the work order is cancelled."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class WorkOrderRead(BaseModel):
    """A work order with its derived status and its stages."""

    id: int
    product_code: str
    lot_no: str
    qty: int
    planned_start: datetime
    planned_end: datetime
    notes: str | None
    status: WorkOrderStatus
    created_by_id: int | None
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    cancelled_by_id: int | None
    cancel_reason: str | None
    open_issues: int
    stages: list[StageRead]

    @classmethod
    def of(cls, details: WorkOrderDetails) -> Self:
        """Serialise a work order with its stages."""
        work_order = details.work_order
        return cls(
            id=work_order.id,
            product_code=work_order.product_code,
            lot_no=work_order.lot_no,
            qty=work_order.qty,
            planned_start=work_order.planned_start,
            planned_end=work_order.planned_end,
            notes=work_order.notes,
            status=details.status,
            created_by_id=work_order.created_by_id,
            created_at=work_order.created_at,
            updated_at=work_order.updated_at,
            cancelled_at=work_order.cancelled_at,
            cancelled_by_id=work_order.cancelled_by_id,
            cancel_reason=work_order.cancel_reason,
            open_issues=details.open_issues,
            stages=[StageRead.of(stage) for stage in details.stages],
        )


class WorkOrderMetricsRead(DurationsRead):
    """The work order's stages taken together (minutes)."""

    work_order_id: int
    status: WorkOrderStatus
    on_time_stage_percent: float | None
    total_good_qty: int
    total_scrap_qty: int
    stages: list[StageMetricsRead]

    @classmethod
    def of(
        cls,
        details: WorkOrderDetails,
        totals: WorkOrderMetrics,
        stages: list[tuple[StageDetails, StageMetrics]],
    ) -> Self:
        """Serialise a work order's metrics with those of its stages."""
        return cls(
            work_order_id=details.work_order.id,
            status=details.status,
            on_time_stage_percent=totals.on_time_stage_percent,
            total_good_qty=totals.total_good_qty,
            total_scrap_qty=totals.total_scrap_qty,
            stages=[StageMetricsRead.of(stage, metrics) for stage, metrics in stages],
            **durations_of(totals),
        )


class SummaryRead(BaseModel):
    """How the work orders planned in a window went."""

    planned_from: datetime
    planned_to: datetime
    work_orders: int
    by_status: dict[WorkOrderStatus, int]
    on_time_percent: float | None
    avg_delay_min_by_stage: dict[str, float]

"""What the work-order endpoints accept and return."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

from pydantic import BaseModel, Field, StringConstraints, model_validator

from api.efficiency.schemas import DurationsRead, durations_of
from api.planttime import PlantDateTime
from api.schemas import InputModel, ReadModel
from api.stages.schemas import StageCreate, StageMetricsRead, StageRead
from api.workorders.service import WorkOrderStatus

if TYPE_CHECKING:
    from api.efficiency.calc import StageMetrics, WorkOrderMetrics
    from api.stages.service import StageDetails
    from api.workorders.service import WorkOrderDetails

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Notes = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Qty = Annotated[int, Field(gt=0, le=1_000_000_000)]


class WorkOrderCreate(InputModel):
    """A new work order; without `stages` it gets the default stages of the settings."""

    product_code: Code
    lot_no: Code
    qty: Qty
    planned_start: PlantDateTime
    planned_end: PlantDateTime
    notes: Notes | None = None
    stages: Annotated[list[StageCreate], Field(min_length=1, max_length=50)] | None = None

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
    planned_start: PlantDateTime | None = None
    planned_end: PlantDateTime | None = None
    notes: Notes | None = None


class CancelRequest(InputModel):
    """Why the work order is cancelled."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class WorkOrderRead(ReadModel):
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
        return cls.from_object(
            details.work_order,
            status=details.status,
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

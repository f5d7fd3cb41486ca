"""What the OEE endpoints return: seconds, counts and factors as fractions (0..1, performance may exceed 1)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Self

from pydantic import BaseModel, Field

from api.oee.calc import UNKNOWN
from api.stages.schemas import MyStageRead
from core.contract import MachineState
from core.models import IssueStatus

if TYPE_CHECKING:
    from api.oee.service import OeeReport


def _seconds(value: float) -> float:
    return round(value, 3)


def _fraction(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class DowntimeRead(BaseModel):
    """Seconds lost by state; `unknown` (no state known) is listed here but is not planned production time."""

    alarm: float
    setup: float
    idle: float
    unknown: float


class OeeIssueRead(BaseModel):
    """An issue reported on the stage during its run."""

    id: int
    type: str
    status: IssueStatus
    opened_at: datetime
    description: str


class ReportedRead(BaseModel):
    """The stage's counts as reported by its workers next to what the machine counted over the stage's run.

    `total_difference` = reported good + scrap - the machine's total count; `good_difference` = reported good - the
    machine's good count; null when either side is missing. A non-zero difference is also said in `notes`.
    """

    good_qty: int | None
    scrap_qty: int | None
    total: int | None
    machine_total: int | None
    machine_good: int | None
    total_difference: int | None
    good_difference: int | None


class OeeRead(BaseModel):
    """OEE over [`from`, `to`): planned production = running + alarm + setup + idle; off and unknown left out.

    availability = running / planned production; performance = ideal cycle time * total count / running (above 1
    when the machine beat its ideal cycle time: reported as is); quality = good / total; oee = their product.
    A factor that cannot be computed is null, and `notes` says why.
    """

    machine_id: int
    stage_id: int | None
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    window_s: float
    planned_production_s: float
    running_s: float
    downtime_s: DowntimeRead
    off_s: float
    ideal_cycle_time_s: float | None
    total_count: int | None
    good_count: int | None
    scrap_count: int | None
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    issues: list[OeeIssueRead]
    reported: ReportedRead | None = Field(
        default=None, description="For a stage: its reported counts against the machine's counters"
    )
    notes: list[str]

    @classmethod
    def of(cls, report: OeeReport) -> Self:
        """Serialise a report: seconds to the millisecond, factors to four decimals."""
        result = report.oee
        counted = report.reported
        downtime = {
            key: _seconds(result.downtime[key].total_seconds())
            for key in (MachineState.ALARM, MachineState.SETUP, MachineState.IDLE, UNKNOWN)
        }
        return cls(
            machine_id=report.machine_id,
            stage_id=report.stage_id,
            start=result.start,
            end=result.end,
            window_s=_seconds(result.window.total_seconds()),
            planned_production_s=_seconds(result.planned_production.total_seconds()),
            running_s=_seconds(result.running.total_seconds()),
            downtime_s=DowntimeRead.model_validate(downtime),
            off_s=_seconds(result.off.total_seconds()),
            ideal_cycle_time_s=result.ideal_cycle_time_s,
            total_count=result.total_count,
            good_count=result.good_count,
            scrap_count=result.scrap_count,
            availability=_fraction(result.availability),
            performance=_fraction(result.performance),
            quality=_fraction(result.quality),
            oee=_fraction(result.oee),
            issues=[OeeIssueRead(**vars(issue)) for issue in report.issues],
            reported=None
            if counted is None
            else ReportedRead(
                good_qty=counted.good_qty,
                scrap_qty=counted.scrap_qty,
                total=counted.total,
                machine_total=counted.machine_total,
                machine_good=counted.machine_good,
                total_difference=counted.total_difference,
                good_difference=counted.good_difference,
            ),
            notes=[*result.notes, *(counted.notes() if counted is not None else [])],
        )


class MachineStageRead(MyStageRead):
    """A stage set to run on the machine, with its work order."""

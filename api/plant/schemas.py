"""What the plant calendar, loss-reason, downtime and shift-OEE endpoints accept and return."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema, model_validator

from api.planttime import PlantDateTime
from api.schemas import InputModel, ReadModel
from core.downtime import LossCategory
from core.models import CalendarExceptionKind


def _wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a wall-clock time in the plant's zone, without an offset (e.g. 06:00)")
    return value


# A time of day on the plant's clock (PLANT_TIMEZONE): HH:MM or HH:MM:SS, never with an offset. Its schema says so
# rather than `format: time`, which JSON Schema reads as an RFC 3339 time that must carry one.
WallTime = Annotated[
    time,
    AfterValidator(_wall_clock),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$",
            "description": "Wall-clock time in the plant's zone, without an offset",
            "examples": ["06:00"],
        }
    ),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9_çğıöşü-]{1,64}$")]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class BreakIn(InputModel):
    """A break inside its shift, local wall time."""

    start: WallTime
    end: WallTime


class ShiftIn(InputModel):
    """A shift on some weekdays (0 = Monday), local wall time; an end at or before the start crosses midnight."""

    name: Name
    weekdays: Annotated[list[Annotated[int, Field(ge=0, le=6)]], Field(min_length=1, max_length=7)]
    start: WallTime
    end: WallTime
    breaks: Annotated[list[BreakIn], Field(default_factory=list, max_length=10)]


class PatternCreate(InputModel):
    """A weekly shift pattern valid from a local date (the previous pattern holds until then)."""

    valid_from: date
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    shifts: Annotated[list[ShiftIn], Field(max_length=50)]


class BreakRead(ReadModel):
    """A break, local wall time."""

    start: WallTime
    end: WallTime


class ShiftRead(ReadModel):
    """A shift of a pattern on one weekday."""

    id: int
    name: str
    weekday: int
    start: WallTime
    end: WallTime
    breaks: list[BreakRead]


class PatternRead(ReadModel):
    """A weekly pattern and its shifts."""

    id: int
    valid_from: date
    name: str
    created_at: datetime
    shifts: list[ShiftRead]


class ExceptionCreate(InputModel):
    """A non-working day (a holiday), or an extra shift on one local date (an unplanned Saturday)."""

    day: date
    kind: CalendarExceptionKind
    shift_name: Name | None = None
    start: WallTime | None = None
    end: WallTime | None = None
    note: Note | None = None

    @model_validator(mode="after")
    def _shift(self) -> Self:
        given = (self.shift_name, self.start, self.end)
        if self.kind is CalendarExceptionKind.EXTRA_SHIFT and None in given:
            raise ValueError("an extra shift needs shift_name, start and end")
        if self.kind is CalendarExceptionKind.NON_WORKING and any(value is not None for value in given):
            raise ValueError("a non-working day has no shift_name, start or end")
        return self


class ExceptionRead(ReadModel):
    """A one-off calendar entry."""

    id: int
    day: date
    kind: CalendarExceptionKind
    shift_name: str | None
    start: WallTime | None
    end: WallTime | None
    note: str | None


class CalendarRead(ReadModel):
    """The plant's calendar: its zone, weekly patterns (oldest first) and one-off exceptions."""

    timezone: str
    patterns: list[PatternRead]
    exceptions: list[ExceptionRead]


class ShiftInstanceRead(ReadModel):
    """One shift on one production day, with its planned production time."""

    name: str
    day: date
    start: datetime
    end: datetime
    planned_min: float


class ReasonRead(ReadModel):
    """A loss reason and its category (one of the six big losses, or a planned stop)."""

    code: str
    category: LossCategory
    label_tr: str
    label_en: str
    active: bool


class ReasonCreate(InputModel):
    """A plant's own loss reason."""

    code: Code
    category: LossCategory
    label_tr: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    label_en: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ReasonUpdate(InputModel):
    """Rename a reason or take it out of use; its code and category stay (past figures are kept as they were: a
    reason that should count elsewhere is deactivated and a new one created). Absent fields stay."""

    label_tr: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    label_en: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    active: bool | None = Field(
        default=None, description="false: no longer offered nor accepted; past classifications and scrap keep it"
    )


class DowntimeRead(ReadModel):
    """A stop longer than the micro-stop threshold, as the machine's states show it, and what was said about it."""

    machine_id: int
    start: datetime
    end: datetime | None = Field(description="None while the machine is still stopped")
    duration_s: float
    states: list[str]
    cut_by_silence: bool = Field(description="The machine fell silent while stopped: the stop ends where data ends")
    stage_id: int | None = Field(description="The stage running on the machine when the stop began")
    reason_code: str | None
    category: LossCategory | None
    classified_by_id: int | None
    classified_at: datetime | None
    note: str | None
    issue_ids: list[int] = Field(description="Breakdown and material-shortage issues raised on the machine meanwhile")


class DowntimesRead(ReadModel):
    """The downtime events of a window, and the minor stops counted (not listed one by one)."""

    machine_id: int
    start: datetime
    end: datetime
    micro_stop_s: float
    events: list[DowntimeRead]
    minor_stops: int
    minor_stop_s: float


class Classify(InputModel):
    """Give a stop (named by its start) a reason; `split_at` classifies only [start, split_at) and leaves the rest."""

    start: PlantDateTime
    reason_code: Code
    note: Note | None = None
    split_at: PlantDateTime | None = None


class ClassificationRead(ReadModel):
    """One classification, current or replaced (the history)."""

    id: int
    machine_id: int
    start: datetime
    end: datetime | None
    reason_code: str
    stage_id: int | None
    classified_by_id: int | None
    classified_at: datetime
    note: str | None
    replaced_at: datetime | None
    replaced_by_id: int | None


class LossRow(ReadModel):
    """OEE and losses of one shift, production day or week (minutes)."""

    group: str
    label: str
    start: datetime
    end: datetime
    scheduled_min: float
    planned_stop_min: float
    unknown_min: float
    planned_production_min: float
    run_min: float
    losses_by_reason_min: dict[str, float]
    losses_by_category_min: dict[str, float]
    unclassified_min: float
    minor_stops: int
    minor_stop_min: float
    total_count: int | None
    good_count: int | None
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    notes: list[str]


class ShiftOeeRead(ReadModel):
    """OEE of a machine by shift, production day or week, with the totals and the loss Pareto of the whole window."""

    machine_id: int
    group_by: Literal["shift", "day", "week", "stage", "work_order"]
    timezone: str
    calendar: bool
    rows: list[LossRow]
    total: LossRow
    pareto_min: list[tuple[str, float]] = Field(description="Losses by reason, largest first (planned stops excluded)")

"""The plant calendar (planners and admins write it, everyone reads it), loss reasons, a machine's downtime events and
their classification (workers: on the machine of their stage), and OEE by shift, production day or week."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Response, status

from api.deps import AdminUser, CurrentUser, Now, PlannerUser, Session, Settings
from api.pagination import COUNTED, Id, counted
from api.plant import service
from api.plant.schemas import (
    BreakRead,
    CalendarRead,
    ClassificationRead,
    Classify,
    DowntimeRead,
    DowntimesRead,
    ExceptionCreate,
    ExceptionRead,
    LossRow,
    PatternCreate,
    PatternRead,
    ReasonCreate,
    ReasonRead,
    ReasonUpdate,
    ShiftInstanceRead,
    ShiftOeeRead,
    ShiftRead,
)
from api.planttime import PlantDateTime
from core.calendar import Interval
from core.errors import InvalidInput
from core.losses import LossReport
from core.models import CalendarException, ShiftPattern
from core.settings import ApiProcessSettings

router = APIRouter()

From = Annotated[PlantDateTime, Query(alias="from", description="Window start, ISO 8601 (no offset: plant time)")]
To = Annotated[PlantDateTime, Query(alias="to", description="Window end (excluded); a window past now ends at now")]


def rules_of(settings: ApiProcessSettings) -> service.DowntimeRules:
    """The downtime rules the settings give."""
    return service.DowntimeRules(
        micro_stop=timedelta(seconds=settings.oee.micro_stop_s),
        max_silence=timedelta(seconds=settings.oee.oee_max_silence_s),
        total_tag=settings.oee.oee_total_count_tag,
        good_tag=settings.oee.oee_good_count_tag,
    )


def zone_of(settings: ApiProcessSettings) -> ZoneInfo:
    """The plant's zone."""
    return ZoneInfo(settings.tracking.plant_timezone)


# ---- calendar ------------------------------------------------------------------------------------------------------


async def _pattern_reads(session: Session, rows: list[ShiftPattern]) -> list[PatternRead]:
    shifts = await service.pattern_shifts(session, [row.id for row in rows])
    breaks = await service.shift_breaks(session, [shift.id for found in shifts.values() for shift in found])
    return [
        PatternRead(
            id=row.id,
            valid_from=row.valid_from,
            name=row.name,
            created_at=row.created_at,
            shifts=[
                ShiftRead(
                    id=shift.id,
                    name=shift.name,
                    weekday=shift.weekday,
                    start=shift.start_time,
                    end=shift.end_time,
                    breaks=[BreakRead(start=pause.start_time, end=pause.end_time) for pause in breaks[shift.id]],
                )
                for shift in shifts[row.id]
            ],
        )
        for row in rows
    ]


@router.get("/calendar", response_model=CalendarRead, tags=["calendar"])
async def calendar(session: Session, _user: CurrentUser, settings: Settings) -> CalendarRead:
    """The plant calendar: weekly shift patterns (each valid from its date) and one-off exceptions."""
    rows = await service.patterns(session)
    exceptions = await service.calendar_exceptions(session)
    return CalendarRead(
        timezone=settings.tracking.plant_timezone,
        patterns=await _pattern_reads(session, rows),
        exceptions=[_exception_read(row) for row in exceptions],
    )


@router.post("/calendar/patterns", response_model=PatternRead, status_code=status.HTTP_201_CREATED, tags=["calendar"])
async def create_pattern(body: PatternCreate, session: Session, planner: PlannerUser) -> PatternRead:
    """A weekly shift pattern from a date on; earlier days keep the pattern they had (history is not rewritten)."""
    pattern = await service.create_pattern(
        session,
        actor=planner,
        valid_from=body.valid_from,
        name=body.name,
        shifts=[
            service.ShiftSpec(
                shift.name, shift.weekdays, shift.start, shift.end, [(pause.start, pause.end) for pause in shift.breaks]
            )
            for shift in body.shifts
        ],
    )
    [read] = await _pattern_reads(session, [pattern])
    return read


@router.delete("/calendar/patterns/{pattern_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["calendar"])
async def delete_pattern(pattern_id: Id, session: Session, _planner: PlannerUser) -> Response:
    """Remove a pattern; the one before it then holds for its days."""
    await service.delete_pattern(session, pattern_id=pattern_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _exception_read(row: CalendarException) -> ExceptionRead:
    return ExceptionRead(
        id=row.id,
        day=row.day,
        kind=row.kind,
        shift_name=row.shift_name,
        start=row.start_time,
        end=row.end_time,
        note=row.note,
    )


@router.post(
    "/calendar/exceptions", response_model=ExceptionRead, status_code=status.HTTP_201_CREATED, tags=["calendar"]
)
async def create_exception(body: ExceptionCreate, session: Session, planner: PlannerUser) -> ExceptionRead:
    """A non-working day (no shift starts on it) or an extra shift on one local date."""
    row = await service.create_exception(
        session,
        actor=planner,
        day=body.day,
        kind=body.kind,
        shift_name=body.shift_name,
        start=body.start,
        end=body.end,
        note=body.note,
    )
    return _exception_read(row)


@router.delete("/calendar/exceptions/{exception_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["calendar"])
async def delete_exception(exception_id: Id, session: Session, _planner: PlannerUser) -> Response:
    """Remove a one-off calendar entry."""
    await service.delete_exception(session, exception_id=exception_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/calendar/shifts", response_model=list[ShiftInstanceRead], responses=COUNTED, tags=["calendar"])
async def shifts(
    session: Session, _user: CurrentUser, settings: Settings, response: Response, start: From, end: To
) -> list[ShiftInstanceRead]:
    """The shifts overlapping a window (at most 62 days), with their planned production time."""
    if not start < end <= start + service.MAX_SPAN:
        raise InvalidInput(
            "`from` must be before `to`, at most 62 days apart", fields={"to": "after from"}, code="invalid_window"
        )
    plant = await service.load_calendar(session, zone_of(settings))
    found = plant.shifts_between(Interval(start, end)) if plant is not None else []
    items = [
        ShiftInstanceRead(
            name=shift.name,
            day=shift.day,
            start=shift.span.start,
            end=shift.span.end,
            planned_min=round(shift.planned().total_seconds() / 60, 3),
        )
        for shift in found
    ]
    return counted(response, items)


# ---- reasons -------------------------------------------------------------------------------------------------------


@router.get("/loss-reasons", response_model=list[ReasonRead], responses=COUNTED, tags=["calendar"])
async def loss_reasons(
    session: Session, _user: CurrentUser, response: Response, include_inactive: bool = False
) -> list[ReasonRead]:
    """The downtime and scrap reasons along the six big losses (planned stops are no loss), Turkish and English."""
    rows = await service.reasons(session, include_inactive=include_inactive)
    return counted(response, [ReasonRead.from_object(row) for row in rows])


@router.post("/loss-reasons", response_model=ReasonRead, status_code=status.HTTP_201_CREATED, tags=["calendar"])
async def create_loss_reason(body: ReasonCreate, session: Session, _admin: AdminUser) -> ReasonRead:
    """A plant's own reason."""
    row = await service.create_reason(
        session, code=body.code, category=body.category, label_tr=body.label_tr, label_en=body.label_en
    )
    return ReasonRead.from_object(row)


@router.patch("/loss-reasons/{code}", response_model=ReasonRead, tags=["calendar"])
async def update_loss_reason(code: str, body: ReasonUpdate, session: Session, _admin: AdminUser) -> ReasonRead:
    """Relabel a reason, or deactivate it (no longer offered to workers nor accepted; history keeps it) and back."""
    row = await service.update_reason(
        session, code=code, label_tr=body.label_tr, label_en=body.label_en, active=body.active
    )
    return ReasonRead.from_object(row)


# ---- downtime ------------------------------------------------------------------------------------------------------


def _downtime_read(
    machine_id: int, piece: service.DowntimePiece, now: datetime, visible: set[int] | None
) -> DowntimeRead:
    """One piece; a worker sees the stage and the issues only when they are theirs."""
    row = piece.classification

    def shown(stage_id: int | None) -> bool:
        return stage_id is not None and (visible is None or stage_id in visible)

    return DowntimeRead(
        machine_id=machine_id,
        start=piece.start,
        end=piece.end,
        duration_s=round(((piece.end or now) - piece.start).total_seconds(), 3),
        states=[state.value for state in piece.stop.states],
        cut_by_silence=piece.stop.cut_by_silence and piece.end == piece.stop.end,
        stage_id=piece.stage_id if shown(piece.stage_id) else None,
        reason_code=row.reason_code if row else None,
        category=piece.reason.category if piece.reason else None,
        classified_by_id=row.classified_by_id if row else None,
        classified_at=row.classified_at if row else None,
        note=row.note if row else None,
        issue_ids=[issue_id for issue_id, stage_id in piece.issues if shown(stage_id)],
    )


@router.get("/machines/{machine_id}/downtimes", response_model=DowntimesRead, tags=["machines"])
async def downtimes(
    machine_id: Id,
    session: Session,
    actor: CurrentUser,
    now: Now,
    settings: Settings,
    start: From,
    end: To,
    unclassified: Annotated[bool, Query(description="Only the pieces nobody has classified yet")] = False,
) -> DowntimesRead:
    """The machine's stops longer than MICRO_STOP_S in the window, with their reasons; shorter ones are counted."""
    found = await service.machine_downtimes(
        session, machine_id=machine_id, start=start, end=end, now=now, rules=rules_of(settings)
    )
    pieces = [piece for piece in found.pieces if not unclassified or piece.classification is None]
    visible = await service.visible_stages(session, actor=actor)
    return DowntimesRead(
        machine_id=found.machine_id,
        start=found.start,
        end=found.end,
        micro_stop_s=settings.oee.micro_stop_s,
        events=[_downtime_read(found.machine_id, piece, found.now, visible) for piece in pieces],
        minor_stops=len(found.minor),
        minor_stop_s=round(sum(((stop.end or found.now) - stop.start).total_seconds() for stop in found.minor), 3),
    )


@router.post("/machines/{machine_id}/downtimes/classify", response_model=list[DowntimeRead], tags=["machines"])
async def classify(
    machine_id: Id, body: Classify, session: Session, actor: CurrentUser, now: Now, settings: Settings
) -> list[DowntimeRead]:
    """Give the piece of a stop that starts at `start` a reason (reclassifying keeps the earlier one as history);
    `split_at` gives the reason to [start, split_at) only, for two causes that followed each other."""
    pieces = await service.classify(
        session,
        actor=actor,
        machine_id=machine_id,
        start=body.start,
        reason_code=body.reason_code,
        note=body.note,
        split_at=body.split_at,
        now=now,
        rules=rules_of(settings),
    )
    visible = await service.visible_stages(session, actor=actor)
    return [_downtime_read(machine_id, piece, now, visible) for piece in pieces]


@router.get(
    "/machines/{machine_id}/downtimes/history",
    response_model=list[ClassificationRead],
    responses=COUNTED,
    tags=["machines"],
)
async def classification_history(
    machine_id: Id, session: Session, _planner: PlannerUser, response: Response, start: From, end: To
) -> list[ClassificationRead]:
    """Every classification of the machine's stops that start in the window, replaced ones included (who, when,
    from, to)."""
    rows = await service.classification_history(session, machine_id=machine_id, start=start, end=end)
    items = [
        ClassificationRead(
            id=row.id,
            machine_id=row.machine_id,
            start=row.start_at,
            end=row.end_at,
            reason_code=row.reason_code,
            stage_id=row.stage_id,
            classified_by_id=row.classified_by_id,
            classified_at=row.classified_at,
            note=row.note,
            replaced_at=row.replaced_at,
            replaced_by_id=row.replaced_by_id,
        )
        for row in rows
    ]
    return counted(response, items)


# ---- OEE by shift, day, week ---------------------------------------------------------------------------------------


def _minutes(length: timedelta) -> float:
    return round(length.total_seconds() / 60, 3)


def _row(bucket: service.Bucket, report: LossReport) -> LossRow:
    return LossRow(
        group=bucket.group,
        label=bucket.label,
        start=bucket.span.start,
        end=bucket.span.end,
        scheduled_min=_minutes(report.scheduled),
        planned_stop_min=_minutes(report.planned_stops),
        unknown_min=_minutes(report.unknown),
        planned_production_min=_minutes(report.planned_production),
        run_min=_minutes(report.run_time),
        losses_by_reason_min={code: _minutes(length) for code, length in report.by_reason.items()},
        losses_by_category_min={code: _minutes(length) for code, length in report.by_category.items()},
        unclassified_min=_minutes(report.unclassified),
        minor_stops=report.minor_stops,
        minor_stop_min=_minutes(report.minor_stop_time),
        total_count=report.total_count,
        good_count=report.good_count,
        availability=report.availability,
        performance=report.performance,
        quality=report.quality,
        oee=report.oee,
        notes=report.notes,
    )


@router.get(
    "/oee",
    response_model=ShiftOeeRead,
    tags=["metrics"],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV"}},
)
async def oee(
    session: Session,
    user: CurrentUser,
    now: Now,
    settings: Settings,
    machine_id: Annotated[int, Query(ge=1, le=2_147_483_647)],
    start: From,
    end: To,
    group_by: Annotated[
        Literal["shift", "day", "week", "stage", "work_order"],
        Query(description="shift, production day or week; or the stages (work orders) that ran on the machine"),
    ] = "day",
    format: Annotated[Literal["json", "csv"], Query(description="csv: the rows as a spreadsheet")] = "json",
) -> ShiftOeeRead | Response:
    """OEE of a machine by shift, production day or week, or by the stages or work orders it ran, over planned
    production time (the same calculation for every row), with losses by reason and category (the Pareto),
    unclassified downtime as its own bar, and the window's total. Shifts add up to their day and days to their week;
    stage and work-order rows cover their runs on the machine (a work order's, its stages' runs only) and need not
    cover the window; a worker sees only the stages assigned to them."""
    grouped = await service.grouped_oee(
        session,
        machine_id=machine_id,
        group_by=group_by,
        start=start,
        end=end,
        now=now,
        zone=zone_of(settings),
        rules=rules_of(settings),
        actor=user,
    )
    rows = [_row(bucket, report) for bucket, report in grouped.rows]
    total_bucket, total_report = grouped.total
    categories = {row.code: row.category for row in await service.reasons(session, include_inactive=True)}
    if format == "csv":
        body = service.to_csv([row.model_dump(mode="json") for row in [*rows, _row(total_bucket, total_report)]])
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="oee-machine-{machine_id}-{group_by}.csv"'},
        )
    return ShiftOeeRead(
        machine_id=grouped.machine_id,
        group_by=group_by,
        timezone=settings.tracking.plant_timezone,
        calendar=grouped.calendar,
        rows=rows,
        total=_row(total_bucket, total_report),
        pareto_min=service.pareto(total_report, categories),
    )

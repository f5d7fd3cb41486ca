"""Efficiency metrics of stages, work orders and a planning window."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from api.efficiency.calc import (
    StageMetrics,
    StageOutcome,
    WorkOrderMetrics,
    minutes,
    stage_metrics,
    stage_timing,
    work_order_metrics,
)
from api.stages.service import StageDetails, get_visible_stage, one_stage_details
from api.workorders.service import WorkOrderDetails, WorkOrderStatus, get_work_order, planned_between
from core.errors import InvalidInput
from core.planttime import day_of
from core.security import Principal


def metrics_of(details: StageDetails, *, now: datetime) -> StageMetrics:
    """The metrics of one stage from its events."""
    stage = details.stage
    return stage_metrics(
        planned_start=stage.planned_start,
        planned_end=stage.planned_end,
        status=stage.status,
        timing=stage_timing(details.events, now=now),
        now=now,
    )


def work_order_metrics_of(
    details: WorkOrderDetails, *, now: datetime
) -> tuple[WorkOrderMetrics, list[tuple[StageDetails, StageMetrics]]]:
    """A work order's metrics and those of each of its stages."""
    stages = [(stage, metrics_of(stage, now=now)) for stage in details.stages]
    totals = work_order_metrics(
        planned_start=details.work_order.planned_start,
        planned_end=details.work_order.planned_end,
        stages=[StageOutcome(m, s.stage.good_qty, s.stage.scrap_qty) for s, m in stages],
    )
    return totals, stages


async def stage_metrics_for(
    session: AsyncSession, *, actor: Principal, stage_id: int, now: datetime
) -> tuple[StageDetails, StageMetrics]:
    """The metrics of a stage the actor may see."""
    stage = await get_visible_stage(session, actor=actor, stage_id=stage_id)
    details = await one_stage_details(session, stage)
    return details, metrics_of(details, now=now)


async def work_order_metrics_for(
    session: AsyncSession, *, actor: Principal, work_order_id: int, now: datetime
) -> tuple[WorkOrderDetails, WorkOrderMetrics, list[tuple[StageDetails, StageMetrics]]]:
    """The metrics of a work order the actor may see."""
    details = await get_work_order(session, actor=actor, work_order_id=work_order_id)
    totals, stages = work_order_metrics_of(details, now=now)
    return details, totals, stages


@dataclass(frozen=True)
class Summary:
    """How the work orders planned in a window went."""

    start: datetime
    end: datetime
    work_orders: int
    by_status: dict[WorkOrderStatus, int]
    on_time_percent: float | None
    avg_delay_min_by_stage: dict[str, float]


async def summary(
    session: AsyncSession,
    *,
    actor: Principal,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    zone: ZoneInfo,
) -> Summary:
    """Counts by status, on-time share of done work orders, mean delay of done stages per stage name.

    Without a window: the plant's current day in `zone` (local midnight to local midnight).
    """
    if start is None and end is None:
        start, end = day_of(now, zone)
    if start is None or end is None:
        raise InvalidInput(
            "Give both `from` and `to`, or neither for the plant's current day",
            fields={"from" if start is None else "to": "required with the other bound"},
        )
    if start >= end:
        raise InvalidInput("`from` must be before `to`", fields={"from": "must be before to"})
    by_status = dict.fromkeys(WorkOrderStatus, 0)
    on_time: list[bool] = []
    delays: dict[str, list[float]] = defaultdict(list)
    for details in await planned_between(session, actor=actor, start=start, end=end):
        by_status[details.status] += 1
        totals, stages = work_order_metrics_of(details, now=now)
        if details.status is WorkOrderStatus.DONE:
            on_time.append(totals.on_time)
        for stage, metrics in stages:
            if not metrics.projected:  # done stages only, whatever their work order's status
                delays[stage.stage.stage_name].append(minutes(metrics.delay))
    return Summary(
        start=start,
        end=end,
        work_orders=sum(by_status.values()),
        by_status=by_status,
        on_time_percent=round(sum(on_time) / len(on_time) * 100, 2) if on_time else None,
        avg_delay_min_by_stage={name: round(sum(values) / len(values), 2) for name, values in sorted(delays.items())},
    )

"""What the metrics endpoints return: durations in minutes, as docs/metrics.md defines them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from api.efficiency.calc import Durations, minutes


class DurationsRead(BaseModel):
    """Planned against actual (minutes); `projected` while not done: `end` and `delay_min` are a forecast."""

    planned_duration_min: float
    actual_duration_min: float | None
    paused_min: float
    delay_min: float
    efficiency_percent: float | None
    on_time: bool
    projected: bool
    end: datetime
    # The same figures under the names of the plan the original app was built from (minutes too).
    planned_duration: float
    actual_duration: float | None
    delay_minutes: float


def durations_of(metrics: Durations) -> dict[str, Any]:
    """The DurationsRead fields of computed metrics."""
    actual = metrics.actual_duration
    planned_min, actual_min, delay_min = (
        minutes(metrics.planned_duration),
        None if actual is None else minutes(actual),
        minutes(metrics.delay),
    )
    return {
        "planned_duration_min": planned_min,
        "actual_duration_min": actual_min,
        "paused_min": minutes(metrics.paused),
        "delay_min": delay_min,
        "planned_duration": planned_min,
        "actual_duration": actual_min,
        "delay_minutes": delay_min,
        "efficiency_percent": metrics.efficiency_percent,
        "on_time": metrics.on_time,
        "projected": metrics.projected,
        "end": metrics.end,
    }

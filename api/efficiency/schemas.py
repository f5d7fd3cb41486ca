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


def durations_of(metrics: Durations) -> dict[str, Any]:
    """The DurationsRead fields of computed metrics."""
    actual = metrics.actual_duration
    return {
        "planned_duration_min": minutes(metrics.planned_duration),
        "actual_duration_min": None if actual is None else minutes(actual),
        "paused_min": minutes(metrics.paused),
        "delay_min": minutes(metrics.delay),
        "efficiency_percent": metrics.efficiency_percent,
        "on_time": metrics.on_time,
        "projected": metrics.projected,
        "end": metrics.end,
    }

"""The stage state machine as data: planned → in_progress ⇄ paused → done."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.errors import InvalidTransition
from core.models import StageEventKind, StageStatus

TRANSITIONS: Mapping[tuple[StageStatus, StageEventKind], StageStatus] = MappingProxyType(
    {
        (StageStatus.PLANNED, StageEventKind.START): StageStatus.IN_PROGRESS,
        (StageStatus.IN_PROGRESS, StageEventKind.PAUSE): StageStatus.PAUSED,
        (StageStatus.PAUSED, StageEventKind.RESUME): StageStatus.IN_PROGRESS,
        (StageStatus.IN_PROGRESS, StageEventKind.DONE): StageStatus.DONE,
        # Finishing while paused is allowed: the pause then lasts until the stage is done.
        (StageStatus.PAUSED, StageEventKind.DONE): StageStatus.DONE,
    }
)


def allowed_actions(status: StageStatus) -> list[StageEventKind]:
    """The events a stage in this status accepts, in the machine's order."""
    return [event for (source, event) in TRANSITIONS if source is status]


def transition(status: StageStatus, event: StageEventKind) -> StageStatus:
    """The status after `event`; InvalidTransition names the current status and what is allowed."""
    target = TRANSITIONS.get((status, event))
    if target is None:
        allowed = [action.value for action in allowed_actions(status)]
        raise InvalidTransition(
            f"Cannot {event.value} a stage that is {status.value}; "
            f"allowed: {', '.join(allowed) if allowed else 'nothing (the stage is finished)'}",
            extra={"current_status": status.value, "allowed_actions": allowed},
        )
    return target

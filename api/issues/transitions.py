"""The issue life cycle as data: open → ack → resolved."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.errors import InvalidTransition
from core.models import IssueStatus

TRANSITIONS: Mapping[tuple[IssueStatus, IssueStatus], IssueStatus] = MappingProxyType(
    {
        (IssueStatus.OPEN, IssueStatus.ACK): IssueStatus.ACK,
        (IssueStatus.ACK, IssueStatus.RESOLVED): IssueStatus.RESOLVED,
    }
)


def next_statuses(status: IssueStatus) -> list[IssueStatus]:
    """Where an issue in this status may move."""
    return [target for (source, target) in TRANSITIONS if source is status]


def transition(status: IssueStatus, requested: IssueStatus) -> IssueStatus:
    """The new status; InvalidTransition for any other move."""
    target = TRANSITIONS.get((status, requested))
    if target is None:
        allowed = [value.value for value in next_statuses(status)]
        raise InvalidTransition(
            f"An issue that is {status.value} cannot move to {requested.value}; "
            f"allowed: {', '.join(allowed) if allowed else 'nothing (it is resolved)'}",
            extra={"current_status": status.value, "allowed_statuses": allowed},
        )
    return target

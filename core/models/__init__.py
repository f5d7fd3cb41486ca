"""ORM models; importing this package registers every table on `Base.metadata`."""

from core.models.base import Base
from core.models.telemetry import DeadLetter, Machine, MachineApiKey, MachineLatest, MachineStateChange, Reading
from core.models.tracking import (
    Issue,
    IssueStatus,
    Role,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    UserAccount,
    WorkOrder,
    WorkOrderStage,
)

__all__ = [
    "Base",
    "DeadLetter",
    "Issue",
    "IssueStatus",
    "Machine",
    "MachineApiKey",
    "MachineLatest",
    "MachineStateChange",
    "Reading",
    "Role",
    "StageAssignment",
    "StageEvent",
    "StageEventKind",
    "StageStatus",
    "UserAccount",
    "WorkOrder",
    "WorkOrderStage",
]

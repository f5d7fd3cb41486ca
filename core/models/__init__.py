"""ORM models; importing this package registers every table on `Base.metadata`."""

from core.models.auth import AuthAttempt, RefreshToken, StreamTicket
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
    "AuthAttempt",
    "Base",
    "DeadLetter",
    "Issue",
    "IssueStatus",
    "Machine",
    "MachineApiKey",
    "MachineLatest",
    "MachineStateChange",
    "Reading",
    "RefreshToken",
    "Role",
    "StageAssignment",
    "StageEvent",
    "StageEventKind",
    "StageStatus",
    "StreamTicket",
    "UserAccount",
    "WorkOrder",
    "WorkOrderStage",
]

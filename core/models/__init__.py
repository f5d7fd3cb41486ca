"""ORM models; importing this package registers every table on `Base.metadata`."""

from core.models.auth import AuthAttempt, RefreshToken, StreamTicket
from core.models.base import Base
from core.models.plant import (
    CalendarException,
    CalendarExceptionKind,
    DowntimeClassification,
    IdempotencyRecord,
    LossReason,
    PatternShift,
    ScrapLine,
    ShiftBreak,
    ShiftPattern,
)
from core.models.telemetry import (
    DeadLetter,
    Machine,
    MachineApiKey,
    MachineLatest,
    MachineStateChange,
    Reading,
    TagRange,
)
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
    "CalendarException",
    "CalendarExceptionKind",
    "DeadLetter",
    "DowntimeClassification",
    "IdempotencyRecord",
    "Issue",
    "IssueStatus",
    "LossReason",
    "Machine",
    "MachineApiKey",
    "MachineLatest",
    "MachineStateChange",
    "PatternShift",
    "Reading",
    "RefreshToken",
    "Role",
    "ScrapLine",
    "ShiftBreak",
    "ShiftPattern",
    "StageAssignment",
    "StageEvent",
    "StageEventKind",
    "StageStatus",
    "StreamTicket",
    "TagRange",
    "UserAccount",
    "WorkOrder",
    "WorkOrderStage",
]

"""ORM models; importing this package registers every table on `Base.metadata`."""

from core.models.base import Base
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
    "Issue",
    "IssueStatus",
    "Role",
    "StageAssignment",
    "StageEvent",
    "StageEventKind",
    "StageStatus",
    "UserAccount",
    "WorkOrder",
    "WorkOrderStage",
]

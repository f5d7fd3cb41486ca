"""Users and production tracking: work orders, their stages, stage events, assignments and issues."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.models.base import Base, CreatedAtMixin, TimestampMixin, str_enum


class Role(StrEnum):
    """What a user may do; see the roles table in the design."""

    ADMIN = "admin"
    PLANNER = "planner"
    WORKER = "worker"


class StageStatus(StrEnum):
    """Where a stage is in its life."""

    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    DONE = "done"


class StageEventKind(StrEnum):
    """What a worker did to a stage."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    DONE = "done"


class IssueStatus(StrEnum):
    """Where a reported issue is in its life."""

    OPEN = "open"
    ACK = "ack"
    RESOLVED = "resolved"


class UserAccount(TimestampMixin, Base):
    """A person who logs in: admin, planner or worker."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"), index=True)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    last_login_at: Mapped[datetime | None]
    # Bumped on password change or reset, deactivation and role change: every token issued before stops working.
    token_version: Mapped[int] = mapped_column(default=0, server_default="0")


class WorkOrder(TimestampMixin, Base):
    """A lot of one product to make, split into stages."""

    __tablename__ = "work_order"
    __table_args__ = (
        CheckConstraint("qty > 0", name="qty_positive"),
        CheckConstraint("planned_start < planned_end", name="planned_window"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_code: Mapped[str] = mapped_column(String(64), index=True)
    lot_no: Mapped[str] = mapped_column(String(64), index=True)
    qty: Mapped[int] = mapped_column(Integer)
    planned_start: Mapped[datetime]
    planned_end: Mapped[datetime]
    notes: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    cancel_reason: Mapped[str | None] = mapped_column(Text)

    stages: Mapped[list[WorkOrderStage]] = relationship(
        back_populates="work_order", order_by="WorkOrderStage.position", cascade="all, delete-orphan"
    )


class WorkOrderStage(TimestampMixin, Base):
    """One step of a work order (Enjeksiyon, Montaj, or a custom one), possibly on a machine."""

    __tablename__ = "work_order_stage"
    __table_args__ = (
        UniqueConstraint("work_order_id", "position"),
        CheckConstraint("planned_start < planned_end", name="planned_window"),
        CheckConstraint("good_qty IS NULL OR good_qty >= 0", name="good_qty_not_negative"),
        CheckConstraint("scrap_qty IS NULL OR scrap_qty >= 0", name="scrap_qty_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_order.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    stage_name: Mapped[str] = mapped_column(String(64))
    planned_start: Mapped[datetime]
    planned_end: Mapped[datetime]
    machine_id: Mapped[int | None] = mapped_column(ForeignKey("machine.id", ondelete="SET NULL"), index=True)
    # The current state; its history (and every duration) lives in stage_event.
    status: Mapped[StageStatus] = mapped_column(
        str_enum(StageStatus, "stage_status"), default=StageStatus.PLANNED, index=True
    )
    good_qty: Mapped[int | None] = mapped_column(Integer)
    scrap_qty: Mapped[int | None] = mapped_column(Integer)

    work_order: Mapped[WorkOrder] = relationship(back_populates="stages")


class StageEvent(Base):
    """An append-only record of a start, pause, resume or done on a stage."""

    __tablename__ = "stage_event"
    __table_args__ = (Index("ix_stage_event_stage_id_at", "stage_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("work_order_stage.id", ondelete="CASCADE"))
    kind: Mapped[StageEventKind] = mapped_column(str_enum(StageEventKind, "stage_event_kind"))
    at: Mapped[datetime]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    reason: Mapped[str | None] = mapped_column(Text)


class StageAssignment(Base):
    """A worker assigned to a stage; a stage may have several."""

    __tablename__ = "stage_assignment"

    stage_id: Mapped[int] = mapped_column(ForeignKey("work_order_stage.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), primary_key=True, index=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class Issue(CreatedAtMixin, Base):
    """A problem reported on a stage: open, then acknowledged, then resolved."""

    __tablename__ = "issue"

    id: Mapped[int] = mapped_column(primary_key=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("work_order_stage.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[IssueStatus] = mapped_column(
        str_enum(IssueStatus, "issue_status"), default=IssueStatus.OPEN, index=True
    )
    reported_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    acked_at: Mapped[datetime | None]
    acked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    ack_note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None]
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    resolution_note: Mapped[str | None] = mapped_column(Text)

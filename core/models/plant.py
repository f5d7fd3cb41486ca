"""The plant calendar, downtime and scrap reasons, what people said about stops, and scrap lines.

Stops themselves are not stored: they follow from `machine_state` (core.downtime.detect_stops) whenever they are
asked for, so late-arriving states (a gateway replaying its buffer) correct them. What is stored is what people add:
a classification names a stop by its machine and start and gives it a reason; a reclassification adds a row and
marks the one it replaces (the history: who, when, from, to); a split classifies two parts of one stop.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum

from sqlalchemy import (
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.downtime import LossCategory
from core.models.base import Base, str_enum


class CalendarExceptionKind(StrEnum):
    """A non-working day or an extra shift on one local date (core.calendar.ExceptionKind)."""

    NON_WORKING = "non_working"
    EXTRA_SHIFT = "extra_shift"


class ShiftPattern(Base):
    """A weekly pattern of shifts, valid from a local date until the next pattern starts."""

    __tablename__ = "shift_pattern"

    id: Mapped[int] = mapped_column(primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class PatternShift(Base):
    """One shift of a pattern on one weekday (0 = Monday), in local wall time; end <= start crosses midnight."""

    __tablename__ = "pattern_shift"

    id: Mapped[int] = mapped_column(primary_key=True)
    pattern_id: Mapped[int] = mapped_column(ForeignKey("shift_pattern.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    weekday: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)


class ShiftBreak(Base):
    """A planned break inside a shift, in local wall time."""

    __tablename__ = "shift_break"

    id: Mapped[int] = mapped_column(primary_key=True)
    shift_id: Mapped[int] = mapped_column(ForeignKey("pattern_shift.id", ondelete="CASCADE"), index=True)
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)


class CalendarException(Base):
    """A one-off change of one local date: no shift starts (a holiday), or one more shift does."""

    __tablename__ = "calendar_exception"
    __table_args__ = (Index("ix_calendar_exception_day", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    kind: Mapped[CalendarExceptionKind] = mapped_column(str_enum(CalendarExceptionKind, "calendar_exception_kind"))
    shift_name: Mapped[str | None] = mapped_column(String(64))
    start_time: Mapped[time | None] = mapped_column(Time)
    end_time: Mapped[time | None] = mapped_column(Time)
    note: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class LossReason(Base):
    """A downtime or scrap reason: its code, which of the six big losses (or a planned stop) it is, its labels."""

    __tablename__ = "loss_reason"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[LossCategory] = mapped_column(str_enum(LossCategory, "loss_category"))
    label_tr: Mapped[str] = mapped_column(String(200))
    label_en: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True, server_default=true())


class DowntimeClassification(Base):
    """A reason given to [start, end) of a machine's stop; `replaced_at` set when someone reclassified it."""

    __tablename__ = "downtime_classification"
    __table_args__ = (
        Index("ix_downtime_classification_machine_id_start_at", "machine_id", "start_at"),
        # One current classification per piece of a stop; replaced ones stay as history.
        Index(
            "uq_downtime_classification_current",
            "machine_id",
            "start_at",
            unique=True,
            sqlite_where=text("replaced_at IS NULL"),
            postgresql_where=text("replaced_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime | None]
    reason_code: Mapped[str] = mapped_column(ForeignKey("loss_reason.code"))
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("work_order_stage.id", ondelete="SET NULL"))
    classified_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    classified_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    note: Mapped[str | None] = mapped_column(Text)
    replaced_at: Mapped[datetime | None]
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class ScrapLine(Base):
    """Scrap reported on a stage: a quantity and its reason (a quality-loss reason)."""

    __tablename__ = "scrap_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("work_order_stage.id", ondelete="CASCADE"), index=True)
    reason_code: Mapped[str] = mapped_column(ForeignKey("loss_reason.code"))
    qty: Mapped[int] = mapped_column(Integer)
    reported_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    reported_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class IdempotencyRecord(Base):
    """The first answer to a request sent with an `Idempotency-Key`, replayed when the same user sends it again."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("user_id", "key"), Index("ix_idempotency_record_created_at", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

"""Machines and what they report: readings, latest values, state changes, dead letters, API keys; what commands
may write to them and the commands sent."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.commands import CommandStatus
from core.contract import MachineState
from core.models.base import Base, TimestampMixin, str_enum

# SQLite only makes INTEGER PRIMARY KEY columns auto-increment; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Machine(TimestampMixin, Base):
    """A machine on a site, known by its code; registered by an admin or on first telemetry."""

    __tablename__ = "machine"
    __table_args__ = (UniqueConstraint("site", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    machine_type: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(String(200))
    ideal_cycle_time_s: Mapped[float | None] = mapped_column(Float)
    auto_registered: Mapped[bool] = mapped_column(default=False, server_default=false())
    # From the retained status topic and from telemetry: online / offline and when it was last heard of.
    online: Mapped[bool | None]
    status_changed_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    # Set by DELETE /machines/{id}: kept for the history that refers to it, ignored by the ingestor from then on.
    archived_at: Mapped[datetime | None]
    # Commands: when one of its stages starts, its job data goes to the machine's job-data tags.
    send_job_data_on_start: Mapped[bool] = mapped_column(default=False, server_default=false())


class Reading(Base):
    """One value of one tag at one source time; the key makes redelivery idempotent."""

    __tablename__ = "reading"

    machine_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(primary_key=True)
    # None only with quality bad: the device could not give a value.
    value: Mapped[float | None] = mapped_column(Float)
    # None: good; 1 uncertain, 2 bad (core.contract.QualityLevel).
    quality: Mapped[int | None] = mapped_column(SmallInteger)


class MachineLatest(Base):
    """The newest value of each tag of each machine."""

    __tablename__ = "machine_latest"

    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[datetime]
    value: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[int | None] = mapped_column(SmallInteger)


class MachineStateChange(Base):
    """A state the machine entered at a time (running, idle, setup, alarm, off)."""

    __tablename__ = "machine_state"

    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[datetime] = mapped_column(primary_key=True)
    state: Mapped[MachineState] = mapped_column(str_enum(MachineState, "machine_state"))


class Gateway(Base):
    """A gateway as its retained status last described it: online or not, and its disk buffer's backlog."""

    __tablename__ = "gateway"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    online: Mapped[bool]
    status_at: Mapped[datetime]
    backlog_messages: Mapped[int | None] = mapped_column(BigInteger)
    backlog_readings: Mapped[int | None] = mapped_column(BigInteger)
    backlog_oldest_age_s: Mapped[float | None] = mapped_column(Float)
    backlog_bytes: Mapped[int | None] = mapped_column(BigInteger)
    backlog_max_bytes: Mapped[int | None] = mapped_column(BigInteger)
    backlog_seconds_to_full: Mapped[float | None] = mapped_column(Float)


class TelemetrySeq(Base):
    """Where a publisher's `seq` count stands (ingestor/sequence.py): everything up to `contiguous` accounted for,
    the numbers seen above it as a bit set, since when and up to which number the missing ones are awaited, and the
    gaps counted.
    Shared by every ingestor of a group, updated in the transaction of the batch that holds the messages."""

    __tablename__ = "telemetry_seq"

    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"), primary_key=True)
    contiguous: Mapped[int | None] = mapped_column(BigInteger)
    ahead: Mapped[bytes] = mapped_column(LargeBinary)
    stalled_since: Mapped[datetime | None]
    stall_mark: Mapped[int | None] = mapped_column(BigInteger)
    previous_high: Mapped[int | None] = mapped_column(BigInteger)
    missing_total: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TagRange(Base):
    """A tag's engineering range on a machine (the registry's plausibility check): the ingestor stores a value
    outside [low, high] with quality bad and counts it, never as if it were good."""

    __tablename__ = "machine_tag_range"

    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)


class DeadLetter(Base):
    """A message that broke the contract, kept with its payload (truncated to DEAD_LETTER_MAX_PAYLOAD_BYTES),
    the original size and SHA-256, and the reason (plain text: control characters escaped)."""

    __tablename__ = "dead_letter"
    __table_args__ = (Index("ix_dead_letter_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    source: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    # NULL only for letters stored before revision 0004 (and their hash on SQLite).
    payload_size: Mapped[int | None] = mapped_column(Integer)
    payload_sha256: Mapped[str | None] = mapped_column(String(64))


class MachineApiKey(Base):
    """A key a machine uses to post readings over HTTP; only its SHA-256 is stored."""

    __tablename__ = "machine_api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    revoked_at: Mapped[datetime | None]


class WritableTag(Base):
    """A tag commands may write on a machine (the registry's side of the gateway's `writable:`), with its limits,
    and the job-data field it takes when a stage's job data is sent (`job_field`)."""

    __tablename__ = "machine_writable_tag"

    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_type: Mapped[str] = mapped_column(String(8))
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    allowed: Mapped[list[float] | None] = mapped_column(JSON)
    job_field: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(String(200))


class MachineCommand(Base):
    """One command to a machine and its outcome: the audit trail of who asked for what to be written, when, the
    values before and after, and what the gateway answered. Never deleted by the application."""

    __tablename__ = "machine_command"
    __table_args__ = (Index("ix_machine_command_machine_id_requested_at", "machine_id", "requested_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id"))  # no cascade: machines are archived
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    requested_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # [{"tag", "value", "old_value"}]: what was asked, and the latest value stored when it was asked.
    writes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # What the command is for when it is a stage's job data; NULL for a setpoint.
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("work_order_stage.id", ondelete="SET NULL"))
    status: Mapped[CommandStatus] = mapped_column(str_enum(CommandStatus, "command_status"))
    reason: Mapped[str | None] = mapped_column(Text)
    # The gateway's answer: when, which gateway, and per write the value before and the value read back.
    finished_at: Mapped[datetime | None]
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

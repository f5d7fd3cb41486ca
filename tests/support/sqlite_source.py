"""For the import tests: a migrated SQLite database with rows in every table, and every row of a database read back."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cli.transfer import shopfloor_tables
from core.commands import CommandStatus
from core.contract import MachineState
from core.db import install_sqlite_pragmas, sync_url
from core.downtime import LossCategory
from core.models import (
    AuthAttempt,
    CalendarException,
    CalendarExceptionKind,
    DeadLetter,
    DowntimeClassification,
    Gateway,
    IdempotencyRecord,
    Issue,
    IssueStatus,
    LossReason,
    Machine,
    MachineApiKey,
    MachineCommand,
    MachineLatest,
    MachineStateChange,
    PatternShift,
    Reading,
    RefreshToken,
    Role,
    ScrapLine,
    ShiftBreak,
    ShiftPattern,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    StreamTicket,
    TagRange,
    TelemetrySeq,
    UserAccount,
    WorkOrder,
    WorkOrderStage,
    WritableTag,
)
from core.schema import upgrade

T0 = datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC)
TURKISH = "Şükrü Çağlayan — İşçi ığüşöç ĞÜŞİÖÇ"
READINGS_PER_TAG = 300
BINARY_PAYLOADS = [b"\x00\xff\xfe\x80binary", b"", '{"ts": "yarın"}'.encode(), bytes(range(256))]


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(sync_url(f"sqlite:///{path}"), poolclass=NullPool)
    install_sqlite_pragmas(engine)
    return engine


def fill(path: Path) -> None:
    """A migrated SQLite database with rows in every table: gaps in ids, Turkish text, microseconds, binary."""
    upgrade(f"sqlite:///{path}")
    engine = sqlite_engine(path)
    with Session(engine) as session, session.begin():
        admin = UserAccount(id=3, username="admin", full_name=TURKISH, password_hash="$argon2id$x", role=Role.ADMIN)
        planner = UserAccount(
            id=7, username="planlamacı", full_name="Gülşen Öztürk", password_hash="$argon2id$y", role=Role.PLANNER
        )
        worker = UserAccount(
            id=12,
            username="işçi",
            full_name=None,
            password_hash="$argon2id$z",
            role=Role.WORKER,
            is_active=False,
            last_login_at=T0 + timedelta(microseconds=1),
        )
        session.add_all([admin, planner, worker])
        press = Machine(
            id=4, site="plant1", code="press-1", name="Enjeksiyon Presi 1", machine_type="injection",
            location="Hol A", ideal_cycle_time_s=12.5, online=True, status_changed_at=T0, last_seen_at=T0,
        )  # fmt: skip
        station = Machine(id=9, site="plant1", code="assembly-1", name="Montaj İstasyonu", auto_registered=True)
        retired = Machine(id=8, site="plant2", code="eski-pres", name="Eski Pres", archived_at=T0 + timedelta(days=2))
        session.add_all([press, station, retired])
        session.flush()
        order = WorkOrder(
            id=21, product_code="KALIP-ÇŞ-01", lot_no="LOT-2026-0001", qty=500, planned_start=T0,
            planned_end=T0 + timedelta(hours=8), notes="Acil sipariş: müşteri İzmir", created_by_id=planner.id,
        )  # fmt: skip
        cancelled = WorkOrder(
            id=22, product_code="P-2", lot_no="LOT-2", qty=1, planned_start=T0, planned_end=T0 + timedelta(hours=1),
            cancelled_at=T0 + timedelta(minutes=5), cancelled_by_id=admin.id, cancel_reason="iptal",
        )  # fmt: skip
        session.add_all([order, cancelled])
        session.flush()
        injection = WorkOrderStage(
            id=31, work_order_id=order.id, position=1, stage_name="Enjeksiyon", planned_start=T0,
            planned_end=T0 + timedelta(minutes=30), machine_id=press.id, status=StageStatus.DONE,
            good_qty=480, scrap_qty=20,
        )  # fmt: skip
        assembly = WorkOrderStage(
            id=32, work_order_id=order.id, position=2, stage_name="Montaj", planned_start=T0 + timedelta(minutes=30),
            planned_end=T0 + timedelta(hours=8), status=StageStatus.PAUSED,
        )  # fmt: skip
        session.add_all([injection, assembly])
        session.flush()
        for number, (kind, minutes) in enumerate(
            [
                (StageEventKind.START, 0),
                (StageEventKind.PAUSE, 10),
                (StageEventKind.RESUME, 12),
                (StageEventKind.DONE, 29),
            ]
        ):
            session.add(
                StageEvent(
                    id=40 + number, stage_id=injection.id, kind=kind, user_id=worker.id,
                    at=T0 + timedelta(minutes=minutes, microseconds=number),
                    reason="kalıp değişimi" if number else None,
                )
            )  # fmt: skip
        session.add(StageEvent(id=50, stage_id=assembly.id, kind=StageEventKind.START, at=T0, user_id=None))
        session.add_all(
            [
                StageAssignment(stage_id=injection.id, user_id=worker.id, assigned_at=T0, assigned_by_id=planner.id),
                StageAssignment(stage_id=assembly.id, user_id=worker.id, assigned_at=T0, assigned_by_id=None),
            ]
        )
        session.add_all(
            [
                Issue(
                    id=61, stage_id=injection.id, type="machine_breakdown", description="Hidrolik kaçak — ısı yüksek",
                    status=IssueStatus.RESOLVED, reported_by_id=worker.id, acked_at=T0 + timedelta(seconds=1),
                    acked_by_id=planner.id, ack_note="bakıldı", resolved_at=T0 + timedelta(seconds=2),
                    resolved_by_id=admin.id, resolution_note="conta değişti", created_at=T0,
                ),
                Issue(id=62, stage_id=assembly.id, type="quality", description="çizik", created_at=T0),
            ]
        )  # fmt: skip
        for tag, base in (("barrel_temp_c", 212.5), ("cycle_count", 10234.0), ("estop", 0.0)):
            for step in range(READINGS_PER_TAG):
                session.add(
                    Reading(
                        machine_id=press.id, tag=tag, value=base + step / 3,
                        ts=T0 + timedelta(seconds=step, microseconds=step * 7),
                    )
                )  # fmt: skip
        # A reading of a machine the registry no longer knows: `reading` has no foreign key by design.
        session.add(Reading(machine_id=999, tag="orphan", ts=T0, value=-0.0))
        session.add(Reading(machine_id=station.id, tag="big", ts=T0, value=1.7976931348623157e308))
        # A failed read (no value, quality bad) and an uncertain one travel with their quality.
        session.add(Reading(machine_id=station.id, tag="torque_nm", ts=T0, value=None, quality=2))
        session.add(Reading(machine_id=station.id, tag="torque_nm", ts=T0 + timedelta(seconds=1), value=1.5, quality=1))
        session.add(TagRange(machine_id=press.id, tag="barrel_temp_c", low=-20.0, high=450.5))
        session.add_all(
            [
                WritableTag(machine_id=press.id, tag="target_qty", value_type="int", min=0, max=100000,
                            job_field="target_qty", description="Hedef adet"),
                WritableTag(machine_id=press.id, tag="mode", value_type="float", allowed=[1.0, 2.5]),
                # A command answered by its gateway, with the values before and after (the JSON columns travel too).
                MachineCommand(id=uuid.UUID("6f1c8d2e-0b7e-4c1e-9a3f-2d5b8e7c6a10"), machine_id=press.id,
                               requested_by_id=planner.id, requested_at=T0, expires_at=T0 + timedelta(minutes=1),
                               writes=[{"tag": "target_qty", "value": 500, "old_value": 480.0}],
                               status=CommandStatus.DONE, finished_at=T0 + timedelta(seconds=1), gateway_id="gw-1",
                               outcome=[{"tag": "target_qty", "previous": 480, "read_back": 500}]),
                TelemetrySeq(machine_id=press.id, contiguous=41, ahead=bytes([5, 0, 1]), stalled_since=T0,
                             stall_mark=44, previous_high=None, missing_total=2, updated_at=T0),
            ]
        )  # fmt: skip
        session.add(
            Gateway(site="plant1", gateway_id="gw-1", online=True, status_at=T0, backlog_messages=3,
                    backlog_readings=600, backlog_oldest_age_s=2.5, backlog_bytes=4096, backlog_max_bytes=1 << 30)
        )  # fmt: skip
        session.add_all(
            [
                MachineLatest(machine_id=press.id, tag="barrel_temp_c", ts=T0 + timedelta(seconds=299), value=312.1),
                MachineLatest(machine_id=station.id, tag="torque_nm", ts=T0, value=None, quality=2),
            ]
        )
        session.add_all(
            [
                MachineStateChange(machine_id=press.id, ts=T0, state=MachineState.RUNNING),
                MachineStateChange(
                    machine_id=press.id, ts=T0 + timedelta(microseconds=999999), state=MachineState.ALARM
                ),
                MachineStateChange(machine_id=station.id, ts=T0, state=MachineState.OFF),
            ]
        )
        for number, payload in enumerate(BINARY_PAYLOADS):
            session.add(
                DeadLetter(
                    id=100 + number * 10, received_at=T0 + timedelta(microseconds=number), source="mqtt",
                    topic=f"shopfloor/v1/plant1/press-{number}/telemetry", payload=payload,
                    reason=f"bozuk yük {number}", payload_size=len(payload) * 100,
                    payload_sha256=hashlib.sha256(payload).hexdigest(),
                )
            )  # fmt: skip
        session.add(
            MachineApiKey(
                id=5, machine_id=station.id, prefix="sfk_ab12", key_hash="a" * 64, created_at=T0,
                created_by_id=admin.id, revoked_at=T0 + timedelta(days=1),
            )
        )  # fmt: skip
        session.add_all(
            [
                RefreshToken(
                    id=7, user_id=worker.id, family="f" * 32, token_hash="b" * 64, token_version=2, issued_at=T0,
                    expires_at=T0 + timedelta(days=14), used_at=T0 + timedelta(hours=1),
                    revoked_at=T0 + timedelta(hours=2),
                ),
                AuthAttempt(id=8, key="login:işçi@10.0.0.7", at=T0),
                StreamTicket(
                    id=9, ticket_hash="c" * 64, user_id=planner.id, token_version=3,
                    expires_at=T0 + timedelta(seconds=30), used_at=T0 + timedelta(seconds=1),
                ),
            ]
        )  # fmt: skip
        # The plant calendar and what people said about stops (the default loss reasons come with the migration;
        # one of the plant's own is added).
        session.add(
            LossReason(
                code="granül_nem", category=LossCategory.QUALITY, label_tr="Granül nemli", label_en="Wet granulate"
            )
        )
        pattern = ShiftPattern(id=4, valid_from=date(2026, 1, 5), name="3 vardiya", created_by_id=planner.id)
        session.add(pattern)
        session.flush()
        night = PatternShift(
            id=11, pattern_id=pattern.id, name="gece", weekday=0, start_time=time(22), end_time=time(6)
        )
        session.add(night)
        session.flush()
        session.add(ShiftBreak(id=12, shift_id=night.id, start_time=time(2), end_time=time(2, 30)))
        session.add(
            CalendarException(
                id=13, day=date(2026, 10, 29), kind=CalendarExceptionKind.NON_WORKING, note="Cumhuriyet Bayramı",
                created_by_id=planner.id,
            )
        )  # fmt: skip
        session.add_all(
            [
                DowntimeClassification(
                    id=14, machine_id=press.id, start_at=T0, end_at=T0 + timedelta(minutes=20), reason_code="setup",
                    stage_id=injection.id, classified_by_id=worker.id, classified_at=T0 + timedelta(minutes=21),
                    replaced_at=T0 + timedelta(minutes=30), replaced_by_id=planner.id,
                ),
                DowntimeClassification(
                    id=15, machine_id=press.id, start_at=T0, end_at=T0 + timedelta(minutes=20),
                    reason_code="mould_change", stage_id=injection.id, classified_by_id=planner.id,
                    classified_at=T0 + timedelta(minutes=30), note="kalıp değişti",
                ),
                ScrapLine(id=16, stage_id=injection.id, reason_code="granül_nem", qty=12, reported_by_id=worker.id,
                          reported_at=T0),
                IdempotencyRecord(
                    id=17, user_id=worker.id, key="4f1c-işçi", method="POST", path="/stages/1/done",
                    request_sha256="d" * 64, status_code=200, content_type="application/json", body=b'{"id": 1}',
                    created_at=T0,
                ),
            ]
        )  # fmt: skip
    engine.dispose()


def all_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every shopfloor table, in primary-key order, as the ORM types read them."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {
                table.name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key))]
                for table in shopfloor_tables()
            }
    finally:
        engine.dispose()

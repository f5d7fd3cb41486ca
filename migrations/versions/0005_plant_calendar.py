"""Plant calendar, loss reasons, downtime classifications, scrap lines, idempotency records.

Shift patterns (valid from a local date) with their shifts and breaks, one-off calendar exceptions; the reasons of the
six big losses (seeded with a default set for injection moulding and assembly, Turkish and English labels); what
people said about a machine's stops (current classification per piece of a stop, replaced ones kept as history);
scrap quantities by reason; and the first answer to each request sent with an `Idempotency-Key`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CATEGORIES = ("planned_stop", "availability", "performance", "quality")
# The default reasons at the time of this revision (core.downtime.DEFAULT_REASONS then), copied so that the
# revision never changes with the code.
REASONS = [
    ("break", "planned_stop", "Mola", "Break"),
    ("no_order", "planned_stop", "İş emri yok", "No order"),
    ("planned_maintenance", "planned_stop", "Planlı bakım", "Planned maintenance"),
    ("breakdown", "availability", "Arıza", "Breakdown"),
    ("mould_change", "availability", "Kalıp değişimi", "Mould change"),
    ("setup", "availability", "Ayar / hazırlık", "Setup / changeover"),
    ("material_shortage", "availability", "Malzeme eksik", "Material shortage"),
    ("waiting_operator", "availability", "Operatör bekleniyor", "Waiting for operator"),
    ("minor_stop", "performance", "Kısa duruş", "Minor stop"),
    ("reduced_speed", "performance", "Düşük hız", "Reduced speed"),
    ("startup_rejects", "quality", "Başlangıç hurdası", "Start-up rejects"),
    ("production_rejects", "quality", "Üretim hurdası", "Production rejects"),
    ("short_shot", "quality", "Eksik baskı", "Short shot"),
    ("flash", "quality", "Çapak", "Flash"),
    ("sink_marks", "quality", "Çöküntü", "Sink marks"),
    ("burn_marks", "quality", "Yanık izi", "Burn marks"),
    ("missing_part", "quality", "Eksik parça", "Missing part"),
    ("torque_fault", "quality", "Tork hatası", "Torque fault"),
]


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "shift_pattern",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", _utc(), server_default=sa.func.now(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["user_account.id"], name=op.f("fk_shift_pattern_created_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shift_pattern")),
        sa.UniqueConstraint("valid_from", name=op.f("uq_shift_pattern_valid_from")),
    )
    op.create_table(
        "pattern_shift",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pattern_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pattern_id"],
            ["shift_pattern.id"],
            name=op.f("fk_pattern_shift_pattern_id_shift_pattern"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pattern_shift")),
    )
    op.create_index(op.f("ix_pattern_shift_pattern_id"), "pattern_shift", ["pattern_id"])
    op.create_table(
        "shift_break",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shift_id", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shift_id"], ["pattern_shift.id"], name=op.f("fk_shift_break_shift_id_pattern_shift"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shift_break")),
    )
    op.create_index(op.f("ix_shift_break_shift_id"), "shift_break", ["shift_id"])
    op.create_table(
        "calendar_exception",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "non_working",
                "extra_shift",
                name="calendar_exception_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("shift_name", sa.String(length=64), nullable=True),
        sa.Column("start_time", sa.Time(), nullable=True),
        sa.Column("end_time", sa.Time(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["user_account.id"], name=op.f("fk_calendar_exception_created_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_exception")),
    )
    op.create_index("ix_calendar_exception_day", "calendar_exception", ["day"])
    reasons = op.create_table(
        "loss_reason",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column(
            "category",
            sa.Enum(*CATEGORIES, name="loss_category", native_enum=False, create_constraint=True, length=32),
            nullable=False,
        ),
        sa.Column("label_tr", sa.String(length=200), nullable=False),
        sa.Column("label_en", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_loss_reason")),
    )
    op.bulk_insert(
        reasons,
        [
            {"code": code, "category": category, "label_tr": label_tr, "label_en": label_en, "active": True}
            for code, category, label_tr, label_en in REASONS
        ],
    )
    op.create_table(
        "downtime_classification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("start_at", _utc(), nullable=False),
        sa.Column("end_at", _utc(), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=True),
        sa.Column("classified_by_id", sa.Integer(), nullable=True),
        sa.Column("classified_at", _utc(), server_default=sa.func.now(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("replaced_at", _utc(), nullable=True),
        sa.Column("replaced_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["classified_by_id"],
            ["user_account.id"],
            name=op.f("fk_downtime_classification_classified_by_id_user_account"),
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name=op.f("fk_downtime_classification_machine_id_machine"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reason_code"], ["loss_reason.code"], name=op.f("fk_downtime_classification_reason_code_loss_reason")
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by_id"],
            ["user_account.id"],
            name=op.f("fk_downtime_classification_replaced_by_id_user_account"),
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["work_order_stage.id"],
            name=op.f("fk_downtime_classification_stage_id_work_order_stage"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_downtime_classification")),
    )
    op.create_index(
        "ix_downtime_classification_machine_id_start_at", "downtime_classification", ["machine_id", "start_at"]
    )
    op.create_index(
        "uq_downtime_classification_current",
        "downtime_classification",
        ["machine_id", "start_at"],
        unique=True,
        sqlite_where=sa.text("replaced_at IS NULL"),
        postgresql_where=sa.text("replaced_at IS NULL"),
    )
    op.create_table(
        "scrap_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("reported_by_id", sa.Integer(), nullable=True),
        sa.Column("reported_at", _utc(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reason_code"], ["loss_reason.code"], name=op.f("fk_scrap_line_reason_code_loss_reason")
        ),
        sa.ForeignKeyConstraint(
            ["reported_by_id"], ["user_account.id"], name=op.f("fk_scrap_line_reported_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["work_order_stage.id"],
            name=op.f("fk_scrap_line_stage_id_work_order_stage"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scrap_line")),
    )
    op.create_index(op.f("ix_scrap_line_stage_id"), "scrap_line", ["stage_id"])
    op.create_table(
        "idempotency_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _utc(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_idempotency_record_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_record")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotency_record_user_id_key")),
    )
    op.create_index("ix_idempotency_record_created_at", "idempotency_record", ["created_at"])


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("idempotency_record")
    op.drop_table("scrap_line")
    op.drop_table("downtime_classification")
    op.drop_table("loss_reason")
    op.drop_table("calendar_exception")
    op.drop_table("shift_break")
    op.drop_table("pattern_shift")
    op.drop_table("shift_pattern")

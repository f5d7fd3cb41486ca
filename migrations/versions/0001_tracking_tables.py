"""Tracking tables: users, work orders, stages, stage events, assignments, issues.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "user_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "admin",
                "planner",
                "worker",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_account")),
        sa.UniqueConstraint("username", name=op.f("uq_user_account_username")),
    )
    op.create_index(op.f("ix_user_account_role"), "user_account", ["role"], unique=False)

    op.create_table(
        "work_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_code", sa.String(length=64), nullable=False),
        sa.Column("lot_no", sa.String(length=64), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("planned_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by_id", sa.Integer(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("planned_start < planned_end", name=op.f("ck_work_order_planned_window")),
        sa.CheckConstraint("qty > 0", name=op.f("ck_work_order_qty_positive")),
        sa.ForeignKeyConstraint(
            ["cancelled_by_id"], ["user_account.id"], name=op.f("fk_work_order_cancelled_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["user_account.id"], name=op.f("fk_work_order_created_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_order")),
    )
    op.create_index(op.f("ix_work_order_lot_no"), "work_order", ["lot_no"], unique=False)
    op.create_index(op.f("ix_work_order_product_code"), "work_order", ["product_code"], unique=False)

    op.create_table(
        "work_order_stage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("work_order_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("stage_name", sa.String(length=64), nullable=False),
        sa.Column("planned_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "planned",
                "in_progress",
                "paused",
                "done",
                name="stage_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("good_qty", sa.Integer(), nullable=True),
        sa.Column("scrap_qty", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("good_qty IS NULL OR good_qty >= 0", name=op.f("ck_work_order_stage_good_qty_not_negative")),
        sa.CheckConstraint("planned_start < planned_end", name=op.f("ck_work_order_stage_planned_window")),
        sa.CheckConstraint(
            "scrap_qty IS NULL OR scrap_qty >= 0", name=op.f("ck_work_order_stage_scrap_qty_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_order.id"],
            name=op.f("fk_work_order_stage_work_order_id_work_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_order_stage")),
        sa.UniqueConstraint("work_order_id", "position", name=op.f("uq_work_order_stage_work_order_id_position")),
    )
    op.create_index(op.f("ix_work_order_stage_machine_id"), "work_order_stage", ["machine_id"], unique=False)
    op.create_index(op.f("ix_work_order_stage_status"), "work_order_stage", ["status"], unique=False)

    op.create_table(
        "issue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "ack",
                "resolved",
                name="issue_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("reported_by_id", sa.Integer(), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by_id", sa.Integer(), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by_id", sa.Integer(), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["acked_by_id"], ["user_account.id"], name=op.f("fk_issue_acked_by_id_user_account")),
        sa.ForeignKeyConstraint(
            ["reported_by_id"], ["user_account.id"], name=op.f("fk_issue_reported_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by_id"], ["user_account.id"], name=op.f("fk_issue_resolved_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["work_order_stage.id"],
            name=op.f("fk_issue_stage_id_work_order_stage"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issue")),
    )
    op.create_index(op.f("ix_issue_stage_id"), "issue", ["stage_id"], unique=False)
    op.create_index(op.f("ix_issue_status"), "issue", ["status"], unique=False)
    op.create_index(op.f("ix_issue_type"), "issue", ["type"], unique=False)

    op.create_table(
        "stage_assignment",
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("assigned_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["assigned_by_id"],
            ["user_account.id"],
            name=op.f("fk_stage_assignment_assigned_by_id_user_account"),
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["work_order_stage.id"],
            name=op.f("fk_stage_assignment_stage_id_work_order_stage"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_stage_assignment_user_id_user_account")
        ),
        sa.PrimaryKeyConstraint("stage_id", "user_id", name=op.f("pk_stage_assignment")),
    )
    op.create_index(op.f("ix_stage_assignment_user_id"), "stage_assignment", ["user_id"], unique=False)

    op.create_table(
        "stage_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "start",
                "pause",
                "resume",
                "done",
                name="stage_event_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["work_order_stage.id"],
            name=op.f("fk_stage_event_stage_id_work_order_stage"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["user_account.id"], name=op.f("fk_stage_event_user_id_user_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_event")),
    )
    op.create_index("ix_stage_event_stage_id_at", "stage_event", ["stage_id", "at"], unique=False)


def downgrade() -> None:
    """Undo this revision (indexes go with their tables)."""
    for table in (
        "stage_event",
        "stage_assignment",
        "issue",
        "work_order_stage",
        "work_order",
        "user_account",
    ):
        op.drop_table(table)

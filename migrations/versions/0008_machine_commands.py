"""Commands to machines: the tags commands may write on each machine (`machine_writable_tag`, with limits and the
job-data field each takes), every command sent with its outcome (`machine_command`, the audit trail), and whether a
machine gets its stage's job data when the stage starts (`machine.send_job_data_on_start`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("sent", "done", "refused", "failed", "expired")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "machine_writable_tag",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("value_type", sa.String(length=8), nullable=False),
        sa.Column("min", sa.Float(), nullable=True),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("allowed", sa.JSON(), nullable=True),
        sa.Column("job_field", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name=op.f("fk_machine_writable_tag_machine_id_machine"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", "tag", name=op.f("pk_machine_writable_tag")),
    )
    op.create_table(
        "machine_command",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("writes", sa.JSON(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(*STATUSES, name="command_status", native_enum=False, create_constraint=True, length=32),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gateway_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        # No cascade: the audit trail outlives nothing it refers to (machines are archived, never deleted).
        sa.ForeignKeyConstraint(["machine_id"], ["machine.id"], name=op.f("fk_machine_command_machine_id_machine")),
        sa.ForeignKeyConstraint(
            ["requested_by_id"], ["user_account.id"], name=op.f("fk_machine_command_requested_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["work_order_stage.id"],
            name=op.f("fk_machine_command_stage_id_work_order_stage"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_command")),
    )
    op.create_index("ix_machine_command_machine_id_requested_at", "machine_command", ["machine_id", "requested_at"])
    # A plain ADD COLUMN on both databases: a batch copy of `machine` on SQLite would drop the old table, and with
    # foreign keys on, every row that refers to a machine with it (tests/api/test_migrations.py keeps them).
    op.add_column(
        "machine", sa.Column("send_job_data_on_start", sa.Boolean(), server_default=sa.false(), nullable=False)
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_column("machine", "send_job_data_on_start")  # in place, also on SQLite (3.35 and later)
    op.drop_index("ix_machine_command_machine_id_requested_at", table_name="machine_command")
    op.drop_table("machine_command")
    op.drop_table("machine_writable_tag")

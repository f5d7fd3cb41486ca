"""Where each publisher's `seq` count stands, shared by the ingestors of a group (ingestor/sequence.py): the
number below which everything is accounted for, the numbers seen above it (a bit set), since when and up to
which number the missing ones are awaited, the count before a restart, and the gaps counted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "telemetry_seq",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("contiguous", sa.BigInteger(), nullable=True),
        sa.Column("ahead", sa.LargeBinary(), nullable=False),
        sa.Column("stalled_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stall_mark", sa.BigInteger(), nullable=True),
        sa.Column("previous_high", sa.BigInteger(), nullable=True),
        sa.Column("missing_total", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name=op.f("fk_telemetry_seq_machine_id_machine"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_telemetry_seq")),
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("telemetry_seq")

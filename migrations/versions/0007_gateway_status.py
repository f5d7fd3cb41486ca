"""Gateways as their retained status last described them: online or not, and their disk buffer's backlog
(messages and readings waiting, the oldest one's age, bytes used of the bound, how long the bound lasts).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "gateway",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backlog_messages", sa.BigInteger(), nullable=True),
        sa.Column("backlog_readings", sa.BigInteger(), nullable=True),
        sa.Column("backlog_oldest_age_s", sa.Float(), nullable=True),
        sa.Column("backlog_bytes", sa.BigInteger(), nullable=True),
        sa.Column("backlog_max_bytes", sa.BigInteger(), nullable=True),
        sa.Column("backlog_seconds_to_full", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("site", "gateway_id", name=op.f("pk_gateway")),
    )


def downgrade() -> None:
    """Undo this revision."""
    op.drop_table("gateway")

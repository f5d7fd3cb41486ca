"""Bounded telemetry plane: dead letters keep their payload size and SHA-256; machines can be archived.

`machine.archived_at`: `DELETE /machines/{id}` archives a machine (its id stays referenced by stages and, when
kept, readings); the ingestor stores nothing more for it and never registers it again.

The ingestor now stores at most DEAD_LETTER_MAX_PAYLOAD_BYTES of a rejected payload, so the size and the hash are
what identify the original. Letters stored before this revision get their size (both databases) and, on PostgreSQL,
their hash filled in; on SQLite their hash stays NULL (SQLite has no SHA-256 function).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("machine") as batch:
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("dead_letter") as batch:
        batch.add_column(sa.Column("payload_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE dead_letter SET payload_size = length(payload), payload_sha256 = encode(sha256(payload), 'hex')"
        )
    else:
        op.execute("UPDATE dead_letter SET payload_size = length(payload)")


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("dead_letter") as batch:
        batch.drop_column("payload_sha256")
        batch.drop_column("payload_size")
    with op.batch_alter_table("machine") as batch:
        batch.drop_column("archived_at")

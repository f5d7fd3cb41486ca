"""Telemetry tables: machines, readings, latest values, machine states, dead letters, machine API keys.

On PostgreSQL with the timescaledb extension available (and TIMESCALEDB not `off`), `reading` becomes a hypertable
with compression, an optional retention policy, and the continuous aggregates `reading_1m` and `reading_1h`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.settings import TimeseriesSettings

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUPS = {
    "reading_1m": ("1 minute", "2 hours", "1 minute", "1 minute"),
    "reading_1h": ("1 hour", "3 days", "1 hour", "30 minutes"),
}


def _timeseries() -> TimeseriesSettings:
    # Handed over by the caller (core.schema, or env.py for a plain `alembic` run): a revision reads no environment.
    config = op.get_context().config
    settings = config.attributes.get("timeseries") if config is not None else None
    if not isinstance(settings, TimeseriesSettings):
        raise RuntimeError("run the migrations through core.schema or migrations/env.py: no timeseries settings")
    return settings


def _timescaledb_wanted(bind: sa.Connection) -> bool:
    if bind.dialect.name != "postgresql" or _timeseries().timescaledb == "off":
        return False
    query = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return bind.execute(query).first() is not None


def _timescaledb_installed(bind: sa.Connection) -> bool:
    if bind.dialect.name != "postgresql":
        return False
    return bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first() is not None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "machine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("machine_type", sa.String(length=64), nullable=True),
        sa.Column("location", sa.String(length=200), nullable=True),
        sa.Column("ideal_cycle_time_s", sa.Float(), nullable=True),
        sa.Column("auto_registered", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine")),
        sa.UniqueConstraint("site", "code", name=op.f("uq_machine_site_code")),
    )
    op.create_table(
        "reading",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("machine_id", "tag", "ts", name=op.f("pk_reading")),
    )
    op.create_table(
        "machine_latest",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name=op.f("fk_machine_latest_machine_id_machine"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", "tag", name=op.f("pk_machine_latest")),
    )
    op.create_table(
        "machine_state",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "running", "idle", "setup", "alarm", "off",
                name="machine_state", native_enum=False, create_constraint=True, length=32,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name=op.f("fk_machine_state_machine_id_machine"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", "ts", name=op.f("pk_machine_state")),
    )  # fmt: skip
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter")),
    )
    op.create_index("ix_dead_letter_received_at", "dead_letter", ["received_at"], unique=False)
    op.create_table(
        "machine_api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["user_account.id"], name=op.f("fk_machine_api_key_created_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name=op.f("fk_machine_api_key_machine_id_machine"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_machine_api_key_key_hash")),
    )
    op.create_index(op.f("ix_machine_api_key_machine_id"), "machine_api_key", ["machine_id"], unique=False)
    # Stage machine ids were free integers before the registry existed: drop the ones that name no machine.
    op.execute("UPDATE work_order_stage SET machine_id = NULL WHERE machine_id IS NOT NULL")
    with op.batch_alter_table("work_order_stage") as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_work_order_stage_machine_id_machine"), "machine", ["machine_id"], ["id"], ondelete="SET NULL"
        )
    bind = op.get_bind()
    if _timescaledb_wanted(bind):
        _upgrade_timescaledb(_timeseries())


def _upgrade_timescaledb(settings: TimeseriesSettings) -> None:
    # Interval strings are validated by the settings pattern, so formatting them into DDL is safe.
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    op.execute(
        "SELECT create_hypertable('reading', 'ts', "
        f"chunk_time_interval => INTERVAL '{settings.timescale_chunk_interval}', create_default_indexes => false)"
    )
    op.execute(
        "ALTER TABLE reading SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'machine_id, tag', timescaledb.compress_orderby = 'ts DESC')"
    )
    op.execute(f"SELECT add_compression_policy('reading', INTERVAL '{settings.timescale_compress_after}')")
    if settings.timescale_retention:
        op.execute(f"SELECT add_retention_policy('reading', INTERVAL '{settings.timescale_retention}')")
    for view, (bucket, start_offset, end_offset, schedule) in ROLLUPS.items():
        op.execute(
            f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS "  # noqa: S608 -- this revision's constants
            f"SELECT time_bucket(INTERVAL '{bucket}', ts) AS bucket, machine_id, tag, "
            "avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count, last(value, ts) AS last "
            "FROM reading GROUP BY bucket, machine_id, tag WITH NO DATA"
        )
        # Real-time aggregation: buckets not materialised yet are computed from `reading` at query time.
        op.execute(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = false)")
        # end_offset leaves the newest, still-filling bucket out of the materialisation.
        op.execute(
            f"SELECT add_continuous_aggregate_policy('{view}', start_offset => INTERVAL '{start_offset}', "
            f"end_offset => INTERVAL '{end_offset}', schedule_interval => INTERVAL '{schedule}')"
        )


def downgrade() -> None:
    """Undo this revision."""
    bind = op.get_bind()
    if _timescaledb_installed(bind):
        for view in ROLLUPS:
            op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")
    with op.batch_alter_table("work_order_stage") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_work_order_stage_machine_id_machine"), type_="foreignkey")
    for table in ("machine_api_key", "dead_letter", "machine_state", "machine_latest", "reading", "machine"):
        op.drop_table(table)

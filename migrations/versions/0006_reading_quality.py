"""Reading quality: a value's quality (NULL good, 1 uncertain, 2 bad) on `reading` and `machine_latest`, whose value
may now be missing when the device could not give one (a bad read); and `machine_tag_range`, a tag's engineering
range in the machine registry.

On TimescaleDB the hypertable keeps its compression settings (adding a nullable column and dropping NOT NULL are
allowed on compressed chunks). The continuous aggregates must now aggregate good values only and count the others
(`not_good`); a continuous aggregate cannot be altered, so the old ones are kept, renamed `reading_1m_v1` /
`reading_1h_v1` without their refresh policy (frozen: the only copy of buckets older than a raw-data retention;
dropped when `reading` is empty, a new installation), and new ones are created with the policies the old had,
then refreshed over all the raw history there is (outside the migration's transaction: on a large table this
takes a while, once).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rollups as revision 0002 made them: bucket, start offset, end offset, schedule.
ROLLUPS = {
    "reading_1m": ("1 minute", "2 hours", "1 minute", "1 minute"),
    "reading_1h": ("1 hour", "3 days", "1 hour", "30 minutes"),
}
GOOD = "quality IS NULL"
AGGREGATES_NOW = (
    f"avg(value) FILTER (WHERE {GOOD}) AS avg, min(value) FILTER (WHERE {GOOD}) AS min, "
    f"max(value) FILTER (WHERE {GOOD}) AS max, count(*) FILTER (WHERE {GOOD}) AS count, "
    f"last(value, ts) FILTER (WHERE {GOOD}) AS last, count(*) FILTER (WHERE NOT ({GOOD})) AS not_good"
)
AGGREGATES_BEFORE = (
    "avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count, last(value, ts) AS last"
)


def _timescaledb_installed(bind: sa.Connection) -> bool:
    if bind.dialect.name != "postgresql":
        return False
    return bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first() is not None


def _rollups_present(bind: sa.Connection, view: str = "reading_1m") -> bool:
    return bind.execute(sa.text(f"SELECT to_regclass('{view}') IS NOT NULL")).scalar_one() is True


def _create_rollups(aggregates: str) -> None:
    for view, (bucket, *_) in ROLLUPS.items():
        op.execute(
            f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS "  # noqa: S608 -- this revision's constants
            f"SELECT time_bucket(INTERVAL '{bucket}', ts) AS bucket, machine_id, tag, {aggregates} "
            "FROM reading GROUP BY bucket, machine_id, tag WITH NO DATA"
        )
        op.execute(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = false)")
        _add_policy(view)


def _add_policy(view: str) -> None:
    _, start_offset, end_offset, schedule = ROLLUPS[view]
    op.execute(
        f"SELECT add_continuous_aggregate_policy('{view}', start_offset => INTERVAL '{start_offset}', "
        f"end_offset => INTERVAL '{end_offset}', schedule_interval => INTERVAL '{schedule}')"
    )


def _refresh_rollups() -> None:
    # A refresh cannot run inside a transaction: the rollups are filled from all raw history, once.
    with op.get_context().autocommit_block():
        for view in ROLLUPS:
            op.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")


def upgrade() -> None:
    """Apply this revision."""
    bind = op.get_bind()
    rollups = _timescaledb_installed(bind) and _rollups_present(bind)
    history = rollups and bind.execute(sa.text("SELECT EXISTS (SELECT 1 FROM reading)")).scalar_one() is True
    for view in ROLLUPS if rollups else ():
        if history:  # kept, frozen, under another name: nothing they hold is lost
            op.execute(f"SELECT remove_continuous_aggregate_policy('{view}', if_exists => true)")
            op.execute(f"ALTER MATERIALIZED VIEW {view} RENAME TO {view}_v1")
        else:  # a new installation: nothing to keep
            op.execute(f"DROP MATERIALIZED VIEW {view}")
    for table in ("reading", "machine_latest"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("quality", sa.SmallInteger(), nullable=True))
            batch_op.alter_column("value", existing_type=sa.Float(), nullable=True)
    if rollups:
        _create_rollups(AGGREGATES_NOW)
    op.create_table(
        "machine_tag_range",
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name=op.f("fk_machine_tag_range_machine_id_machine"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", "tag", name=op.f("pk_machine_tag_range")),
    )
    if rollups:
        _refresh_rollups()


def downgrade() -> None:
    """Undo this revision: values that were missing (bad reads) cannot come back, so those rows go; the rollups
    kept by the upgrade come back (or, without them, are built again over all values)."""
    op.drop_table("machine_tag_range")
    bind = op.get_bind()
    rollups = _timescaledb_installed(bind) and _rollups_present(bind)
    kept = rollups and _rollups_present(bind, "reading_1m_v1")
    if rollups:
        for view in ROLLUPS:
            op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")
    for table in ("reading", "machine_latest"):
        op.execute(f"DELETE FROM {table} WHERE value IS NULL")  # noqa: S608 -- constant table names
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column("value", existing_type=sa.Float(), nullable=False)
            batch_op.drop_column("quality")
    if kept:
        for view in ROLLUPS:
            op.execute(f"ALTER MATERIALIZED VIEW {view}_v1 RENAME TO {view}")
            _add_policy(view)
    elif rollups:
        _create_rollups(AGGREGATES_BEFORE)
        _refresh_rollups()

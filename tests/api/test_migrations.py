"""Alembic is the only way tables are made: up, down and up again on both databases, and no drift."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from core.db import sync_url
from core.models import Base
from core.schema import downgrade, head_revisions, upgrade

TRACKING_TABLES = {
    "user_account",
    "work_order",
    "work_order_stage",
    "stage_event",
    "stage_assignment",
    "issue",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert _tables(empty_database_url) >= TRACKING_TABLES
    downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == set()
    upgrade(empty_database_url)
    assert _tables(empty_database_url) == {table.name for table in Base.metadata.sorted_tables}


def test_models_and_revisions_do_not_drift(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = create_engine(sync_url(empty_database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert set(context.get_current_heads()) == head_revisions()
    finally:
        engine.dispose()


def test_upgrading_to_commands_and_back_keeps_every_row_that_refers_to_a_machine(empty_database_url: str) -> None:
    """Revision 0008 adds a column to `machine`: on SQLite a batch copy of the table would have dropped it, and with
    foreign keys on, the rows referring to it (latest values, states, stages) with it."""
    upgrade(empty_database_url, "0007")
    engine = create_engine(sync_url(empty_database_url))
    rows = {"machine": 1, "machine_latest": 1, "machine_state": 1, "work_order_stage": 1}
    try:
        with engine.begin() as connection:
            for statement in PLANT_ROWS:
                connection.execute(text(statement))
        upgrade(empty_database_url)
        assert _counts(engine, rows) == rows
        assert _stage_machine(engine) == 1
        downgrade(empty_database_url, "0007")
        assert _counts(engine, rows) == rows
        assert _stage_machine(engine) == 1
    finally:
        engine.dispose()


PLANT_ROWS = (
    "INSERT INTO machine (id, site, code, name, auto_registered, created_at, updated_at)"
    " VALUES (1, 'plant1', 'press-1', 'Press', false, '2026-12-01 08:00:00+00', '2026-12-01 08:00:00+00')",
    "INSERT INTO machine_latest (machine_id, tag, ts, value) VALUES (1, 'temp', '2026-12-01 08:00:00+00', 210.5)",
    "INSERT INTO machine_state (machine_id, ts, state) VALUES (1, '2026-12-01 08:00:00+00', 'running')",
    "INSERT INTO work_order (id, product_code, lot_no, qty, planned_start, planned_end, created_at, updated_at)"
    " VALUES (1, 'P', 'L', 5, '2026-12-01 08:00:00+00', '2026-12-01 10:00:00+00',"
    " '2026-12-01 08:00:00+00', '2026-12-01 08:00:00+00')",
    "INSERT INTO work_order_stage (id, work_order_id, position, stage_name, planned_start, planned_end, machine_id,"
    " status, created_at, updated_at) VALUES (1, 1, 1, 'Enjeksiyon', '2026-12-01 08:00:00+00',"
    " '2026-12-01 10:00:00+00', 1, 'planned', '2026-12-01 08:00:00+00', '2026-12-01 08:00:00+00')",
)


def _counts(engine: Engine, rows: dict[str, int]) -> dict[str, int]:
    with engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in rows}  # noqa: S608 -- fixed table names


def _stage_machine(engine: Engine) -> int | None:
    with engine.connect() as connection:
        machine_id: int | None = connection.execute(
            text("SELECT machine_id FROM work_order_stage WHERE id = 1")
        ).scalar_one()
        return machine_id

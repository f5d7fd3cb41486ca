"""Alembic is the only way tables are made: up, down and up again on both databases, and no drift."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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

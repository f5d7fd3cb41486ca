"""Alembic, driven from code: the only way tables are made, and how readiness knows the schema is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from core.db import ensure_sqlite_folder, sync_url
from core.settings import TimeseriesSettings

VERSION_TABLE = "alembic_version"
# Tables a migration fills with defaults (the loss reasons of revision 0005): part of an empty database.
SEEDED_TABLES = frozenset({"loss_reason"})
# `migrations/` sits beside `core/` both in a checkout and in an installed wheel.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str, timeseries: TimeseriesSettings | None = None) -> Config:
    """An Alembic configuration for one database, without any ini file; the revisions get `timeseries` (how to
    keep readings on TimescaleDB), by default read from the environment now."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = sync_url(database_url).render_as_string(hide_password=False)
    config.attributes["timeseries"] = timeseries if timeseries is not None else TimeseriesSettings()
    return config


def upgrade(database_url: str, revision: str = "head", *, timeseries: TimeseriesSettings | None = None) -> None:
    """Bring the schema up to `revision`."""
    ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url, timeseries), revision)


def downgrade(database_url: str, revision: str, *, timeseries: TimeseriesSettings | None = None) -> None:
    """Take the schema down to `revision` (`base` removes every table)."""
    command.downgrade(alembic_config(database_url, timeseries), revision)


def head_revisions() -> set[str]:
    """The revisions a current schema is at."""
    return set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions the connected database is at (empty before the first migration)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return set()
    return set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())  # noqa: S608 -- a constant

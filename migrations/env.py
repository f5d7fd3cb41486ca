"""Alembic environment: one synchronous connection, batch mode on SQLite so ALTERs work there too."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from core.db import ensure_sqlite_folder, install_sqlite_pragmas, sync_url
from core.models import Base
from core.settings import DatabaseSettings, TimeseriesSettings

config = context.config
# `shopfloor migrate` (core.schema) passes the URL and the TimescaleDB settings; a plain `alembic` run (alembic.ini
# at the repository root) reads them from the environment or .env here, once, so that the revisions never do.
url: str = config.attributes.get("database_url") or sync_url(DatabaseSettings().database_url).render_as_string(
    hide_password=False
)
config.attributes.setdefault("timeseries", TimeseriesSettings())
if config.config_file_name is not None:  # the plain `alembic` command: its logging comes from alembic.ini
    fileConfig(config.config_file_name, disable_existing_loggers=False)
    ensure_sqlite_folder(url)

target_metadata = Base.metadata


def run_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade --sql`)."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the revisions on a live connection."""
    engine = create_engine(url, poolclass=pool.NullPool)
    install_sqlite_pragmas(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

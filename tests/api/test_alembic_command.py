"""The plain `alembic` commands from the repository root (alembic.ini) on SQLite and PostgreSQL: the same schema as
`shopfloor migrate`, read from DATABASE_URL in the environment, and back down to nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from core.db import sync_url
from core.models import Base
from core.schema import head_revisions

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = str(Path(sys.executable).parent / "alembic")


def alembic(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "TIMESCALEDB"}}
    return subprocess.run(  # noqa: S603 -- the alembic console script of our own virtualenv
        [ALEMBIC, "-c", str(ROOT / "alembic.ini"), *args],
        env={**env, "DATABASE_URL": database_url, "TIMESCALEDB": "off"},
        cwd=cwd,  # an empty folder: no developer's .env decides the database
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_current_check_and_downgrade(empty_database_url: str, tmp_path: Path) -> None:
    url = empty_database_url
    upgraded = alembic("upgrade", "head", database_url=url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    current = alembic("current", database_url=url, cwd=tmp_path)
    assert current.returncode == 0, current.stderr
    assert {line.split()[0] for line in current.stdout.splitlines() if line.strip()} == head_revisions()
    # What `revision --autogenerate` would compare: the models and the migrated schema agree.
    checked = alembic("check", database_url=url, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tables(url) == {*Base.metadata.tables, "alembic_version"}  # every table of the models, as `migrate` makes
    stepped = alembic("downgrade", "-1", database_url=url, cwd=tmp_path)
    assert stepped.returncode == 0, stepped.stderr
    emptied = alembic("downgrade", "base", database_url=url, cwd=tmp_path)
    assert emptied.returncode == 0, emptied.stderr
    assert tables(url) == {"alembic_version"}

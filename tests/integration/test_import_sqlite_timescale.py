"""`shopfloor import-sqlite` into TimescaleDB (the WASM server of the timescale tier): hypertable and rollups."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cli.transfer import TransferFailed, import_sqlite
from core.db import sync_url
from core.schema import upgrade
from tests.support.sqlite_source import READINGS_PER_TAG, all_rows, fill
from tests.support.timescale import running_timescale

pytestmark = pytest.mark.timescale


@pytest.fixture(scope="module")
def timescale_target() -> Iterator[str]:
    """A migrated TimescaleDB of this module's own (the WASM server has a single database)."""
    with running_timescale() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("import-timescale") / "shopfloor.db"
    fill(path)
    return path


def scalar(url: str, sql: str) -> object:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def materialised_rows(url: str, view: str) -> object:
    """Rows the continuous aggregate has materialised (real-time buckets computed at query time not counted)."""
    query = (
        "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "  # noqa: S608 -- the test's own view names
        f"FROM timescaledb_information.continuous_aggregates WHERE view_name = '{view}'"
    )
    table = scalar(url, query)
    return scalar(url, f"SELECT count(*) FROM {table}")  # noqa: S608 -- a name from the catalog


def test_import_into_a_hypertable_refreshes_the_rollups_and_force_and_rollback_work(
    source: Path, timescale_target: str, tmp_path: Path
) -> None:
    assert scalar(timescale_target, "SELECT count(*) FROM timescaledb_information.hypertables") == 1

    report = import_sqlite(source, timescale_target)

    assert report.timescaledb
    assert sorted(report.refreshed_views) == ["public.reading_1h", "public.reading_1m"]
    assert all(entry.checksum_ok for entry in report.tables)
    imported = all_rows(timescale_target)
    assert imported == all_rows(f"sqlite:///{source}")
    # 3 tags x 300 one-second readings from 08:00:00 of press 4, plus one reading each of machines 999 and 9, and
    # machine 9's torque_nm (one bad, one uncertain reading) in a bucket of its own.
    assert materialised_rows(timescale_target, "reading_1m") == 3 * 5 + 3
    assert materialised_rows(timescale_target, "reading_1h") == 3 + 3
    # The rollups count good values only (the orphan and the largest float among them); the bad and the uncertain
    # reading are counted apart.
    assert scalar(timescale_target, "SELECT sum(count) FROM reading_1m") == 3 * READINGS_PER_TAG + 2
    assert scalar(timescale_target, "SELECT sum(not_good) FROM reading_1m") == 2

    forced = import_sqlite(source, timescale_target, force=True)
    assert forced.emptied_first
    assert all_rows(timescale_target) == imported

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(source.read_bytes())
    with sqlite3.connect(corrupt) as connection:
        connection.execute("UPDATE reading SET tag = ? WHERE tag = 'orphan'", ("t" * 100,))
    connection.close()
    with pytest.raises(TransferFailed, match="table reading"):
        import_sqlite(corrupt, timescale_target, force=True)
    assert all_rows(timescale_target) == imported

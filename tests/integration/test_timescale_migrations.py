"""Our migrations, write path and rollup queries on PostgreSQL with TimescaleDB (the WASM server of the test tier)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from core.contract import TagReading as ReadingValue
from core.contract import Telemetry
from core.db import async_url, sync_url
from core.ingest import IngestBatch, MachineRegistry, write_batch
from core.models import Base
from core.schema import downgrade, upgrade
from core.timeseries import Backend, backend_of
from tests.support.timescale import running_timescale
from tests.support.timeseries import T0, assert_same, bucketed, generated, naive

pytestmark = pytest.mark.timescale


@pytest.fixture(scope="module")
def timescale_db() -> Iterator[str]:
    """A TimescaleDB server of this module's own (the WASM server has a single database)."""
    with running_timescale() as url:
        yield url


def execute(url: str, *statements: str) -> None:
    engine = create_engine(sync_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> object:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_migrations_build_the_timescaledb_branch_and_undo_it(timescale_db: str) -> None:
    upgrade(timescale_db)
    assert (
        scalar(
            timescale_db, "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'reading'"
        )
        == 1
    )
    assert (
        scalar(
            timescale_db,
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'reading'",
        )
        is True
    )
    segments = scalar(
        timescale_db,
        "SELECT string_agg(attname, ',' ORDER BY segmentby_column_index) "
        "FROM timescaledb_information.compression_settings "
        "WHERE hypertable_name = 'reading' AND segmentby_column_index IS NOT NULL",
    )
    assert segments == "machine_id,tag"
    views = scalar(
        timescale_db,
        "SELECT string_agg(view_name, ',' ORDER BY view_name) FROM timescaledb_information.continuous_aggregates",
    )
    assert views == "reading_1h,reading_1m"
    jobs = scalar(
        timescale_db,
        "SELECT string_agg(proc_name, ',' ORDER BY proc_name) FROM timescaledb_information.jobs "
        "WHERE proc_name IN ('policy_compression', 'policy_refresh_continuous_aggregate', 'policy_retention')",
    )
    assert jobs == "policy_compression,policy_refresh_continuous_aggregate,policy_refresh_continuous_aggregate"
    # Revision 0006 rebuilt the rollups over good values, with the count of the others.
    columns = (
        "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
        "WHERE table_name = '{}'"
    )
    assert scalar(timescale_db, columns.format("reading_1m")) == "avg,bucket,count,last,machine_id,max,min,not_good,tag"
    downgrade(timescale_db, "0005")
    assert scalar(timescale_db, columns.format("reading_1m")) == "avg,bucket,count,last,machine_id,max,min,tag"
    assert scalar(timescale_db, "SELECT compression_enabled FROM timescaledb_information.hypertables") is True
    # A plant with history upgrades: its old rollups are kept (renamed, frozen), the new ones filled from the raw
    # readings at once (without the refresh, the policies would fill only their last hours).
    execute(
        timescale_db,
        "INSERT INTO machine (id, site, code, name, auto_registered) VALUES (1, 'p', 'm', 'm', false)",
        "INSERT INTO reading (machine_id, tag, ts, value) "
        "SELECT 1, 't', now() - make_interval(hours => i), i FROM generate_series(1, 24 * 30) AS i",
        "CALL refresh_continuous_aggregate('reading_1h', NULL, NULL)",
    )
    upgrade(timescale_db)
    assert scalar(timescale_db, "SELECT count(*) FROM reading_1h_v1") == 24 * 30
    materialised = scalar(
        timescale_db,
        "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
        "FROM timescaledb_information.continuous_aggregates WHERE view_name = 'reading_1h'",
    )
    assert scalar(timescale_db, f"SELECT count(*) FROM {materialised}") == 24 * 30  # noqa: S608 -- TimescaleDB's name
    assert scalar(timescale_db, "SELECT sum(count) FROM reading_1h WHERE machine_id = 1") == 24 * 30
    downgrade(timescale_db, "0005")  # the kept rollups come back under their names, with their policy
    assert scalar(timescale_db, "SELECT count(*) FROM reading_1h") == 24 * 30
    assert scalar(timescale_db, "SELECT to_regclass('reading_1h_v1')") is None
    execute(timescale_db, "DELETE FROM reading", "DELETE FROM machine")
    upgrade(timescale_db)
    # The models and the revisions agree here too (views and TimescaleDB's own schemas are not tables of ours).
    engine = create_engine(sync_url(timescale_db), poolclass=NullPool)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    engine.dispose()

    downgrade(timescale_db, "base")
    engine = create_engine(sync_url(timescale_db), poolclass=NullPool)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    assert scalar(timescale_db, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == 0
    upgrade(timescale_db)
    assert scalar(timescale_db, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == 2


async def test_write_path_and_rollups_match_python(timescale_db: str) -> None:
    upgrade(timescale_db)
    rows = generated(seed=7, count=900)
    engine = create_async_engine(async_url(timescale_db), poolclass=NullPool)
    try:
        telemetry = Telemetry("p", "m", None, [ReadingValue(ts, tag, value) for tag, ts, value in rows], [])
        async with engine.begin() as conn:
            result = await write_batch(
                conn, IngestBatch(telemetry=[telemetry]), registry=MachineRegistry(auto_register=True)
            )
        assert (result.readings_offered, result.readings_inserted) == (900, 900)
        async with engine.begin() as conn:
            again = await write_batch(
                conn, IngestBatch(telemetry=[telemetry]), registry=MachineRegistry(auto_register=True)
            )
        assert again.duplicates == 900
        machine_id = result.machine_ids[("p", "m")]
        start, end = T0 + timedelta(minutes=1), T0 + timedelta(minutes=50)
        async with engine.connect() as conn:
            assert await backend_of(conn) is Backend.TIMESCALEDB
            for bucket in (timedelta(minutes=1), timedelta(hours=1), timedelta(minutes=5)):
                # Nothing is materialised yet: real-time aggregation answers from `reading`.
                series = await bucketed(
                    conn, machine_id=machine_id, tags=["temp", "pressure"], start=start, end=end, bucket=bucket
                )
                expected = [row for row in naive(rows, start, end, bucket) if row.tag in {"temp", "pressure"}]
                assert_same(series, expected)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("CALL refresh_continuous_aggregate('reading_1m', NULL, NULL)"))
        async with engine.connect() as conn:
            materialised = await bucketed(
                conn, machine_id=machine_id, tags=["speed"], start=start, end=end, bucket=timedelta(minutes=1)
            )
        assert_same(materialised, [row for row in naive(rows, start, end, timedelta(minutes=1)) if row.tag == "speed"])
    finally:
        await engine.dispose()

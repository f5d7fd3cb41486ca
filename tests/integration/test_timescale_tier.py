"""The timescale tier: a real PostgreSQL 17 + TimescaleDB 2.23 (compiled to WASM) that the session starts.

The server has one backend, so every test opens one connection at a time and closes it before the next.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import NullPool, create_engine, text

from tests.support.timescale import running_timescale

pytestmark = pytest.mark.timescale

BASE = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
MACHINES = (1, 2)
TAGS = ("barrel_temp_c", "cycle_time_s")
SAMPLES = 75  # per machine and tag, 7 s apart: 300 rows over 9 minutes, so buckets hold 8 or 9 samples

Row = tuple[datetime, int, str, float]
Bucket = tuple[datetime, int, str]


@pytest.fixture(scope="session")
def timescale_url() -> Iterator[str]:
    """The TimescaleDB WASM server for the session; if it cannot start, these tests fail (never skip)."""
    with running_timescale() as url:
        yield url


def _rows() -> list[Row]:
    return [
        (BASE + timedelta(seconds=7 * i), machine, tag, round(200 + 10 * machine + (i * 37 % 23) / 4, 2))
        for machine in MACHINES
        for tag in TAGS
        for i in range(SAMPLES)
    ]


def _insert(conn: psycopg.Connection, table: str, rows: Sequence[Row]) -> None:
    """One multi-row INSERT (the server cannot take COPY from every client, and executemany is slower)."""
    values = sql.SQL(", ").join(sql.SQL("(%s, %s, %s, %s)") for _ in rows)
    statement = sql.SQL("INSERT INTO {} (ts, machine_id, tag, value) VALUES {}").format(sql.Identifier(table), values)
    conn.execute(statement, [value for row in rows for value in row])


def _minute_rollup(rows: Sequence[Row]) -> dict[Bucket, tuple[int, float, float, float]]:
    groups: defaultdict[Bucket, list[float]] = defaultdict(list)
    for ts, machine, tag, value in rows:
        groups[(ts.replace(second=0, microsecond=0), machine, tag)].append(value)
    return {key: (len(values), min(values), max(values), sum(values) / len(values)) for key, values in groups.items()}


@pytest.fixture(scope="module")
def readings(timescale_url: str) -> list[Row]:
    """A `reading` hypertable filled with a few hundred rows, made in ONE transaction as Alembic would."""
    rows = _rows()
    with psycopg.connect(timescale_url) as conn:  # commits when the block ends
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(
            "CREATE TABLE reading (ts timestamptz NOT NULL, machine_id int NOT NULL, tag text NOT NULL, "
            "value double precision NOT NULL, UNIQUE (machine_id, tag, ts))"
        )
        conn.execute("SELECT create_hypertable('reading', by_range('ts', INTERVAL '1 day'))")
        _insert(conn, "reading", rows)
    return rows


def test_extension_is_available_and_installed(timescale_url: str, readings: list[Row]) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchall()
        hypertables = conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()
        stored = conn.execute("SELECT count(*) FROM reading").fetchone()
    assert len(available) == 1
    default_version, installed_version = available[0]
    assert installed_version == default_version
    assert installed_version.startswith("2.23")
    assert ("reading",) in hypertables
    assert stored == (len(readings),)


def test_time_bucket_rollup_matches_python(timescale_url: str, readings: list[Row]) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        result = conn.execute(
            "SELECT time_bucket('1 minute', ts), machine_id, tag, count(*), min(value), max(value), avg(value) "
            "FROM reading GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
    got = {(bucket, machine, tag): (n, low, high, mean) for bucket, machine, tag, n, low, high, mean in result}
    expected = _minute_rollup(readings)
    assert got.keys() == expected.keys()
    for key, (n, low, high, mean) in expected.items():
        assert got[key][:3] == (n, low, high), key
        assert got[key][3] == pytest.approx(mean), key


def test_continuous_aggregate_created_in_a_transaction_and_refreshed(timescale_url: str, readings: list[Row]) -> None:
    with psycopg.connect(timescale_url) as conn:  # a migration's transaction: WITH NO DATA is allowed in one
        conn.execute(
            "CREATE MATERIALIZED VIEW reading_1m WITH (timescaledb.continuous) AS "
            "SELECT time_bucket('1 minute', ts) AS bucket, machine_id, tag, count(*) AS n, avg(value) AS mean "
            "FROM reading GROUP BY 1, 2, 3 WITH NO DATA"
        )
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM reading_1m").fetchone()
        conn.execute("CALL refresh_continuous_aggregate('reading_1m', NULL, NULL)")
        result = conn.execute("SELECT bucket, machine_id, tag, n, mean FROM reading_1m").fetchall()
    assert before == (0,)
    expected = _minute_rollup(readings)
    got = {(bucket, machine, tag): (n, mean) for bucket, machine, tag, n, mean in result}
    assert got.keys() == expected.keys()
    for key, (n, _low, _high, mean) in expected.items():
        assert got[key] == (n, pytest.approx(mean)), key


def test_compression_and_retention_policies_are_scheduled(timescale_url: str, readings: list[Row]) -> None:
    with psycopg.connect(timescale_url) as conn:
        conn.execute(
            "ALTER TABLE reading SET (timescaledb.compress, timescaledb.compress_segmentby = 'machine_id, tag')"
        )
        conn.execute("SELECT add_compression_policy('reading', INTERVAL '7 days')")
        conn.execute("SELECT add_retention_policy('reading', INTERVAL '90 days')")
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT proc_name, config FROM timescaledb_information.jobs WHERE hypertable_name = 'reading'"
        ).fetchall()
    configs: dict[str, dict[str, str]] = dict(jobs)
    assert configs.keys() == {"policy_compression", "policy_retention"}
    assert configs["policy_compression"]["compress_after"] == "7 days"
    assert configs["policy_retention"]["drop_after"] == "90 days"


def test_policies_run_on_demand(timescale_url: str, readings: list[Row]) -> None:
    # No background workers run in WASM: a test that needs a policy's effect calls run_job() itself.
    now = datetime.now(UTC)
    rows = [(now - timedelta(hours=hour), 1, "t", float(hour)) for hour in range(10 * 24)]
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE policy_demo (ts timestamptz NOT NULL, machine_id int, tag text, value float8)")
        conn.execute("SELECT create_hypertable('policy_demo', by_range('ts', INTERVAL '1 day'))")
        conn.execute("ALTER TABLE policy_demo SET (timescaledb.compress, timescaledb.compress_segmentby = 'tag')")
        _insert(conn, "policy_demo", rows)
        compression = conn.execute("SELECT add_compression_policy('policy_demo', INTERVAL '2 days')").fetchone()
        retention = conn.execute("SELECT add_retention_policy('policy_demo', INTERVAL '5 days')").fetchone()
        assert compression is not None
        assert retention is not None
        conn.execute("CALL run_job(%s)", compression)
        conn.execute("CALL run_job(%s)", retention)
        oldest = conn.execute("SELECT min(ts) FROM policy_demo").fetchone()
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'policy_demo' AND is_compressed"
        ).fetchone()
    assert oldest is not None
    assert oldest[0] >= now - timedelta(days=6)  # chunks are whole days: up to one more day stays
    assert compressed is not None
    assert compressed[0] >= 2


def test_sqlalchemy_engine_queries_the_hypertable(timescale_url: str, readings: list[Row]) -> None:
    engine = create_engine(timescale_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"))
            count = conn.execute(text("SELECT count(*) FROM reading WHERE machine_id = :machine"), {"machine": 1})
            assert version.scalar_one().startswith("2.23")
            assert count.scalar_one() == sum(1 for row in readings if row[1] == 1)
    finally:
        engine.dispose()


def test_statements_larger_than_a_socket_read(timescale_url: str) -> None:
    # 5,000 rows x 4 parameters is one ~200 KB Bind message; it reaches PGlite only once it is complete.
    rows = [(BASE + timedelta(seconds=i), 3, "big", float(i)) for i in range(5000)]
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big_insert (ts timestamptz, machine_id int, tag text, value float8)")
        _insert(conn, "big_insert", rows)
        stored = conn.execute("SELECT count(*), sum(value) FROM big_insert").fetchone()
    assert stored == (len(rows), sum(row[3] for row in rows))


def test_copy_from_stdin_into_staging_then_hypertable(timescale_url: str, readings: list[Row]) -> None:
    # The ingestor's path: binary COPY into a temp staging table, then INSERT … ON CONFLICT DO NOTHING.
    rows = [(9, "copied", BASE + timedelta(seconds=i), float(i)) for i in range(1000)]
    inserted = []
    with psycopg.connect(timescale_url) as conn:
        conn.execute(
            "CREATE TEMP TABLE reading_staging (machine_id integer, tag varchar(64), ts timestamptz, "
            "value double precision) ON COMMIT DELETE ROWS"
        )
        for _ in range(2):
            with conn.cursor() as cursor:
                with cursor.copy(
                    "COPY reading_staging (machine_id, tag, ts, value) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int4", "varchar", "timestamptz", "float8"])
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(
                    "INSERT INTO reading (machine_id, tag, ts, value) SELECT machine_id, tag, ts, value "
                    "FROM reading_staging ON CONFLICT DO NOTHING"
                )
                inserted.append(cursor.rowcount)
            conn.commit()
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        stored = conn.execute("SELECT count(*) FROM reading WHERE tag = 'copied'").fetchone()
        conn.execute("DELETE FROM reading WHERE tag = 'copied'")
    assert inserted == [len(rows), 0]
    assert stored == (len(rows),)


def test_a_closed_connection_leaves_nothing_behind(timescale_url: str) -> None:
    leaky = psycopg.connect(timescale_url)
    leaky.execute("CREATE TABLE never_committed (a int)")
    leaky.execute("SET TIME ZONE 'Asia/Tokyo'")
    for i in range(6):  # psycopg prepares a statement from its 5th run on, as `_pg3_0`
        leaky.execute("SELECT %s::int", (i,))
    leaky.close()
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        table = conn.execute("SELECT to_regclass('never_committed')").fetchone()
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        settings = conn.execute("SELECT current_setting('TimeZone'), current_setting('search_path')").fetchone()
        for i in range(6):  # the same names again: "prepared statement _pg3_0 already exists" if they leaked
            conn.execute("SELECT %s::int", (i,))
    assert table == (None,)
    assert prepared == (0,)
    assert settings == ("GMT", '"$user", public')

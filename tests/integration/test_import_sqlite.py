"""`shopfloor import-sqlite`: a migrated SQLite database with every table filled, into the real PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cli.transfer import TransferFailed, TransferInputError, import_sqlite, shopfloor_tables
from core.db import sync_url
from core.models import (
    DeadLetter,
    Role,
    UserAccount,
)
from core.schema import SEEDED_TABLES, upgrade
from tests.support.postgres import PostgresServer
from tests.support.sqlite_source import BINARY_PAYLOADS, READINGS_PER_TAG, T0, TURKISH, all_rows, fill

pytestmark = pytest.mark.postgres

SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("import") / "shopfloor.db"
    fill(path)
    return path


@pytest.fixture
def target(postgres_server: PostgresServer) -> str:
    url = postgres_server.fresh_database(f"import_{os.urandom(4).hex()}")
    upgrade(url)
    return url


@pytest.fixture
def corrupt_source(tmp_path: Path, source: Path) -> Path:
    """The good database plus one row PostgreSQL refuses (a type longer than VARCHAR(64); SQLite keeps it)."""
    path = tmp_path / "corrupt.db"
    path.write_bytes(source.read_bytes())
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO issue (id, stage_id, type, description, status, created_at) "
            "VALUES (63, 31, ?, 'x', 'open', '2026-11-26 08:00:00.000000')",
            ("t" * 100,),
        )
    connection.close()
    return path


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SHOPFLOOR_", "DATABASE_"))}
    env.update(SHOPFLOOR_ENV="test", DATABASE_URL=database_url, LOG_FORMAT="json")
    return subprocess.run(  # noqa: S603 -- our own console script
        [SHOPFLOOR, "import-sqlite", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_every_table_of_the_source_is_filled(source: Path) -> None:
    rows = all_rows(f"sqlite:///{source}")
    assert all(rows.values()), [name for name, table_rows in rows.items() if not table_rows]


def test_import_copies_every_row_exactly(source: Path, target: str) -> None:
    report = import_sqlite(source, target)

    assert all_rows(target) == all_rows(f"sqlite:///{source}")
    assert [entry.table for entry in report.tables] == [table.name for table in shopfloor_tables()]
    assert all(entry.checksum_ok for entry in report.tables)
    counts = {entry.table: entry.rows for entry in report.tables}
    assert counts["reading"] == 3 * READINGS_PER_TAG + 4  # the orphan, the largest float, a bad and an uncertain one
    assert counts["dead_letter"] == len(BINARY_PAYLOADS)
    assert not report.emptied_first
    assert not report.timescaledb


def test_values_keep_their_meaning_in_postgresql(source: Path, target: str) -> None:
    import_sqlite(source, target)
    with psycopg.connect(target) as connection:
        full_name = connection.execute("SELECT full_name FROM user_account WHERE id = 3").fetchone()
        payloads = connection.execute("SELECT payload FROM dead_letter ORDER BY id").fetchall()
        login = connection.execute("SELECT last_login_at FROM user_account WHERE id = 12").fetchone()
        state = connection.execute("SELECT state FROM machine_state ORDER BY ts DESC LIMIT 1").fetchone()
    assert full_name == (TURKISH,)
    assert [bytes(payload) for (payload,) in payloads] == BINARY_PAYLOADS
    assert login is not None
    assert login[0] == T0 + timedelta(microseconds=1)
    assert state == ("alarm",)


def test_sequences_continue_after_the_highest_id(source: Path, target: str) -> None:
    import_sqlite(source, target)
    engine = create_engine(sync_url(target), poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            user = UserAccount(username="yeni", password_hash="h", role=Role.WORKER)
            letter = DeadLetter(source="mqtt", topic="t", payload=b"\x00", reason="r")
            session.add_all([user, letter])
            session.flush()
            assert user.id == 13
            assert letter.id == 131
        with engine.connect() as connection:
            for table, expected in (("machine", 10), ("work_order", 23), ("issue", 63), ("machine_api_key", 6)):
                next_id = connection.execute(text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")).scalar()
                assert next_id == expected, table
    finally:
        engine.dispose()


def test_a_non_empty_target_is_refused_and_force_replaces_it(source: Path, target: str) -> None:
    import_sqlite(source, target)
    with pytest.raises(TransferInputError, match=r"already holds rows.*--force"):
        import_sqlite(source, target)

    report = import_sqlite(source, target, force=True)

    assert report.emptied_first
    assert all_rows(target) == all_rows(f"sqlite:///{source}")


def test_a_corrupt_row_midway_leaves_an_empty_target_empty(corrupt_source: Path, target: str) -> None:
    with pytest.raises(TransferFailed, match=r"table issue: .*too long.*rolled back"):
        import_sqlite(corrupt_source, target)
    # As migrated: nothing but the default loss reasons its migration seeds.
    assert {name for name, rows in all_rows(target).items() if rows} == SEEDED_TABLES


def test_a_failed_forced_import_keeps_the_previous_data(source: Path, corrupt_source: Path, target: str) -> None:
    import_sqlite(source, target)
    before = all_rows(target)
    with pytest.raises(TransferFailed, match="table issue"):
        import_sqlite(corrupt_source, target, force=True)
    assert all_rows(target) == before


def test_unmigrated_target_is_refused(source: Path, postgres_server: PostgresServer) -> None:
    empty = postgres_server.fresh_database(f"import_empty_{os.urandom(4).hex()}")
    with pytest.raises(TransferInputError, match=r"no revision.*shopfloor migrate"):
        import_sqlite(source, empty)


# --- the command ------------------------------------------------------------------------------------------


def test_command_reports_every_table(source: Path, target: str) -> None:
    result = run_cli("--from", str(source), database_url=target)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for table in shopfloor_tables():
        [line] = [line for line in lines if line.split()[0] == table.name]
        assert "checksum ok" in line
        assert line.rstrip().endswith(" s")
    assert any(line.startswith("reading ") and " 904 rows" in line for line in lines)
    assert "imported" in lines[-1]


def test_command_refuses_a_non_empty_target_then_force_works(source: Path, target: str) -> None:
    assert run_cli("--from", str(source), "--to", target, database_url="sqlite:///unused.db").returncode == 0
    refused = run_cli("--from", str(source), "--to", target, database_url="sqlite:///unused.db")
    forced = run_cli("--from", str(source), "--to", target, "--force", database_url="sqlite:///unused.db")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "--force" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("emptied the target first")


def test_command_failure_midway_exits_1_with_one_line(corrupt_source: Path, target: str) -> None:
    result = run_cli("--from", str(corrupt_source), database_url=target)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "table issue" in line
    assert "unchanged" in line


@pytest.fixture
def bad_sources(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Inputs that are not an importable shopfloor database, with what the message must say."""
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    old = tmp_path / "old.db"
    upgrade(f"sqlite:///{old}", "0001")
    return {
        "missing": (tmp_path / "nope.db", "no such file"),
        "not-sqlite": (not_sqlite, "not a SQLite database"),
        "not-shopfloor": (other, "not a shopfloor database"),
        "old-revision": (old, "shopfloor migrate"),
    }


@pytest.mark.parametrize("case", ["missing", "not-sqlite", "not-shopfloor", "old-revision"])
def test_command_bad_source_exits_2_with_one_line(
    bad_sources: dict[str, tuple[Path, str]], case: str, target: str
) -> None:
    path, expected = bad_sources[case]
    result = run_cli("--from", str(path), database_url=target)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert expected in line
    assert {name for name, rows in all_rows(target).items() if rows} == SEEDED_TABLES  # as migrated


def test_command_refuses_a_sqlite_target(source: Path, tmp_path: Path) -> None:
    result = run_cli("--from", str(source), database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "must be PostgreSQL" in result.stderr

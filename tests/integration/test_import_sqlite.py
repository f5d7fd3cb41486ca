"""`shopfloor import-sqlite`: a migrated SQLite database with every table filled, into the real PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cli.transfer import TransferFailed, TransferInputError, import_sqlite, shopfloor_tables
from core.contract import MachineState
from core.db import install_sqlite_pragmas, sync_url
from core.models import (
    DeadLetter,
    Issue,
    IssueStatus,
    Machine,
    MachineApiKey,
    MachineLatest,
    MachineStateChange,
    Reading,
    Role,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    UserAccount,
    WorkOrder,
    WorkOrderStage,
)
from core.schema import upgrade
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres

SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")
T0 = datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC)
TURKISH = "Şükrü Çağlayan — İşçi ığüşöç ĞÜŞİÖÇ"
READINGS_PER_TAG = 300
BINARY_PAYLOADS = [b"\x00\xff\xfe\x80binary", b"", '{"ts": "yarın"}'.encode(), bytes(range(256))]


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(sync_url(f"sqlite:///{path}"), poolclass=NullPool)
    install_sqlite_pragmas(engine)
    return engine


def fill(path: Path) -> None:
    """A migrated SQLite database with rows in every table: gaps in ids, Turkish text, microseconds, binary."""
    upgrade(f"sqlite:///{path}")
    engine = sqlite_engine(path)
    with Session(engine) as session, session.begin():
        admin = UserAccount(id=3, username="admin", full_name=TURKISH, password_hash="$argon2id$x", role=Role.ADMIN)
        planner = UserAccount(
            id=7, username="planlamacı", full_name="Gülşen Öztürk", password_hash="$argon2id$y", role=Role.PLANNER
        )
        worker = UserAccount(
            id=12,
            username="işçi",
            full_name=None,
            password_hash="$argon2id$z",
            role=Role.WORKER,
            is_active=False,
            last_login_at=T0 + timedelta(microseconds=1),
        )
        session.add_all([admin, planner, worker])
        press = Machine(
            id=4, site="plant1", code="press-1", name="Enjeksiyon Presi 1", machine_type="injection",
            location="Hol A", ideal_cycle_time_s=12.5, online=True, status_changed_at=T0, last_seen_at=T0,
        )  # fmt: skip
        station = Machine(id=9, site="plant1", code="assembly-1", name="Montaj İstasyonu", auto_registered=True)
        session.add_all([press, station])
        session.flush()
        order = WorkOrder(
            id=21, product_code="KALIP-ÇŞ-01", lot_no="LOT-2026-0001", qty=500, planned_start=T0,
            planned_end=T0 + timedelta(hours=8), notes="Acil sipariş: müşteri İzmir", created_by_id=planner.id,
        )  # fmt: skip
        cancelled = WorkOrder(
            id=22, product_code="P-2", lot_no="LOT-2", qty=1, planned_start=T0, planned_end=T0 + timedelta(hours=1),
            cancelled_at=T0 + timedelta(minutes=5), cancelled_by_id=admin.id, cancel_reason="iptal",
        )  # fmt: skip
        session.add_all([order, cancelled])
        session.flush()
        injection = WorkOrderStage(
            id=31, work_order_id=order.id, position=1, stage_name="Enjeksiyon", planned_start=T0,
            planned_end=T0 + timedelta(minutes=30), machine_id=press.id, status=StageStatus.DONE,
            good_qty=480, scrap_qty=20,
        )  # fmt: skip
        assembly = WorkOrderStage(
            id=32, work_order_id=order.id, position=2, stage_name="Montaj", planned_start=T0 + timedelta(minutes=30),
            planned_end=T0 + timedelta(hours=8), status=StageStatus.PAUSED,
        )  # fmt: skip
        session.add_all([injection, assembly])
        session.flush()
        for number, (kind, minutes) in enumerate(
            [
                (StageEventKind.START, 0),
                (StageEventKind.PAUSE, 10),
                (StageEventKind.RESUME, 12),
                (StageEventKind.DONE, 29),
            ]
        ):
            session.add(
                StageEvent(
                    id=40 + number, stage_id=injection.id, kind=kind, user_id=worker.id,
                    at=T0 + timedelta(minutes=minutes, microseconds=number),
                    reason="kalıp değişimi" if number else None,
                )
            )  # fmt: skip
        session.add(StageEvent(id=50, stage_id=assembly.id, kind=StageEventKind.START, at=T0, user_id=None))
        session.add_all(
            [
                StageAssignment(stage_id=injection.id, user_id=worker.id, assigned_at=T0, assigned_by_id=planner.id),
                StageAssignment(stage_id=assembly.id, user_id=worker.id, assigned_at=T0, assigned_by_id=None),
            ]
        )
        session.add_all(
            [
                Issue(
                    id=61, stage_id=injection.id, type="machine_breakdown", description="Hidrolik kaçak — ısı yüksek",
                    status=IssueStatus.RESOLVED, reported_by_id=worker.id, acked_at=T0 + timedelta(seconds=1),
                    acked_by_id=planner.id, ack_note="bakıldı", resolved_at=T0 + timedelta(seconds=2),
                    resolved_by_id=admin.id, resolution_note="conta değişti", created_at=T0,
                ),
                Issue(id=62, stage_id=assembly.id, type="quality", description="çizik", created_at=T0),
            ]
        )  # fmt: skip
        for tag, base in (("barrel_temp_c", 212.5), ("cycle_count", 10234.0), ("estop", 0.0)):
            for step in range(READINGS_PER_TAG):
                session.add(
                    Reading(
                        machine_id=press.id, tag=tag, value=base + step / 3,
                        ts=T0 + timedelta(seconds=step, microseconds=step * 7),
                    )
                )  # fmt: skip
        # A reading of a machine the registry no longer knows: `reading` has no foreign key by design.
        session.add(Reading(machine_id=999, tag="orphan", ts=T0, value=-0.0))
        session.add(Reading(machine_id=station.id, tag="big", ts=T0, value=1.7976931348623157e308))
        session.add_all(
            [
                MachineLatest(machine_id=press.id, tag="barrel_temp_c", ts=T0 + timedelta(seconds=299), value=312.1),
                MachineLatest(machine_id=station.id, tag="torque_nm", ts=T0, value=-1.25),
            ]
        )
        session.add_all(
            [
                MachineStateChange(machine_id=press.id, ts=T0, state=MachineState.RUNNING),
                MachineStateChange(
                    machine_id=press.id, ts=T0 + timedelta(microseconds=999999), state=MachineState.ALARM
                ),
                MachineStateChange(machine_id=station.id, ts=T0, state=MachineState.OFF),
            ]
        )
        for number, payload in enumerate(BINARY_PAYLOADS):
            session.add(
                DeadLetter(
                    id=100 + number * 10, received_at=T0 + timedelta(microseconds=number), source="mqtt",
                    topic=f"shopfloor/v1/plant1/press-{number}/telemetry", payload=payload,
                    reason=f"bozuk yük {number}",
                )
            )  # fmt: skip
        session.add(
            MachineApiKey(
                id=5, machine_id=station.id, prefix="sfk_ab12", key_hash="a" * 64, created_at=T0,
                created_by_id=admin.id, revoked_at=T0 + timedelta(days=1),
            )
        )  # fmt: skip
    engine.dispose()


def all_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every shopfloor table, in primary-key order, as the ORM types read them."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {
                table.name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key))]
                for table in shopfloor_tables()
            }
    finally:
        engine.dispose()


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
    assert counts["reading"] == 3 * READINGS_PER_TAG + 2
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
    assert all(not rows for rows in all_rows(target).values())


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
    assert any(line.startswith("reading ") and " 902 rows" in line for line in lines)
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
    assert all(not rows for rows in all_rows(target).values())


def test_command_refuses_a_sqlite_target(source: Path, tmp_path: Path) -> None:
    result = run_cli("--from", str(source), database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "must be PostgreSQL" in result.stderr

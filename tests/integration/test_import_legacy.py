"""`shopfloor import-legacy`: the original app's database.db, with every edge case, into SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool

from cli.legacy import CHECKSUM_COLUMNS, LegacyReport, import_legacy
from cli.transfer import TableChecksum, TransferInputError
from core.db import create_engine_from_settings, sync_url
from core.models import Base, IssueStatus, Role, StageStatus
from core.schema import upgrade
from core.settings import DatabaseSettings, TrackingSettings
from tests.support.api import Api, make_settings, running_api
from tests.support.db import committed
from tests.support.legacy_app import PASSWORDS, PLANT_ZONE, PLURAL, SINGULAR, TableNames, build_plant

SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")
ZONE = ZoneInfo(PLANT_ZONE)
TYPES = TrackingSettings().issue_types


def utc(text: str) -> datetime:
    """A plant-local (Istanbul, UTC+3) wall-clock time as the UTC instant Shopfloor stores."""
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).astimezone(UTC)


@pytest.fixture(params=[PLURAL, SINGULAR], ids=["plural", "singular"])
def names(request: pytest.FixtureRequest) -> TableNames:
    """One of the spellings the original app's tables may have."""
    spelling: TableNames = request.param
    return spelling


@pytest.fixture
def source(names: TableNames, tmp_path: Path) -> Path:
    """The plant's original database.db."""
    path = tmp_path / "database.db"
    build_plant(path, names)
    return path


@pytest.fixture
def target(empty_database_url: str) -> str:
    """A freshly migrated, empty Shopfloor database (SQLite or PostgreSQL)."""
    upgrade(empty_database_url)
    return empty_database_url


def run_import(source: Path, target: str, **options: Any) -> LegacyReport:
    return import_legacy(source, target, zone=ZONE, issue_types=TYPES, **options)


def rows(url: str, table: str, order_by: str = "id") -> list[dict[str, Any]]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            query = select(Base.metadata.tables[table]).order_by(order_by)
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def decisions(report: LegacyReport) -> set[tuple[str, Any, str, str]]:
    return {(d["table"], d["id"], d["action"], d["code"]) for d in report.decisions}


EXPECTED_DECISIONS = {
    ("users", 2, "fixed", "username_lower_cased"),
    ("users", 4, "fixed", "duplicate_username"),
    ("users", 5, "fixed", "role_unknown"),
    ("users", 6, "fixed", "password_hash_unknown"),
    ("users", 7, "fixed", "username_unusable"),
    ("work_orders", 11, "fixed", "qty_invalid"),
    ("work_orders", 12, "fixed", "lot_no_missing"),
    ("work_orders", 12, "fixed", "planned_window_invalid"),
    ("work_orders", 13, "fixed", "planned_start_missing"),
    ("work_orders", 13, "fixed", "planned_end_missing"),
    ("work_orders", 14, "fixed", "product_code_missing"),
    ("work_orders", 14, "fixed", "qty_invalid"),
    ("stages", 102, "fixed", "planned_start_missing"),
    ("stages", 102, "fixed", "planned_end_missing"),
    ("stages", 102, "fixed", "done_without_end"),
    ("stages", 103, "fixed", "planned_start_missing"),
    ("stages", 103, "fixed", "planned_end_missing"),
    ("stages", 103, "fixed", "in_progress_without_start"),
    ("stages", 104, "fixed", "end_before_start"),
    ("stages", 104, "fixed", "done_without_end"),
    ("stages", 105, "skipped", "work_order_missing"),
    ("stages", 106, "fixed", "status_unknown"),
    ("stages", 107, "fixed", "stage_name_missing"),
    ("stages", 108, "fixed", "planned_start_missing"),
    ("stages", 108, "fixed", "planned_end_missing"),
    ("issues", 201, "skipped", "stage_missing"),
    ("issues", 202, "skipped", "stage_missing"),
    ("issues", 203, "fixed", "reporter_missing"),
    ("issues", 204, "fixed", "type_unknown"),
    ("issues", 205, "fixed", "type_normalised"),
    ("issues", 206, "fixed", "description_missing"),
    ("issues", 206, "fixed", "created_at_missing"),
}


def test_the_plant_history_is_imported_with_its_ids_and_every_decision_reported(
    names: TableNames, source: Path, target: str
) -> None:
    report = run_import(source, target)

    assert report.detected == {
        "users": names.users,
        "work_orders": names.work_orders,
        "stages": names.stages,
        "issues": names.issues,
    }
    assert decisions(report) == EXPECTED_DECISIONS
    counts = {t.table: (t.read, t.imported, t.skipped, t.fixed) for t in report.tables}
    assert counts == {
        "user_account": (7, 7, 0, 5),
        "work_order": (5, 5, 0, 4),
        "work_order_stage": (9, 8, 1, 6),
        "stage_event": (0, 8, 0, 0),
        "issue": (7, 5, 2, 4),
    }
    assert report.ok

    users = {row["id"]: row for row in rows(target, "user_account")}
    assert {i: (u["username"], u["role"], u["is_active"]) for i, u in users.items()} == {
        1: ("admin", Role.ADMIN, True),
        2: ("planlama", Role.PLANNER, True),
        3: ("mehmet", Role.WORKER, True),
        4: ("mehmet-4", Role.WORKER, True),
        5: ("ayse", Role.WORKER, True),
        6: ("eski", Role.WORKER, False),
        7: ("user-7", Role.PLANNER, False),
    }
    assert users[6]["password_hash"] == "md5$9f86d081884c7d65"  # kept as it was

    orders = {row["id"]: row for row in rows(target, "work_order")}
    assert sorted(orders) == [10, 11, 12, 13, 14]
    assert (orders[10]["qty"], orders[10]["planned_start"], orders[10]["planned_end"]) == (
        500,
        utc("2026-11-20T08:00"),
        utc("2026-11-20T16:00"),
    )
    assert orders[10]["notes"] is None
    assert orders[11]["qty"] == 1
    assert "qty was 0" in orders[11]["notes"]
    assert (orders[13]["planned_start"], orders[13]["planned_end"]) == (
        utc("2026-11-24T08:00"),
        utc("2026-11-24T11:00"),
    )

    stages = {row["id"]: row for row in rows(target, "work_order_stage")}
    assert {i: (s["work_order_id"], s["position"], s["status"]) for i, s in stages.items()} == {
        100: (10, 1, StageStatus.DONE),
        101: (10, 2, StageStatus.IN_PROGRESS),
        102: (11, 1, StageStatus.DONE),
        103: (11, 2, StageStatus.IN_PROGRESS),
        104: (12, 1, StageStatus.DONE),
        106: (13, 1, StageStatus.IN_PROGRESS),
        107: (13, 2, StageStatus.DONE),
        108: (14, 1, StageStatus.PLANNED),
    }
    events = [(e["stage_id"], e["kind"].value, e["at"]) for e in rows(target, "stage_event", "stage_id")]
    assert sorted(events) == sorted(
        [
            (100, "start", utc("2026-11-20T08:05")),
            (100, "done", utc("2026-11-20T08:40")),
            (101, "start", utc("2026-11-20T09:00")),
            (102, "done", utc("2026-11-21T08:10")),  # done, end unknown: at its start
            (104, "done", utc("2026-11-22T09:30")),  # its end was before its start: left out
            (106, "start", utc("2026-11-24T08:15")),
            (107, "start", utc("2026-11-24T10:00")),
            (107, "done", utc("2026-11-24T10:50")),
        ]
    )

    issues = {row["id"]: row for row in rows(target, "issue")}
    assert {i: (r["stage_id"], r["type"], r["reported_by_id"], r["status"]) for i, r in issues.items()} == {
        200: (100, "quality", 3, IssueStatus.OPEN),
        203: (101, "safety", None, IssueStatus.OPEN),
        204: (101, "other", 4, IssueStatus.OPEN),
        205: (100, "quality", 2, IssueStatus.OPEN),
        206: (102, "other", None, IssueStatus.OPEN),
    }
    assert issues[204]["description"] == "[Makine arızası] hidrolik kaçak"
    assert issues[200]["created_at"] == utc("2026-11-20T08:20")
    assert issues[206]["created_at"] == utc("2026-11-21T08:10")  # its stage's start

    # The report's checksums are those of the rows now in the target.
    for table in report.tables:
        columns = CHECKSUM_COLUMNS[table.table]
        checksum = TableChecksum()
        for row in rows(target, table.table):
            checksum.add([row[column] for column in columns])
        assert (checksum.rows, checksum.hexdigest) == (table.imported, table.checksum)


def test_a_second_run_is_refused_and_with_skip_existing_adds_nothing(source: Path, target: str) -> None:
    first = run_import(source, target)
    before = {table: rows(target, table) for table in CHECKSUM_COLUMNS}

    with pytest.raises(TransferInputError, match=r"already holds tracking rows .*--skip-existing"):
        run_import(source, target)
    again = run_import(source, target, skip_existing=True)

    assert {table: rows(target, table) for table in CHECKSUM_COLUMNS} == before
    assert all(table.imported == 0 for table in again.tables)
    assert {t.table: t.skipped for t in again.tables if t.source_table} == {
        t.table: t.read for t in first.tables if t.source_table
    }
    # The rows skipped the first time are skipped again for the same reason; everything else is already there.
    assert {code for _, _, _, code in decisions(again)} == {"already_in_target", "work_order_missing", "stage_missing"}


def test_skip_existing_imports_what_is_missing(names: TableNames, source: Path, target: str, tmp_path: Path) -> None:
    run_import(source, target)
    # A later copy of the plant's file: one more work order with a stage, started.
    grown = tmp_path / "grown.db"
    grown.write_bytes(source.read_bytes())
    with closing(sqlite3.connect(grown)) as connection, connection:
        connection.execute(
            f"INSERT INTO \"{names.work_orders}\" VALUES (15, 'P-9', 'LOT-15', 3, '2026-11-25 08:00:00.000000', "  # noqa: S608 -- test names
            "'2026-11-25 12:00:00.000000')"
        )
        connection.execute(
            f"INSERT INTO \"{names.stages}\" VALUES (109, 15, 'Enjeksiyon', NULL, NULL, "  # noqa: S608 -- test names
            "'2026-11-25 08:30:00.000000', NULL, 'in_progress')"
        )

    report = run_import(grown, target, skip_existing=True)

    assert {t.table: t.imported for t in report.tables} == {
        "user_account": 0,
        "work_order": 1,
        "work_order_stage": 1,
        "stage_event": 1,
        "issue": 0,
    }
    assert [row["id"] for row in rows(target, "work_order")] == [10, 11, 12, 13, 14, 15]
    assert len(rows(target, "stage_event")) == 9


def test_a_dry_run_checks_everything_and_writes_nothing(source: Path, target: str) -> None:
    report = run_import(source, target, dry_run=True)

    assert report.dry_run
    assert report.ok
    assert decisions(report) == EXPECTED_DECISIONS
    assert all(rows(target, table) == [] for table in CHECKSUM_COLUMNS)
    # And the real import afterwards gives the same rows and checksums.
    real = run_import(source, target)
    assert [(t.table, t.imported, t.checksum) for t in real.tables] == [
        (t.table, t.imported, t.checksum) for t in report.tables
    ]


def test_new_rows_after_the_import_get_ids_past_the_imported_ones(source: Path, target: str) -> None:
    run_import(source, target)
    engine = create_engine(sync_url(target), poolclass=NullPool)
    tables = Base.metadata.tables
    try:
        with engine.begin() as connection:
            user_id = connection.execute(
                insert(tables["user_account"]).values(username="yeni", password_hash="x", role="worker")
            ).inserted_primary_key
            order_id = connection.execute(
                insert(tables["work_order"]).values(
                    product_code="P",
                    lot_no="L",
                    qty=1,
                    planned_start=utc("2026-12-01T08:00"),
                    planned_end=utc("2026-12-01T09:00"),
                )
            ).inserted_primary_key
    finally:
        engine.dispose()
    assert user_id is not None
    assert order_id is not None
    assert user_id[0] == 8
    assert order_id[0] == 15


@pytest.fixture
async def imported_api(source: Path, target: str) -> AsyncIterator[Api]:
    """The API on a target the plant's history was imported into."""
    run_import(source, target)
    engine = create_engine_from_settings(DatabaseSettings(database_url=target))
    try:
        async with running_api(committed(engine, target), make_settings(target)) as api:
            yield api
    finally:
        await engine.dispose()


async def test_every_original_user_logs_in_with_the_old_password_then_has_argon2id(imported_api: Api) -> None:
    api = imported_api
    for username, (password, _format) in PASSWORDS.items():
        response = await api.client.post("/auth/login", data={"username": username, "password": password})
        assert response.status_code == 200, (username, response.text)
    async with api.session() as session:
        users = Base.metadata.tables["user_account"]
        found = await session.execute(select(users.c.username, users.c.password_hash))
        hashes: dict[str, str] = dict(found.all())
    assert all(hashes[username].startswith("$argon2id$") for username in PASSWORDS)
    for username in PASSWORDS:  # and again, against the new hash
        await api.login(username, PASSWORDS[username][0])
    for disabled in ("eski", "user-7"):
        response = await api.client.post("/auth/login", data={"username": disabled, "password": "x"})
        assert response.status_code == 401


async def test_metrics_of_imported_work_orders_are_those_of_the_original_times(imported_api: Api) -> None:
    api = imported_api
    headers = await api.login("admin", PASSWORDS["admin"][0])
    response = await api.client.get("/stages/100/metrics", headers=headers)
    assert response.status_code == 200, response.text
    metrics = response.json()
    # Planned 08:00-08:30, worked 08:05-08:40 (plant time).
    assert (metrics["planned_duration_min"], metrics["actual_duration_min"], metrics["delay_min"]) == (30, 35, 10)
    assert metrics["efficiency_percent"] == pytest.approx(100 * 30 / 35, abs=0.01)
    assert metrics["status"] == "done"
    done_107 = (await api.client.get("/stages/107/metrics", headers=headers)).json()
    assert (done_107["planned_duration_min"], done_107["actual_duration_min"]) == (60, 50)
    # Done with its end unknown: done, not running on, no actual duration.
    unknown_end = (await api.client.get("/stages/102/metrics", headers=headers)).json()
    assert (unknown_end["status"], unknown_end["projected"], unknown_end["actual_duration_min"]) == (
        "done",
        False,
        None,
    )


def run_cli(*args: str, database_url: str, cwd: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SHOPFLOOR_", "DATABASE_"))}
    env.pop("PLANT_TIMEZONE", None)
    env.update(SHOPFLOOR_ENV="test", DATABASE_URL=database_url, LOG_FORMAT="json", **env_extra)
    return subprocess.run(  # noqa: S603 -- our own console script
        [SHOPFLOOR, "import-legacy", *args],
        env=env,
        cwd=cwd,  # no `.env` of the developer's
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_prints_a_json_report_and_refuses_a_second_run(source: Path, target: str, tmp_path: Path) -> None:
    without_zone = run_cli("--from", str(source), database_url=target, cwd=tmp_path)
    assert without_zone.returncode == 2
    assert "--timezone" in without_zone.stderr

    first = run_cli("--from", str(source), "--json", database_url=target, cwd=tmp_path, PLANT_TIMEZONE=PLANT_ZONE)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["ok"] is True
    assert report["timezone"] == PLANT_ZONE
    assert {(d["table"], d["id"], d["action"], d["code"]) for d in report["decisions"]} == EXPECTED_DECISIONS
    assert {t["table"]: t["imported"] for t in report["tables"]} == {
        "user_account": 7,
        "work_order": 5,
        "work_order_stage": 8,
        "stage_event": 8,
        "issue": 5,
    }

    second = run_cli("--from", str(source), "--timezone", PLANT_ZONE, database_url=target, cwd=tmp_path)
    assert second.returncode == 2
    assert "already holds tracking rows" in second.stderr
    assert len(rows(target, "work_order")) == 5


def test_the_text_report_names_tables_counts_and_decisions(source: Path, target: str, tmp_path: Path) -> None:
    result = run_cli("--from", str(source), "--timezone", PLANT_ZONE, "--dry-run", database_url=target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "user_account" in result.stdout
    assert "users #4: fixed duplicate_username" in result.stdout
    assert "stages #105: skipped work_order_missing" in result.stdout
    assert "DRY RUN" in result.stdout
    assert rows(target, "user_account") == []


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda path: path.write_text("not a database"), "not a SQLite database"),
        (lambda path: upgrade(f"sqlite:///{path}"), "a Shopfloor database"),
        (lambda path: None, "no such file"),
    ],
    ids=["text", "shopfloor", "missing"],
)
def test_sources_that_are_not_the_original_app_are_refused(
    tmp_path: Path, target: str, prepare: Any, message: str
) -> None:
    path = tmp_path / "other.db"
    prepare(path)
    with pytest.raises(TransferInputError, match=message):
        run_import(path, target)


def test_a_target_that_is_not_migrated_or_not_reachable_is_refused(source: Path, empty_database_url: str) -> None:
    if empty_database_url.startswith("sqlite"):
        with pytest.raises(TransferInputError, match="does not exist: run `shopfloor migrate`"):
            run_import(source, empty_database_url)
    else:
        with pytest.raises(TransferInputError, match="run `shopfloor migrate`"):
            run_import(source, empty_database_url)
        with pytest.raises(TransferInputError, match="cannot reach the target database"):
            run_import(source, "postgresql://nobody@127.0.0.1:1/shopfloor")

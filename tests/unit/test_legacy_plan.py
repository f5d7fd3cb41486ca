"""What the legacy importer makes of the original app's tables and rows (pure parts: no database)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cli.legacy import source_columns
from cli.legacy_plan import (
    DetectionError,
    Existing,
    Kind,
    Plan,
    detect_tables,
    plan_import,
    read_local_time,
)
from core.models import Role, StageEventKind, StageStatus
from tests.support.legacy_app import PLURAL, SINGULAR, TableNames, bcrypt_hash, ddl

ISTANBUL = ZoneInfo("Europe/Istanbul")
BERLIN = ZoneInfo("Europe/Berlin")
TYPES = ["machine_breakdown", "material_shortage", "quality", "safety", "other"]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HASH = bcrypt_hash("x")


def columns_of(names: TableNames) -> dict[str, list[str]]:
    with closing(sqlite3.connect(":memory:")) as connection:
        for statement in ddl(names):
            connection.execute(statement)
        return source_columns(connection)


@pytest.mark.parametrize("names", [PLURAL, SINGULAR], ids=["plural", "singular"])
def test_the_four_tables_are_found_by_their_columns_whatever_their_names(names: TableNames) -> None:
    detection = detect_tables(columns_of(names))
    found = {kind: table.name for kind, table in detection.tables.items()}
    assert found == {
        Kind.USERS: names.users,
        Kind.WORK_ORDERS: names.work_orders,
        Kind.STAGES: names.stages,
        Kind.ISSUES: names.issues,
    }
    assert all(not table.missing for table in detection.tables.values())
    assert detection.unread == []


def test_other_tables_are_listed_unread_and_missing_columns_named() -> None:
    detection = detect_tables(
        {
            "accounts": ["ID", "Username", "hashed_password"],  # no role column, other spellings
            "audit_log": ["id", "at", "what"],
            "sqlite_sequence": ["name", "seq"],
        }
    )
    users = detection.tables[Kind.USERS]
    assert users.name == "accounts"
    assert users.columns["password_hash"] == "hashed_password"
    assert users.missing == ["role"]
    assert detection.unread == ["audit_log"]
    assert set(detection.tables) == {Kind.USERS}


def test_two_tables_fitting_one_kind_are_refused_by_name() -> None:
    with pytest.raises(DetectionError, match="users: old_users, users"):
        detect_tables(
            {"users": ["id", "username", "password_hash"], "old_users": ["id", "username", "password_hash", "role"]}
        )


@pytest.mark.parametrize(
    ("value", "zone", "expected", "problem"),
    [
        ("2026-11-20 08:00:00.000000", ISTANBUL, datetime(2026, 11, 20, 5, 0, tzinfo=UTC), None),
        ("2026-11-20T08:00:00", ISTANBUL, datetime(2026, 11, 20, 5, 0, tzinfo=UTC), None),
        ("2026-07-01 08:00:00", BERLIN, datetime(2026, 7, 1, 6, 0, tzinfo=UTC), None),
        ("2026-12-01 08:00:00", BERLIN, datetime(2026, 12, 1, 7, 0, tzinfo=UTC), None),
        # Clocks go back at 03:00 on 25 October 2026: 02:30 happens twice; the first (summer time) is taken.
        ("2026-10-25 02:30:00", BERLIN, datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "ambiguous"),
        # Clocks go forward at 02:00 on 29 March 2026: 02:30 never happened.
        ("2026-03-29 02:30:00", BERLIN, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "nonexistent"),
        ("2026-11-20T08:00:00+01:00", ISTANBUL, datetime(2026, 11, 20, 7, 0, tzinfo=UTC), None),
        ("yarın sabah", ISTANBUL, None, "unreadable"),
        (1763625600, ISTANBUL, None, "unreadable"),
        ("", ISTANBUL, None, None),
        (None, ISTANBUL, None, None),
    ],
)
def test_naive_times_are_read_in_the_plant_zone(
    value: Any, zone: ZoneInfo, expected: datetime | None, problem: str | None
) -> None:
    local = read_local_time(value, zone)
    assert local.at == expected
    assert local.problem == problem


def plan(
    users: list[dict[str, Any]] | None = None,
    orders: list[dict[str, Any]] | None = None,
    stages: list[dict[str, Any]] | None = None,
    issues: list[dict[str, Any]] | None = None,
    existing: Existing | None = None,
) -> Plan:
    source = {
        Kind.USERS: users or [],
        Kind.WORK_ORDERS: orders or [],
        Kind.STAGES: stages or [],
        Kind.ISSUES: issues or [],
    }
    return plan_import(source, zone=ISTANBUL, issue_types=TYPES, now=NOW, existing=existing)


def codes(result: Plan) -> set[tuple[Kind, Any, str, str]]:
    return {(d.kind, d.source_id, d.action, d.code) for d in result.decisions}


ORDER = {"id": 1, "product_code": "P", "lot_no": "L", "qty": 5, "planned_start": "2026-11-20 08:00:00",
         "planned_end": "2026-11-20 16:00:00"}  # fmt: skip


def stage(stage_id: int, status: Any, start: str | None = None, end: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": stage_id,
        "work_order_id": 1,
        "stage_name": "Enjeksiyon",
        "planned_start": "2026-11-20 08:00:00",
        "planned_end": "2026-11-20 09:00:00",
        "actual_start": start,
        "actual_end": end,
        "status": status,
        **extra,
    }


def test_duplicate_usernames_keep_the_first_and_rename_the_others() -> None:
    result = plan(
        users=[
            {"id": 9, "username": "MEHMET", "password_hash": HASH, "role": "worker"},
            {"id": 3, "username": "mehmet", "password_hash": HASH, "role": "worker"},
            {"id": 4, "username": " Mehmet ", "password_hash": HASH, "role": "worker"},
        ]
    )
    names = {row["id"]: row["username"] for row in result.rows["user_account"]}
    assert names == {3: "mehmet", 4: "mehmet-4", 9: "mehmet-9"}
    assert {(kind, row_id, code) for kind, row_id, _, code in codes(result)} >= {
        (Kind.USERS, 4, "duplicate_username"),
        (Kind.USERS, 9, "duplicate_username"),
    }


def test_a_name_already_in_the_target_is_a_duplicate_too() -> None:
    result = plan(
        users=[{"id": 5, "username": "admin", "password_hash": HASH, "role": "admin"}],
        existing=Existing(usernames={"admin"}),
    )
    assert result.rows["user_account"][0]["username"] == "admin-5"


@pytest.mark.parametrize(
    ("role", "expected", "decided"),
    [("admin", Role.ADMIN, False), ("Planner", Role.PLANNER, False), ("supervisor", Role.WORKER, True),
     (None, Role.WORKER, True)],
)  # fmt: skip
def test_unknown_roles_become_workers_and_are_reported(role: Any, expected: Role, decided: bool) -> None:
    result = plan(users=[{"id": 1, "username": "u1", "password_hash": HASH, "role": role}])
    assert result.rows["user_account"][0]["role"] is expected
    assert ((Kind.USERS, 1, "fixed", "role_unknown") in codes(result)) is decided


@pytest.mark.parametrize("password_hash", ["md5$abc", "", None, "x" * 300])
def test_unknown_password_hashes_leave_the_account_disabled(password_hash: Any) -> None:
    result = plan(users=[{"id": 1, "username": "u1", "password_hash": password_hash, "role": "worker"}])
    row = result.rows["user_account"][0]
    assert row["is_active"] is False
    assert len(row["password_hash"]) <= 255
    assert (Kind.USERS, 1, "fixed", "password_hash_unknown") in codes(result)


@pytest.mark.parametrize(
    ("status", "start", "end", "expected", "events", "code"),
    [
        ("done", "2026-11-20 08:05:00", "2026-11-20 08:40:00", StageStatus.DONE, ["start", "done"], None),
        ("in_progress", "2026-11-20 08:05:00", None, StageStatus.IN_PROGRESS, ["start"], None),
        ("planned", None, None, StageStatus.PLANNED, [], None),
        ("done", "2026-11-20 08:05:00", None, StageStatus.DONE, ["done"], "done_without_end"),
        ("done", None, None, StageStatus.DONE, ["done"], "done_without_end"),
        ("done", None, "2026-11-20 08:40:00", StageStatus.DONE, ["done"], "done_without_start"),
        ("in_progress", None, None, StageStatus.IN_PROGRESS, [], "in_progress_without_start"),
        ("done", "2026-11-20 09:00:00", "2026-11-20 08:00:00", StageStatus.DONE, ["done"], "end_before_start"),
        ("planned", "2026-11-20 08:05:00", None, StageStatus.PLANNED, [], "times_contradict_status"),
        ("in_progress", "2026-11-20 08:05:00", "2026-11-20 08:40:00", StageStatus.IN_PROGRESS, ["start"],
         "times_contradict_status"),
        ("bitti", "2026-11-20 08:05:00", "2026-11-20 08:40:00", StageStatus.DONE, ["start", "done"], "status_unknown"),
        ("started", "2026-11-20 08:05:00", None, StageStatus.IN_PROGRESS, ["start"], "status_unknown"),
        (None, None, None, StageStatus.PLANNED, [], "status_unknown"),
        ("In Progress", "2026-11-20 08:05:00", None, StageStatus.IN_PROGRESS, ["start"], None),
    ],
)  # fmt: skip
def test_stage_status_and_actual_times_become_status_and_events(
    status: Any, start: str | None, end: str | None, expected: StageStatus, events: list[str], code: str | None
) -> None:
    result = plan(orders=[ORDER], stages=[stage(7, status, start, end)])
    assert result.rows["work_order_stage"][0]["status"] is expected
    assert [event["kind"].value for event in result.rows["stage_event"]] == events
    found = {c for kind, _, _, c in codes(result) if kind is Kind.STAGES}
    assert found == ({code} if code else set()) | ({"done_without_end"} if code == "end_before_start" else set())


def test_events_are_at_the_actual_times_in_utc() -> None:
    result = plan(orders=[ORDER], stages=[stage(7, "done", "2026-11-20 08:05:00", "2026-11-20 08:40:00")])
    events = [(event["kind"], event["at"]) for event in result.rows["stage_event"]]
    assert events == [
        (StageEventKind.START, datetime(2026, 11, 20, 5, 5, tzinfo=UTC)),
        (StageEventKind.DONE, datetime(2026, 11, 20, 5, 40, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    ("start", "expected_at", "source"),
    [("2026-11-20 08:05:00", datetime(2026, 11, 20, 5, 5, tzinfo=UTC), "actual_start"),
     (None, datetime(2026, 11, 20, 6, 0, tzinfo=UTC), "planned_end")],
)  # fmt: skip
def test_a_done_stage_without_its_end_gets_one_done_event_at_the_last_known_time(
    start: str | None, expected_at: datetime, source: str
) -> None:
    # A start event alone would make the metrics count the stage as running until now.
    result = plan(orders=[ORDER], stages=[stage(7, "done", start, None)])
    [event] = result.rows["stage_event"]
    assert (event["kind"], event["at"]) == (StageEventKind.DONE, expected_at)
    assert f"end time unknown, {source} used" in event["reason"]


def test_stages_get_positions_in_id_order_after_those_already_in_the_target() -> None:
    result = plan(
        orders=[ORDER], stages=[stage(9, "planned"), stage(7, "planned")], existing=Existing(last_position={1: 2})
    )
    assert [(row["id"], row["position"]) for row in result.rows["work_order_stage"]] == [(7, 3), (9, 4)]


@pytest.mark.parametrize("qty", [0, -5, None, "çok", 2.5])
def test_impossible_quantities_become_one_with_a_note(qty: Any) -> None:
    result = plan(orders=[{**ORDER, "qty": qty}])
    row = result.rows["work_order"][0]
    assert row["qty"] == 1
    assert f"qty was {qty!r}" in row["notes"] if qty is not None else "qty was NULL" in row["notes"]
    assert (Kind.WORK_ORDERS, 1, "fixed", "qty_invalid") in codes(result)


def test_a_work_order_with_no_time_anywhere_is_skipped_with_its_children() -> None:
    result = plan(
        orders=[{**ORDER, "planned_start": None, "planned_end": None}],
        stages=[stage(7, "planned", planned_start=None, planned_end=None)],
        issues=[{"id": 3, "work_order_stage_id": 7, "type": "quality", "description": "x", "created_by": None,
                 "created_at": "2026-11-20 08:00:00"}],
    )  # fmt: skip
    assert not result.rows["work_order"]
    assert not result.rows["work_order_stage"]
    assert not result.rows["issue"]
    assert {(kind, action, code) for kind, _, action, code in codes(result)} == {
        (Kind.WORK_ORDERS, "skipped", "planned_window_missing"),
        (Kind.STAGES, "skipped", "work_order_missing"),
        (Kind.ISSUES, "skipped", "stage_missing"),
    }


def test_rows_already_in_the_target_are_skipped_and_their_children_still_attach() -> None:
    result = plan(
        orders=[ORDER],
        stages=[stage(7, "planned"), stage(8, "planned")],
        existing=Existing(ids={Kind.WORK_ORDERS: {1}, Kind.STAGES: {7}}, last_position={1: 1}),
    )
    assert not result.rows["work_order"]
    assert [(row["id"], row["position"]) for row in result.rows["work_order_stage"]] == [(8, 2)]
    assert {(kind, row_id, code) for kind, row_id, _, code in codes(result)} == {
        (Kind.WORK_ORDERS, 1, "already_in_target"),
        (Kind.STAGES, 7, "already_in_target"),
    }


def test_every_read_row_is_imported_or_has_a_skip_decision() -> None:
    result = plan(
        users=[{"id": "x", "username": "a", "password_hash": HASH, "role": "worker"}],
        orders=[ORDER],
        stages=[stage(7, "done"), {**stage(8, "done"), "work_order_id": None}],
    )
    assert result.read == {Kind.USERS: 1, Kind.WORK_ORDERS: 1, Kind.STAGES: 2, Kind.ISSUES: 0}
    assert result.skipped_ids(Kind.USERS) == {"x"}
    assert result.skipped_ids(Kind.STAGES) == {8}

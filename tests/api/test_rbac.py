"""Every route crossed with {anonymous, worker, planner, admin}, checked against the design's roles table.

A route missing from ROUTES fails `test_every_route_is_in_the_table`: a new route must say who may call it.
Workers are assigned to the stages the requests use, so "worker" rows test the assigned case; the unassigned case
is tested in test_tracking_flow.py and test_assignments.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.context import context_of
from core.commands import CommandStatus
from core.contract import MachineState
from core.models import (
    CalendarException,
    CalendarExceptionKind,
    Issue,
    IssueStatus,
    MachineApiKey,
    MachineCommand,
    RefreshToken,
    Role,
    ShiftPattern,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    TagRange,
    WritableTag,
)
from core.security import new_secret, secret_digest
from tests.support.api import Api, make_settings
from tests.support.db import DIALECT_FREE
from tests.support.factories import add_states, make_machine, make_work_order

pytestmark = DIALECT_FREE

ANONYMOUS = "anonymous"
ACTORS = (ANONYMOUS, Role.WORKER.value, Role.PLANNER.value, Role.ADMIN.value)
PUBLIC = frozenset(ACTORS)
ANY_USER = frozenset({Role.WORKER.value, Role.PLANNER.value, Role.ADMIN.value})
PLANNERS = frozenset({Role.PLANNER.value, Role.ADMIN.value})
ADMIN = frozenset({Role.ADMIN.value})
T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """Rows the requests refer to: a planned, a running and a paused stage, an open issue, users."""

    user_id: int
    other_worker_id: int
    work_order_id: int
    planned_stage_id: int
    running_stage_id: int
    paused_stage_id: int
    issue_id: int
    machine_id: int
    key_id: int
    pattern_id: int
    exception_id: int
    command_id: uuid.UUID
    # A live refresh token of the target user (refresh and logout take the token itself, whoever sends it).
    refresh_token: str


@dataclass(frozen=True)
class Rule:
    method: str
    path: str
    allowed: frozenset[str]
    body: Callable[[Target], dict[str, Any]] | None = None
    query: dict[str, str] = field(default_factory=dict)
    # A query that names the target's rows (the machine of GET /oee).
    query_for: Callable[[Target], dict[str, str]] | None = None
    # A live stream never ends by itself: the app is told it is stopping, so the stream ends after its snapshot.
    stream: bool = False
    # What an allowed role gets when not a success: sending a command answers 503 `commands_off` here (no broker),
    # which it does only after the role check.
    allowed_problem: tuple[int, str] | None = None


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


async def make_target(api: Api, worker_id: int | None) -> Target:
    """The rows, inserted directly; the worker actor (if any) is assigned to every stage used."""
    target_user = await api.create_user("rbac-target", Role.WORKER)
    other = await api.create_user(_unique("other"), Role.WORKER)
    async with api.session() as session:
        planned = await make_work_order(
            session, start=T0, stages=[StageStatus.PLANNED, StageStatus.PLANNED], product_code="P-PLANNED"
        )
        running = await make_work_order(session, start=T0, stages=[StageStatus.IN_PROGRESS], product_code="P-RUNNING")
        paused = await make_work_order(session, start=T0, stages=[StageStatus.PAUSED], product_code="P-PAUSED")
        stages = [planned.stages[0], running.stages[0], paused.stages[0]]
        session.add_all(
            [
                StageEvent(stage_id=running.stages[0].id, kind=StageEventKind.START, at=T0),
                StageEvent(stage_id=paused.stages[0].id, kind=StageEventKind.START, at=T0),
                StageEvent(stage_id=paused.stages[0].id, kind=StageEventKind.PAUSE, at=T0 + timedelta(minutes=5)),
                StageAssignment(stage_id=planned.stages[0].id, user_id=other.id),
                *(StageAssignment(stage_id=stage.id, user_id=worker_id) for stage in stages if worker_id),
            ]
        )
        issue = Issue(stage_id=planned.stages[0].id, type="quality", description="burrs", status=IssueStatus.OPEN)
        session.add(issue)
        machine = await make_machine(session, _unique("m"), name="Press")
        running.stages[0].machine_id = machine.id  # the running stage's OEE needs a machine
        # A 10-minute setup on it at 06:10, for the classification (the worker works on the running stage).
        await add_states(
            session,
            machine.id,
            [(T0, MachineState.RUNNING), (T0 + timedelta(minutes=10), MachineState.SETUP),
             (T0 + timedelta(minutes=20), MachineState.RUNNING)],
        )  # fmt: skip
        key = MachineApiKey(machine_id=machine.id, prefix="sfk_x", key_hash=os.urandom(16).hex())
        session.add(key)
        pattern = ShiftPattern(valid_from=date(2026, 1, 5), name="rbac")
        holiday = CalendarException(day=date(2026, 12, 31), kind=CalendarExceptionKind.NON_WORKING)
        session.add_all([pattern, holiday])
        session.add(TagRange(machine_id=machine.id, tag="temp", low=-20, high=400))
        session.add(WritableTag(machine_id=machine.id, tag="temp", value_type="float", min=0, max=300))
        command = MachineCommand(
            id=uuid.uuid4(),
            machine_id=machine.id,
            requested_by_id=target_user.id,
            requested_at=T0,
            expires_at=T0 + timedelta(minutes=1),
            writes=[{"tag": "temp", "value": 210.0, "old_value": None}],
            status=CommandStatus.DONE,
        )
        session.add(command)
        refresh_token = new_secret()
        session.add(
            RefreshToken(
                user_id=target_user.id,
                family=_unique("family"),
                token_hash=secret_digest(refresh_token),
                token_version=0,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
        await session.flush()
        return Target(
            user_id=target_user.id,
            other_worker_id=other.id,
            work_order_id=planned.id,
            planned_stage_id=planned.stages[0].id,
            running_stage_id=running.stages[0].id,
            paused_stage_id=paused.stages[0].id,
            issue_id=issue.id,
            machine_id=machine.id,
            key_id=key.id,
            pattern_id=pattern.id,
            exception_id=holiday.id,
            command_id=command.id,
            refresh_token=refresh_token,
        )


def _paths(path: str, target: Target) -> str:
    stage = target.planned_stage_id
    if path.endswith(("/pause", "/done", "/oee", "/counts")):
        stage = target.running_stage_id
    elif path.endswith("/resume"):
        stage = target.paused_stage_id
    user = target.other_worker_id if "/assignments/" in path else target.user_id
    return path.format(
        user_id=user,
        work_order_id=target.work_order_id,
        stage_id=stage,
        issue_id=target.issue_id,
        machine_id=target.machine_id,
        key_id=target.key_id,
        pattern_id=target.pattern_id,
        exception_id=target.exception_id,
        code="reduced_speed",
        tag="temp",
        command_id=target.command_id,
    )


WORK_ORDER = {
    "product_code": "PX-1",
    "lot_no": "L-9",
    "qty": 5,
    "planned_start": "2026-11-27T08:00:00Z",
    "planned_end": "2026-11-27T12:00:00Z",
}
ROUTES = [
    Rule("POST", "/auth/login", PUBLIC, lambda _: {"username": "rbac-target", "password": "correct-horse-battery"}),
    Rule("POST", "/auth/register", PUBLIC, lambda _: {"username": _unique("reg"), "password": "long-enough-1"}),
    Rule("POST", "/auth/refresh", PUBLIC, lambda target: {"refresh_token": target.refresh_token}),
    Rule("POST", "/auth/logout", PUBLIC, lambda target: {"refresh_token": target.refresh_token}),
    Rule("GET", "/auth/me", ANY_USER),
    Rule("GET", "/issue-types", ANY_USER),
    Rule(
        "POST",
        "/auth/password",
        ANY_USER,
        lambda _: {"current_password": "correct-horse-battery", "new_password": "another-long-one"},
    ),
    Rule("GET", "/auth/users", ADMIN),
    Rule(
        "POST",
        "/auth/users",
        ADMIN,
        lambda _: {"username": _unique("made"), "password": "long-enough-1", "role": "worker"},
    ),
    Rule("GET", "/auth/users/{user_id}", ADMIN),
    Rule("PATCH", "/auth/users/{user_id}/role", ADMIN, lambda _: {"role": "planner"}),
    Rule("PATCH", "/auth/users/{user_id}", ADMIN, lambda _: {"full_name": "Renamed"}),
    Rule("POST", "/workorders/", PLANNERS, lambda _: WORK_ORDER),
    Rule("GET", "/workorders/", ANY_USER),
    Rule("GET", "/workorders/{work_order_id}", ANY_USER),
    Rule("PATCH", "/workorders/{work_order_id}", PLANNERS, lambda _: {"notes": "check the mould"}),
    Rule("GET", "/workorders/{work_order_id}/stages", ANY_USER),
    Rule("POST", "/workorders/{work_order_id}/cancel", PLANNERS, lambda _: {"reason": "customer"}),
    Rule("GET", "/workorders/{work_order_id}/metrics", ANY_USER),
    Rule("GET", "/stages/{stage_id}", ANY_USER),
    Rule("PATCH", "/stages/{stage_id}", PLANNERS, lambda _: {"stage_name": "Enjeksiyon"}),
    Rule("POST", "/stages/{stage_id}/start", ANY_USER),
    Rule("POST", "/stages/{stage_id}/pause", ANY_USER, lambda _: {"reason": "mould change"}),
    Rule("POST", "/stages/{stage_id}/resume", ANY_USER),
    Rule("POST", "/stages/{stage_id}/done", ANY_USER, lambda _: {"good_qty": 9, "scrap_qty": 1}),
    Rule(
        "POST",
        "/stages/{stage_id}/counts",
        ANY_USER,
        lambda _: {"good_qty": 5, "scrap": [{"reason": "flash", "qty": 1}]},
    ),
    Rule("POST", "/stages/{stage_id}/assignments", PLANNERS, lambda t: {"user_id": t.user_id}),
    Rule("DELETE", "/stages/{stage_id}/assignments/{user_id}", PLANNERS),
    Rule("GET", "/stages/{stage_id}/events", ANY_USER),
    Rule("GET", "/stages/{stage_id}/metrics", ANY_USER),
    Rule("GET", "/stages/{stage_id}/oee", ANY_USER),
    Rule("POST", "/stages/{stage_id}/issue", ANY_USER, lambda _: {"type": "quality", "description": "flash"}),
    Rule("GET", "/stages/{stage_id}/issues", ANY_USER),
    Rule("PATCH", "/stages/{stage_id}/issues/{issue_id}", PLANNERS, lambda _: {"status": "ack", "note": "seen"}),
    Rule("GET", "/issues", PLANNERS),
    Rule("GET", "/me/stages", ANY_USER),
    Rule(
        "GET",
        "/metrics/summary",
        PLANNERS,
        query={"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
    ),
    Rule("POST", "/machines", ADMIN, lambda _: {"site": "plant1", "code": _unique("new"), "name": "New press"}),
    Rule("GET", "/machines", ANY_USER),
    Rule("GET", "/machines/{machine_id}", ANY_USER),
    Rule("PATCH", "/machines/{machine_id}", ADMIN, lambda _: {"location": "Hall B"}),
    Rule("DELETE", "/machines/{machine_id}", ADMIN),
    Rule("POST", "/machines/{machine_id}/api-keys", ADMIN),
    Rule("GET", "/machines/{machine_id}/api-keys", ADMIN),
    Rule("DELETE", "/machines/{machine_id}/api-keys/{key_id}", ADMIN),
    Rule(
        "POST",
        "/machines/{machine_id}/readings",
        PLANNERS,
        lambda _: {"ts": datetime.now(UTC).isoformat(), "values": {"temp": 21.5}},
    ),
    Rule("GET", "/machines/{machine_id}/latest", ANY_USER),
    Rule("GET", "/machines/{machine_id}/tag-ranges", ANY_USER),
    Rule("GET", "/gateways", ANY_USER),
    Rule("PUT", "/machines/{machine_id}/tag-ranges/{tag}", ADMIN, lambda _: {"low": -20, "high": 400}),
    Rule("DELETE", "/machines/{machine_id}/tag-ranges/{tag}", ADMIN),
    Rule("GET", "/machines/{machine_id}/writable-tags", PLANNERS),
    Rule("PUT", "/machines/{machine_id}/writable-tags/{tag}", ADMIN, lambda _: {"type": "float", "min": 0, "max": 250}),
    Rule("DELETE", "/machines/{machine_id}/writable-tags/{tag}", ADMIN),
    Rule(
        "POST",
        "/machines/{machine_id}/commands",
        PLANNERS,
        lambda _: {"tag": "temp", "value": 215.5},
        allowed_problem=(503, "commands_off"),
    ),
    Rule("GET", "/machines/{machine_id}/commands", PLANNERS),
    Rule("GET", "/machines/{machine_id}/commands/{command_id}", PLANNERS),
    Rule(
        "GET",
        "/machines/{machine_id}/readings",
        ANY_USER,
        query={"tags": "temp,speed", "from": "2026-11-26T06:00:00Z", "to": "2026-11-26T07:00:00Z"},
    ),
    Rule(
        "GET",
        "/machines/{machine_id}/states",
        ANY_USER,
        query={"from": "2026-11-26T06:00:00Z", "to": "2026-11-26T07:00:00Z"},
    ),
    Rule("POST", "/machines/{machine_id}/stream/ticket", ANY_USER),
    Rule("GET", "/machines/{machine_id}/stream", ANY_USER, stream=True),
    Rule(
        "GET",
        "/machines/{machine_id}/oee",
        ANY_USER,
        query={"from": "2026-11-26T06:00:00Z", "to": "2026-11-26T07:00:00Z"},
    ),
    Rule("GET", "/machines/{machine_id}/stages", ANY_USER, query={"status": "in_progress"}),
    Rule("GET", "/calendar", ANY_USER),
    Rule(
        "POST",
        "/calendar/patterns",
        PLANNERS,
        lambda _: {
            "valid_from": "2030-01-07",
            "name": "x",
            "shifts": [{"name": "day", "weekdays": [0, 1, 2, 3, 4], "start": "07:00", "end": "15:00"}],
        },
    ),
    Rule("DELETE", "/calendar/patterns/{pattern_id}", PLANNERS),
    Rule("POST", "/calendar/exceptions", PLANNERS, lambda _: {"day": "2030-01-01", "kind": "non_working"}),
    Rule("DELETE", "/calendar/exceptions/{exception_id}", PLANNERS),
    Rule("GET", "/calendar/shifts", ANY_USER, query={"from": "2026-11-26T00:00:00Z", "to": "2026-11-27T00:00:00Z"}),
    Rule("GET", "/loss-reasons", ANY_USER),
    Rule(
        "POST",
        "/loss-reasons",
        ADMIN,
        lambda _: {
            "code": _unique("r").replace("-", "_"),
            "category": "availability",
            "label_tr": "x",
            "label_en": "x",
        },
    ),
    Rule("PATCH", "/loss-reasons/{code}", ADMIN, lambda _: {"label_en": "Reduced speed"}),
    Rule(
        "GET",
        "/machines/{machine_id}/downtimes",
        ANY_USER,
        query={"from": "2026-11-26T06:00:00Z", "to": "2026-11-26T07:00:00Z"},
    ),
    # Everyone may ask; whether a worker may classify a stop depends on the stop (tests/api/test_plant.py).
    Rule(
        "POST",
        "/machines/{machine_id}/downtimes/classify",
        ANY_USER,
        lambda _: {"start": "2026-11-26T06:10:00Z", "reason_code": "setup"},
    ),
    Rule(
        "GET",
        "/machines/{machine_id}/downtimes/history",
        PLANNERS,
        query={"from": "2026-11-26T06:00:00Z", "to": "2026-11-26T07:00:00Z"},
    ),
    Rule(
        "GET",
        "/oee",
        ANY_USER,
        query_for=lambda target: {
            "machine_id": str(target.machine_id),
            "from": "2026-11-26T06:00:00Z",
            "to": "2026-11-26T07:00:00Z",
        },
    ),
    Rule("GET", "/health", PUBLIC),
    Rule("GET", "/ready", PUBLIC),
    Rule("GET", "/config", PUBLIC),
]


def test_every_route_is_in_the_table(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'routes.db'}"))
    served = {(method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations}
    table = {(rule.method, rule.path) for rule in ROUTES}
    assert served == table


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("rule", ROUTES, ids=lambda rule: f"{rule.method} {rule.path}")
async def test_route_allows_exactly_the_roles_of_the_table(api: Api, rule: Rule, actor: str) -> None:
    headers: dict[str, str] = {}
    worker_id = None
    if actor != ANONYMOUS:
        user_id, headers = await api.signed_in(Role(actor))
        worker_id = user_id if actor == Role.WORKER.value else None
    target = await make_target(api, worker_id)
    body = rule.body(target) if rule.body else None
    if rule.stream:
        context_of(api.app).streams.close()
    response = await api.client.request(
        rule.method,
        _paths(rule.path, target),
        json=body,
        params=rule.query_for(target) if rule.query_for else rule.query,
        headers=headers,
    )
    if actor in rule.allowed and rule.allowed_problem is not None:
        assert (response.status_code, response.json()["code"]) == rule.allowed_problem, response.text
    elif actor in rule.allowed:
        assert response.status_code < 400, response.text
    elif actor == ANONYMOUS:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthenticated"
    else:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"

"""`/openapi.json` describes every response as it is sent: a schemathesis run against the app finds no violation.

Schemathesis reads the document the app serves, generates requests for every operation (valid ones, with ids of
rows that exist and ids that do not) and checks each answer: its status code is documented, its content type is
the documented one, its body matches the documented schema, and it is not a 500. It runs as an admin (the role that
reaches every route), on SQLite, with a few examples per operation so it stays well under a minute.

The live stream (`GET /machines/{machine_id}/stream`) is included: schemathesis reads a bounded number of its
server-sent events and checks each against the schema of one event; `sse_data_conformance` also decodes each
event's `data` and checks it against the schema the document names for that event (`contentSchema`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import CheckContext, CheckFunction, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.context import context_of
from api.machines.stream import EVENT_STREAM, STREAM_EVENTS
from core.contract import MachineState
from core.db import create_engine_from_settings, session_factory, transaction
from core.models import (
    Issue,
    IssueStatus,
    MachineLatest,
    Role,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
)
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.api import bearer, make_settings
from tests.support.factories import add_readings, add_states, make_machine, make_user, make_work_order
from tests.support.sse import Block

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 6
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


async def seed(url: str) -> None:
    """Rows for the generated ids to find: users, a machine with readings, work orders in every stage status."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    try:
        async with transaction(session_factory(engine)) as session:
            admin = await make_user(session, "fuzz-admin", Role.ADMIN)
            worker = await make_user(session, "fuzz-worker", Role.WORKER)
            machine = await make_machine(session, "press-1")
            order = await make_work_order(
                session,
                start=T0,
                stages=[StageStatus.DONE, StageStatus.IN_PROGRESS, StageStatus.PAUSED, StageStatus.PLANNED],
                stage_hours=0.5,
                machine_id=machine.id,
            )
            done, running, paused, _ = order.stages
            session.add_all(
                [
                    StageEvent(stage_id=done.id, kind=StageEventKind.START, at=T0, user_id=admin.id),
                    StageEvent(stage_id=done.id, kind=StageEventKind.DONE, at=T0 + timedelta(minutes=25)),
                    StageEvent(stage_id=running.id, kind=StageEventKind.START, at=T0 + timedelta(minutes=30)),
                    StageEvent(stage_id=paused.id, kind=StageEventKind.START, at=T0 + timedelta(minutes=60)),
                    StageEvent(
                        stage_id=paused.id, kind=StageEventKind.PAUSE, at=T0 + timedelta(minutes=70), reason="break"
                    ),
                    StageAssignment(stage_id=running.id, user_id=worker.id),
                    Issue(stage_id=running.id, type="quality", description="burrs", status=IssueStatus.OPEN),
                ]
            )
            await make_work_order(session, start=T0, product_code="P-2")
            await add_readings(
                session,
                machine.id,
                [("temp", T0 + timedelta(minutes=minute), 180.0 + minute) for minute in range(0, 120, 5)],
            )
            # The stream's snapshot then holds one event of each kind.
            session.add(MachineLatest(machine_id=machine.id, tag="temp", ts=T0 + timedelta(minutes=115), value=295.0))
            await add_states(session, machine.id, [(T0, MachineState.RUNNING)])
    finally:
        await engine.dispose()


async def new_admin(url: str) -> int:
    """A new active admin: the one before may have been reset, deactivated or demoted by the requests made."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    try:
        async with transaction(session_factory(engine)) as session:
            return (await make_user(session, f"fuzz-admin-{uuid.uuid4().hex[:8]}", Role.ADMIN)).id
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Target:
    """The app under test and its database."""

    app: FastAPI
    url: str

    def admin_headers(self) -> dict[str, str]:
        """The Authorization header of a new admin."""
        admin_id = asyncio.run(new_admin(self.url))
        token = context_of(self.app).tokens.issue(user_id=admin_id, role=Role.ADMIN, now=datetime.now(UTC))
        return bearer(token.token)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    """A migrated SQLite file with the seed rows, and the app on it with room for the fuzzer's login attempts."""
    url = f"sqlite:///{tmp_path / 'conformance.db'}"
    upgrade(url)
    asyncio.run(seed(url))
    app = create_app(
        make_settings(
            url,
            login_max_failures_per_user=10_000,
            login_max_failures_per_address=10_000,
            login_slowdown_after=10_000,
            registration_max_per_address=10_000,
        )
    )
    yield Target(app=app, url=url)
    asyncio.run(context_of(app).engine.dispose())


def blocks(text: str) -> list[Block]:
    """The blocks of an event stream's text that carry data (comments and `retry:` alone are not events)."""
    found = []
    for chunk in text.split("\n\n"):
        block = Block()
        for line in chunk.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                block.fields.append((name, value.removeprefix(" ")))
        if block.get("data") is not None:
            found.append(block)
    return found


def sse_data_conformance(document: dict[str, Any], seen: set[str]) -> CheckFunction:
    """A check: every event's `data` is JSON that matches the `contentSchema` documented for its event name."""
    (stream,) = (
        operation["responses"]["200"]["content"][EVENT_STREAM]["schema"]
        for path_item in document["paths"].values()
        for operation in path_item.values()
        if EVENT_STREAM in operation.get("responses", {}).get("200", {}).get("content", {})
    )
    data_schemas = {
        variant["properties"]["event"]["const"]: variant["properties"]["data"]["contentSchema"]
        for variant in stream["oneOf"]
    }

    def check(_ctx: CheckContext, response: schemathesis.Response, _case: schemathesis.Case[Any]) -> bool | None:
        if not response.headers.get("content-type", [""])[0].startswith(EVENT_STREAM):
            return None
        for block in blocks(response.content.decode()):
            name = block.event or "message"
            assert name in data_schemas, f"event {name!r} is not documented"
            schema = {**data_schemas[name], "components": document["components"]}
            data = json.loads(block.get("data") or "")
            errors = [error.message for error in jsonschema_rs.iter_errors(schema, data, validate_formats=True)]
            assert not errors, f"event {name!r}: {data} does not match its documented schema: {errors}"
            seen.add(name)
        return True

    return check


def fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any], *, headers: dict[str, str], checks: list[CheckFunction]
) -> str | None:
    """Run a few generated requests of one operation; what went wrong, if anything."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    try:
        run()
    except (AssertionError, FailureGroup) as error:
        return str(error)
    return None


def test_every_response_matches_the_openapi_document(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    document = target.app.openapi()
    events_seen: set[str] = set()
    checks = [*CHECKS, sse_data_conformance(document, events_seen)]
    results = list(schema.get_all_operations())
    assert [result.err() for result in results if isinstance(result, Err)] == []
    # Reads first, on the rows as seeded (the stream's snapshot included); then the requests that change them.
    operations = sorted(
        (result.ok() for result in results if isinstance(result, Ok)), key=lambda operation: operation.method != "get"
    )
    assert len(operations) > 40
    failures = {
        operation.label: failure
        for operation in operations
        if (failure := fuzz(operation, headers=target.admin_headers(), checks=checks)) is not None
    }
    assert not failures, "\n\n".join(f"{label}:\n{message}" for label, message in failures.items())
    # The stream was read, and each of its kinds of event was checked against its documented schema.
    assert events_seen == {model.event_name for model in STREAM_EVENTS}


def test_the_stream_s_events_are_documented_from_the_models_it_sends(target: Target) -> None:
    """Each event name points at the component schema of the model the stream code sends under that name."""
    document = target.app.openapi()
    stream = document["paths"]["/machines/{machine_id}/stream"]["get"]["responses"]["200"]["content"][EVENT_STREAM]
    documented = {
        variant["properties"]["event"]["const"]: variant["properties"]["data"]["contentSchema"]["$ref"]
        for variant in stream["schema"]["oneOf"]
    }
    assert documented == {
        "readings": "#/components/schemas/ReadingsEvent",
        "state": "#/components/schemas/StateEvent",
        "status": "#/components/schemas/StatusEvent",
    }
    components = document["components"]["schemas"]
    for model in STREAM_EVENTS:
        assert components[model.__name__]["properties"].keys() == model.model_fields.keys()

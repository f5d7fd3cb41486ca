"""The telemetry write path on both databases: stored once, latest values, state changes, registration, statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.contract import MachineState, StateReport, TagReading, Telemetry
from core.db import session_factory
from core.ingest import IngestBatch, MachineRegistry, RejectedMessage, StatusUpdate, WriteResult, write_batch
from core.models import DeadLetter, Machine, MachineLatest, MachineStateChange
from core.models import Reading as ReadingRow

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def telemetry(machine: str, *readings: tuple[int, str, float], states: tuple[tuple[int, str], ...] = ()) -> Telemetry:
    return Telemetry(
        site="plant1",
        machine=machine,
        seq=None,
        readings=[TagReading(T0 + timedelta(seconds=s), tag, value) for s, tag, value in readings],
        states=[StateReport(T0 + timedelta(seconds=s), MachineState(state)) for s, state in states],
    )


async def store(engine: AsyncEngine, registry: MachineRegistry, batch: IngestBatch) -> WriteResult:
    async with engine.begin() as conn:
        result = await write_batch(conn, batch, registry=registry)
    registry.remember(result.machine_ids)
    return result


async def count(engine: AsyncEngine, entity: type) -> int:
    async with session_factory(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(entity)) or 0)


async def test_readings_are_stored_once_whatever_is_redelivered(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    batch = IngestBatch(telemetry=[telemetry("press-1", (0, "temp", 210.0), (0, "pressure", 80.5), (1, "temp", 211.0))])
    first = await store(engine, registry, batch)
    assert (first.readings_offered, first.readings_inserted, first.duplicates) == (3, 3, 0)
    assert first.machines_registered == 1
    again = await store(engine, registry, batch)
    assert (again.readings_inserted, again.duplicates) == (0, 3)
    # The same reading twice inside one batch is stored once too.
    doubled = IngestBatch(telemetry=[telemetry("press-1", (5, "temp", 1.0)), telemetry("press-1", (5, "temp", 1.0))])
    assert (await store(engine, registry, doubled)).readings_inserted == 1
    assert await count(engine, ReadingRow) == 4


async def test_machines_are_registered_on_first_telemetry(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    await store(engine, registry, IngestBatch(telemetry=[telemetry("press-9", (0, "temp", 1.0))]))
    # A second registry (another ingestor process) finds the same machine instead of registering it again.
    other = MachineRegistry(auto_register=True)
    result = await store(engine, other, IngestBatch(telemetry=[telemetry("press-9", (1, "temp", 2.0))]))
    assert result.machines_registered == 0
    async with session_factory(engine)() as session:
        machine = (await session.scalars(select(Machine))).one()
    assert (machine.site, machine.code, machine.name, machine.auto_registered) == ("plant1", "press-9", "press-9", True)
    assert machine.last_seen_at == T0 + timedelta(seconds=1)


async def test_unknown_machines_are_dead_lettered_when_registration_is_off(engine: AsyncEngine) -> None:
    result = await store(
        engine, MachineRegistry(auto_register=False), IngestBatch(telemetry=[telemetry("ghost", (0, "temp", 1.0))])
    )
    assert (result.readings_inserted, result.dead_lettered) == (0, 1)
    async with session_factory(engine)() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert "unknown machine" in letter.reason
    assert await count(engine, Machine) == 0


async def test_latest_values_only_move_forward(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    await store(engine, registry, IngestBatch(telemetry=[telemetry("m1", (10, "temp", 10.0), (20, "temp", 20.0))]))
    await store(engine, registry, IngestBatch(telemetry=[telemetry("m1", (15, "temp", 15.0))]))  # late sample
    async with session_factory(engine)() as session:
        latest = (await session.scalars(select(MachineLatest))).one()
    assert (latest.tag, latest.ts, latest.value) == ("temp", T0 + timedelta(seconds=20), 20.0)


async def test_only_state_changes_are_kept(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    states = ((0, "running"), (10, "running"), (20, "alarm"), (30, "alarm"), (40, "running"))
    result = await store(engine, registry, IngestBatch(telemetry=[telemetry("m1", states=states)]))
    assert result.states_inserted == 3
    # A later batch that repeats the current state adds nothing; a change does.
    await store(engine, registry, IngestBatch(telemetry=[telemetry("m1", states=((50, "running"), (60, "idle")))]))
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(MachineStateChange).order_by(MachineStateChange.ts))).all()
    assert [(row.ts - T0, row.state) for row in rows] == [
        (timedelta(seconds=0), MachineState.RUNNING),
        (timedelta(seconds=20), MachineState.ALARM),
        (timedelta(seconds=40), MachineState.RUNNING),
        (timedelta(seconds=60), MachineState.IDLE),
    ]


async def test_statuses_and_dead_letters_are_stored(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    batch = IngestBatch(
        statuses=[
            StatusUpdate("plant1", "m2", True, T0),
            StatusUpdate("plant1", "m2", False, T0 + timedelta(minutes=5)),
        ],
        rejected=[RejectedMessage("mqtt", "shopfloor/v1/plant1/m2/telemetry", b"\xff{not json", "not JSON")],
    )
    await store(engine, registry, batch)
    # An older status arriving later does not overwrite a newer one.
    await store(engine, registry, IngestBatch(statuses=[StatusUpdate("plant1", "m2", True, T0 + timedelta(minutes=1))]))
    async with session_factory(engine)() as session:
        machine = (await session.scalars(select(Machine))).one()
        letter = (await session.scalars(select(DeadLetter))).one()
    assert (machine.online, machine.status_changed_at) == (False, T0 + timedelta(minutes=5))
    assert (letter.source, letter.payload, letter.reason) == ("mqtt", b"\xff{not json", "not JSON")


async def test_a_failed_batch_stores_nothing_and_caches_nothing(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    try:
        async with engine.begin() as conn:
            await write_batch(conn, IngestBatch(telemetry=[telemetry("m3", (0, "temp", 1.0))]), registry=registry)
            raise RuntimeError("the database went away before commit")
    except RuntimeError:
        pass
    assert await count(engine, Machine) == 0
    assert await count(engine, ReadingRow) == 0
    result = await store(engine, registry, IngestBatch(telemetry=[telemetry("m3", (0, "temp", 1.0))]))
    assert (result.machines_registered, result.readings_inserted) == (1, 1)

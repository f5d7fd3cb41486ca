"""The telemetry write path on both databases: stored once, latest values, state changes, registration, statuses."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.contract import GatewayBacklog, MachineState, Quality, QualityLevel, StateReport, TagReading, Telemetry
from core.db import create_engine_from_settings, session_factory
from core.ingest import (
    GatewayStatus,
    IngestBatch,
    MachineRegistry,
    RejectedMessage,
    StatusUpdate,
    WriteResult,
    purge_dead_letters,
    write_batch,
)
from core.models import DeadLetter, Gateway, Machine, MachineLatest, MachineStateChange, TelemetrySeq
from core.models import Reading as ReadingRow
from core.settings import DatabaseSettings
from ingestor.sequence import SequenceTracker
from tests.support.db import empty_tables

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
    await store(engine, registry, IngestBatch(telemetry=[telemetry("m2", (0, "temp", 1.0))]))
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


async def test_statuses_never_register_machines(engine: AsyncEngine) -> None:
    # A retained status is replayed to every new subscriber: it must not bring a deleted or invented machine back.
    result = await store(
        engine, MachineRegistry(auto_register=True), IngestBatch(statuses=[StatusUpdate("plant1", "ghost", True, T0)])
    )
    assert result.statuses_ignored == 1
    assert await count(engine, Machine) == 0
    assert await count(engine, DeadLetter) == 0


async def test_a_status_that_came_before_the_first_telemetry_applies_once_the_machine_is_registered(
    engine: AsyncEngine,
) -> None:
    # A gateway announces a device online when it first reads it, often a batch before the telemetry that registers it.
    registry = MachineRegistry(auto_register=True)
    early = await store(engine, registry, IngestBatch(statuses=[StatusUpdate("plant1", "m9", True, T0)]))
    assert (early.statuses_ignored, await count(engine, Machine)) == (1, 0)
    await store(engine, registry, IngestBatch(telemetry=[telemetry("m9", (1, "temp", 1.0))]))
    async with session_factory(engine)() as session:
        machine = await session.scalar(select(Machine).where(Machine.code == "m9"))
    assert machine is not None
    assert (machine.online, machine.status_changed_at) == (True, T0)
    assert len(registry.pending_statuses) == 0  # applied, and forgotten once committed


async def test_registration_is_capped_per_site_per_hour(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True, max_per_site_per_hour=3)
    flood = [telemetry(f"m{number}", (0, "temp", 1.0)) for number in range(5)]
    other_site = Telemetry("plant2", "m0", None, [TagReading(T0, "temp", 1.0)], [])
    result = await store(engine, registry, IngestBatch(telemetry=[*flood, other_site]))
    assert (result.machines_registered, result.readings_inserted, result.dead_lettered) == (4, 4, 2)
    # The count lives in the database: another batch, or another ingestor, finds the site's allowance used up.
    again = await store(
        engine,
        MachineRegistry(auto_register=True, max_per_site_per_hour=3),
        IngestBatch(telemetry=[telemetry("m9", (0, "temp", 1.0)), telemetry("m0", (1, "temp", 2.0))]),
    )
    assert (again.machines_registered, again.readings_inserted, again.dead_lettered) == (0, 1, 1)
    assert await count(engine, Machine) == 4
    async with session_factory(engine)() as session:
        letters = (await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all()
    assert [letter.topic for letter in letters] == [
        "shopfloor/v1/plant1/m3/telemetry",
        "shopfloor/v1/plant1/m4/telemetry",
        "shopfloor/v1/plant1/m9/telemetry",
    ]
    assert all("INGEST_AUTO_REGISTER_MAX_PER_SITE_PER_HOUR" in letter.reason for letter in letters)


async def test_writers_registering_at_once_share_the_site_allowance(postgres_only_url: str) -> None:
    """Two writers (INGEST_WRITERS=2, or two ingestors of one group) each bring three new machines of one site
    with a cap of three: counted at the same moment, both would find the site empty and take every place."""
    engine = create_engine_from_settings(DatabaseSettings(database_url=postgres_only_url))

    async def writer(prefix: str) -> WriteResult:
        batch = IngestBatch(telemetry=[telemetry(f"{prefix}{number}", (0, "temp", 1.0)) for number in range(3)])
        return await store(engine, MachineRegistry(auto_register=True, max_per_site_per_hour=3), batch)

    try:
        first, second = await asyncio.gather(writer("a"), writer("b"))
        assert first.machines_registered + second.machines_registered == 3
        assert first.dead_lettered + second.dead_lettered == 3
        assert await count(engine, Machine) == 3
    finally:
        await empty_tables(engine)
        await engine.dispose()


async def test_dead_letters_are_plain_text_with_a_truncated_payload_its_size_and_hash(engine: AsyncEngine) -> None:
    payload = b'{"ts": "2026-11-26T08:00:00Z", "values": {"\\u0000": null}}' + b"x" * 10_000
    rejected = RejectedMessage("mqtt", "shopfloor/v1/plant1/\x00/telemetry", payload, "bad tag '\x00'\n\x1b[31m\ud800")
    async with engine.begin() as conn:
        await write_batch(
            conn, IngestBatch(rejected=[rejected]), registry=MachineRegistry(auto_register=False),
            dead_letter_max_payload_bytes=100,
        )  # fmt: skip
    async with session_factory(engine)() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert letter.topic == "shopfloor/v1/plant1/\\u0000/telemetry"
    assert letter.reason == "bad tag '\\u0000'\\u000a\\u001b[31m\\ud800"
    assert (letter.payload, letter.payload_size) == (payload[:100], len(payload))
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()


async def test_purge_deletes_only_dead_letters_older_than_the_cutoff(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for days in (40, 31, 29, 0):
            await conn.execute(
                insert(DeadLetter).values(
                    received_at=datetime.now(UTC) - timedelta(days=days), source="mqtt", topic="t", payload=b"",
                    reason=f"{days} days old",
                )
            )  # fmt: skip
    async with engine.begin() as conn:
        deleted = await purge_dead_letters(conn, before=datetime.now(UTC) - timedelta(days=30))
    async with session_factory(engine)() as session:
        kept = (await session.scalars(select(DeadLetter.reason).order_by(DeadLetter.id))).all()
    assert (deleted, kept) == (2, ["29 days old", "0 days old"])


async def test_archived_machines_store_nothing_and_are_never_registered_again(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    await store(engine, registry, IngestBatch(telemetry=[telemetry("old", (0, "temp", 1.0))]))
    async with engine.begin() as conn:
        await conn.execute(update(Machine).values(archived_at=T0))  # DELETE /machines/{id}, in another process
    # The registry still has the id cached: it finds out all the same.
    result = await store(
        engine,
        registry,
        IngestBatch(telemetry=[telemetry("old", (1, "temp", 2.0))], statuses=[StatusUpdate("plant1", "old", True, T0)]),
    )
    assert (result.readings_inserted, result.dead_lettered, result.statuses_ignored) == (0, 1, 1)
    fresh = await store(
        engine, MachineRegistry(auto_register=True), IngestBatch(telemetry=[telemetry("old", (2, "temp", 3.0))])
    )
    assert (fresh.machines_registered, fresh.readings_inserted, fresh.dead_lettered) == (0, 0, 1)
    async with session_factory(engine)() as session:
        reasons = (await session.scalars(select(DeadLetter.reason))).all()
    assert all(reason.startswith("machine archived") for reason in reasons)
    assert await count(engine, Machine) == 1
    assert await count(engine, ReadingRow) == 1


# --- quality and conflicts ---------------------------------------------------------------------------------------


async def test_quality_is_stored_with_the_value_and_a_bad_read_may_have_none(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    bad = Quality(QualityLevel.BAD, 2156658688, "BadSensorFailure")
    message = Telemetry(
        site="plant1",
        machine="press-q",
        seq=None,
        readings=[
            TagReading(T0, "temp", 210.0),
            TagReading(T0, "pressure", None, bad),
            TagReading(T0, "speed", 12.5, Quality(QualityLevel.UNCERTAIN)),
        ],
        states=[],
    )
    result = await store(engine, registry, IngestBatch(telemetry=[message]))
    assert (result.readings_inserted, result.not_good, result.conflicts) == (3, 2, 0)
    async with session_factory(engine)() as session:
        stored = (await session.execute(select(ReadingRow.tag, ReadingRow.value, ReadingRow.quality))).all()
        latest = (await session.execute(select(MachineLatest.tag, MachineLatest.value, MachineLatest.quality))).all()
    expected = {("temp", 210.0, None), ("pressure", None, 2), ("speed", 12.5, 1)}
    assert set(stored) == expected
    assert set(latest) == expected


async def test_a_different_value_for_a_stored_time_is_a_conflict_kept_not_a_duplicate(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    await store(engine, registry, IngestBatch(telemetry=[telemetry("press-c", (0, "temp", 210.0), (1, "temp", 211.0))]))
    # A misbehaving publisher reposts 08:00:00 with another value, and 08:00:01 unchanged (a plain redelivery).
    again = await store(
        engine, registry, IngestBatch(telemetry=[telemetry("press-c", (0, "temp", 999.0), (1, "temp", 211.0))])
    )
    assert (again.readings_inserted, again.duplicates, again.conflicts, again.dead_lettered) == (0, 1, 1, 1)
    # Inside one batch too: the first value offered stays, the second is the conflict.
    inside = await store(
        engine, registry, IngestBatch(telemetry=[telemetry("press-c", (5, "temp", 1.0), (5, "temp", 2.0))])
    )
    assert (inside.readings_inserted, inside.duplicates, inside.conflicts) == (1, 0, 1)
    async with session_factory(engine)() as session:
        values = dict((await session.execute(select(ReadingRow.ts, ReadingRow.value))).all())
        letters = list(await session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
    assert sorted(value for value in values.values() if value is not None) == [1.0, 210.0, 211.0]
    assert [letter.source for letter in letters] == ["conflict", "conflict"]
    assert letters[0].topic == "shopfloor/v1/plant1/press-c/telemetry"
    assert "holds 210.0 (quality good); offered 999.0 (quality good): the first value stays" in letters[0].reason


async def test_a_gateways_newest_status_and_backlog_are_kept(engine: AsyncEngine) -> None:
    registry = MachineRegistry(auto_register=True)
    waiting = GatewayBacklog(messages=40, readings=8000, oldest_age_s=30.0, bytes=65536, max_bytes=2**30)
    newer = GatewayStatus("plant1", "gw-1", True, T0 + timedelta(seconds=10), waiting)
    older = GatewayStatus("plant1", "gw-1", False, T0)  # a late redelivery changes nothing
    other = GatewayStatus("plant1", "gw-2", False, T0)
    await store(engine, registry, IngestBatch(gateways=[newer, older, other]))
    await store(engine, registry, IngestBatch(gateways=[older]))
    async with session_factory(engine)() as session:
        rows = {row.gateway_id: row for row in await session.scalars(select(Gateway))}
    assert (rows["gw-1"].online, rows["gw-1"].backlog_readings, rows["gw-1"].backlog_seconds_to_full) == (
        True,
        8000,
        None,
    )
    assert (rows["gw-2"].online, rows["gw-2"].backlog_messages) == (False, None)
    # Its will (no backlog) says offline and keeps the last figures.
    will = GatewayStatus("plant1", "gw-1", False, T0 + timedelta(minutes=1))
    await store(engine, registry, IngestBatch(gateways=[will]))
    async with session_factory(engine)() as session:
        row = await session.get(Gateway, ("plant1", "gw-1"))
        assert row is not None
        assert (row.online, row.backlog_readings, row.backlog_messages) == (False, 8000, 40)


async def test_sequence_gaps_are_kept_per_machine_in_the_batch_transaction(engine: AsyncEngine) -> None:
    """ingestor/sequence.py on both databases: late numbers fill holes; a number missing past the window counts."""
    registry = MachineRegistry(auto_register=True)
    tracker = SequenceTracker(reorder=timedelta(seconds=60))

    async def offer(*numbers: int, after_s: float) -> dict[tuple[str, str], int]:
        batch = IngestBatch(
            telemetry=[
                Telemetry("plant1", "seq-1", number, [TagReading(T0 + timedelta(seconds=number), "t", 1.0)], [])
                for number in numbers
            ]
        )
        async with engine.begin() as conn:
            result = await write_batch(conn, batch, registry=registry)
            now = T0 + timedelta(seconds=after_s)
            tracked = await tracker.track(conn, batch.telemetry, result.machine_ids, now=now)
        registry.remember(result.machine_ids)
        tracker.committed(tracked)
        return tracked.gaps

    assert await offer(1, 2, 4, after_s=0) == {}
    assert await offer(6, after_s=30) == {}
    assert await offer(3, 7, after_s=90) == {}  # 3 came late: not a gap; 5 is awaited from now
    assert await offer(8, after_s=200) == {("plant1", "seq-1"): 1}  # 5 never came
    async with session_factory(engine)() as session:
        record = (await session.scalars(select(TelemetrySeq))).one()
    assert (record.contiguous, record.ahead, record.missing_total) == (8, b"", 1)

"""The machine registry, machine API keys, and HTTP ingestion through the shared write path."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.contract import ContractError, TimeWindow, decode_telemetry, telemetry_topic
from core.errors import Conflict, InvalidInput, NotFound
from core.ingest import IngestBatch, MachineRegistry, WriteResult, write_batch
from core.models import (
    Machine,
    MachineApiKey,
    MachineLatest,
    MachineStateChange,
    Reading,
    Role,
    StageAssignment,
    StageStatus,
    TagRange,
    WorkOrderStage,
)
from core.security import Principal

KEY_PREFIX = "sfk_"


@dataclass(frozen=True)
class NewMachine:
    """The fields of a machine to register."""

    site: str
    code: str
    name: str
    machine_type: str | None
    location: str | None
    ideal_cycle_time_s: float | None
    send_job_data_on_start: bool = False


def hash_key(key: str) -> str:
    """Keys are long random strings, so a plain SHA-256 is enough (and cheap on every request)."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_machine(session: AsyncSession, *, actor: Principal, machine: NewMachine) -> Machine:
    """Register a machine; a (site, code) pair is unique."""
    taken = await session.scalar(select(Machine.id).where(Machine.site == machine.site, Machine.code == machine.code))
    if taken is not None:
        raise Conflict(
            f"Machine {machine.site}/{machine.code} exists already (id {taken})",
            code="machine_exists",
            fields={"site": "already in use", "code": "already in use"},
        )
    row = Machine(**vars(machine), auto_registered=False)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def get_machine(session: AsyncSession, *, machine_id: int) -> Machine:
    """One machine."""
    machine = await session.get(Machine, machine_id)
    if machine is None:
        raise NotFound(f"Machine {machine_id} does not exist")
    return machine


async def list_machines(
    session: AsyncSession, *, site: str | None, online: bool | None, limit: int, offset: int, archived: bool = False
) -> tuple[list[Machine], int]:
    """A page of machines by site and code: the active ones, or only the archived ones."""
    query = select(Machine).where(Machine.archived_at.is_not(None) if archived else Machine.archived_at.is_(None))
    if site is not None:
        query = query.where(Machine.site == site)
    if online is not None:
        query = query.where(Machine.online.is_(online))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(Machine.site, Machine.code).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def update_machine(
    session: AsyncSession, *, actor: Principal, machine_id: int, changes: dict[str, object]
) -> Machine:
    """Change a machine's description (name, type, location, ideal cycle time) or whether its stages' job data is
    sent when they start."""
    machine = await get_machine(session, machine_id=machine_id)
    if changes.get("name", "") is None:
        raise InvalidInput("A machine needs a name", fields={"name": "may not be null"})
    if "send_job_data_on_start" in changes and changes["send_job_data_on_start"] is None:
        raise InvalidInput(
            "send_job_data_on_start is true or false", fields={"send_job_data_on_start": "may not be null"}
        )
    for key, value in changes.items():
        setattr(machine, key, value)
    await session.flush()
    await session.refresh(machine)
    return machine


async def archive_machine(
    session: AsyncSession,
    *,
    actor: Principal,
    machine_id: int,
    delete_readings: bool,
    confirm: str | None,
    now: datetime,
) -> Machine:
    """Archive a machine: the ingestor stores nothing more for it and its keys are revoked. Its readings, latest
    values and states are kept, or deleted when asked with `confirm` equal to the machine's code."""
    machine = await get_machine(session, machine_id=machine_id)
    if delete_readings:
        if confirm != machine.code:
            raise InvalidInput(
                "Deleting a machine's readings needs confirm= set to its code",
                fields={"confirm": f"must be {machine.code!r}"},
            )
        for table in (Reading, MachineLatest, MachineStateChange):
            await session.execute(delete(table).where(table.machine_id == machine.id))
    if machine.archived_at is None:
        machine.archived_at = now
    await session.execute(
        update(MachineApiKey)
        .where(MachineApiKey.machine_id == machine.id, MachineApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.flush()
    await session.refresh(machine)
    return machine


async def create_api_key(
    session: AsyncSession, *, actor: Principal, machine_id: int, revoke_others: bool, now: datetime
) -> tuple[MachineApiKey, str]:
    """A new key for a machine (the secret is returned once); earlier keys are revoked unless asked not to."""
    machine = await get_machine(session, machine_id=machine_id)
    if revoke_others:
        await session.execute(
            update(MachineApiKey)
            .where(MachineApiKey.machine_id == machine.id, MachineApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = MachineApiKey(
        machine_id=machine.id,
        prefix=secret[:12],
        key_hash=hash_key(secret),
        created_at=now,
        created_by_id=actor.user_id,
    )
    session.add(key)
    await session.flush()
    return key, secret


async def list_api_keys(session: AsyncSession, *, machine_id: int) -> list[MachineApiKey]:
    """Every key of a machine, newest first."""
    machine = await get_machine(session, machine_id=machine_id)
    rows = await session.scalars(
        select(MachineApiKey).where(MachineApiKey.machine_id == machine.id).order_by(MachineApiKey.id.desc())
    )
    return list(rows)


async def revoke_api_key(session: AsyncSession, *, machine_id: int, key_id: int, now: datetime) -> None:
    """Revoke one key; revoking twice is harmless."""
    key = await session.get(MachineApiKey, key_id)
    if key is None or key.machine_id != machine_id:
        raise NotFound(f"Key {key_id} does not exist for machine {machine_id}")
    if key.revoked_at is None:
        key.revoked_at = now
    await session.flush()


async def machine_for_key(session: AsyncSession, *, key: str) -> int | None:
    """The machine an active key belongs to."""
    machine_id: int | None = await session.scalar(
        select(MachineApiKey.machine_id).where(
            MachineApiKey.key_hash == hash_key(key), MachineApiKey.revoked_at.is_(None)
        )
    )
    return machine_id


async def ingest_readings(
    session: AsyncSession, *, machine_id: int, payload: bytes, received_at: datetime, window: TimeWindow
) -> WriteResult:
    """Decode a contract payload for this machine and store it through the same write path as MQTT."""
    machine = await get_machine(session, machine_id=machine_id)
    try:
        message = decode_telemetry(
            telemetry_topic(machine.site, machine.code), payload, received_at=received_at, window=window
        )
    except ContractError as error:
        raise InvalidInput(str(error), fields={"body": str(error)}, code="invalid_telemetry") from None
    connection = await session.connection()
    return await write_batch(
        connection, IngestBatch(telemetry=[message]), registry=MachineRegistry(auto_register=False)
    )


@dataclass(frozen=True)
class MachineNow:
    """What a machine is doing: its last reported state and since when, and the stage running on it."""

    state: str | None
    state_since: datetime | None
    running_stage_id: int | None


async def machines_now(session: AsyncSession, *, actor: Principal, machine_ids: list[int]) -> dict[int, MachineNow]:
    """The current state and running stage of each machine, in two queries (the operator's list in one request).

    A worker sees the running stage only when it is assigned to them, as everywhere else."""
    if not machine_ids:
        return {}
    latest = (
        select(MachineStateChange.machine_id, func.max(MachineStateChange.ts).label("ts"))
        .where(MachineStateChange.machine_id.in_(machine_ids))
        .group_by(MachineStateChange.machine_id)
        .subquery()
    )
    states = {
        machine_id: (state.value, ts)
        for machine_id, state, ts in await session.execute(
            select(MachineStateChange.machine_id, MachineStateChange.state, MachineStateChange.ts).join(
                latest,
                (latest.c.machine_id == MachineStateChange.machine_id) & (latest.c.ts == MachineStateChange.ts),
            )
        )
    }
    running = (
        select(WorkOrderStage.machine_id, WorkOrderStage.id, WorkOrderStage.status)
        .where(WorkOrderStage.machine_id.in_(machine_ids))
        .where(WorkOrderStage.status.in_((StageStatus.IN_PROGRESS, StageStatus.PAUSED)))
        .order_by(WorkOrderStage.status, WorkOrderStage.id.desc())
    )
    if actor.role is Role.WORKER:
        mine = select(StageAssignment.stage_id).where(StageAssignment.user_id == actor.user_id)
        running = running.where(WorkOrderStage.id.in_(mine))
    stages: dict[int, int] = {}
    for machine_id, stage_id, _status in await session.execute(running):
        # Ordered in progress before paused ("in_progress" < "paused"), then the newest: the first one wins.
        if machine_id is not None:
            stages.setdefault(machine_id, stage_id)
    return {
        machine_id: MachineNow(
            state=states[machine_id][0] if machine_id in states else None,
            state_since=states[machine_id][1] if machine_id in states else None,
            running_stage_id=stages.get(machine_id),
        )
        for machine_id in machine_ids
    }


async def tag_ranges(session: AsyncSession, *, machine_id: int) -> list[TagRange]:
    """The machine's tag ranges, by tag."""
    await get_machine(session, machine_id=machine_id)
    return list(await session.scalars(select(TagRange).where(TagRange.machine_id == machine_id).order_by(TagRange.tag)))


async def set_tag_range(session: AsyncSession, *, machine_id: int, tag: str, low: float, high: float) -> TagRange:
    """Set (or replace) a tag's range; from the next batch on, the ingestor stores values outside it as bad."""
    await get_machine(session, machine_id=machine_id)
    if low > high:
        raise InvalidInput(
            f"low {low} is above high {high}", fields={"low": "must not be above high"}, code="invalid_range"
        )
    row = await session.get(TagRange, (machine_id, tag))
    if row is None:
        row = TagRange(machine_id=machine_id, tag=tag, low=low, high=high)
        session.add(row)
    else:
        row.low, row.high = low, high
    await session.flush()
    return row


async def delete_tag_range(session: AsyncSession, *, machine_id: int, tag: str) -> None:
    """Remove a tag's range (what was stored as bad stays so)."""
    row = await session.get(TagRange, (machine_id, tag))
    if row is None:
        raise NotFound(f"Machine {machine_id} has no range for {tag}")
    await session.delete(row)
    await session.flush()

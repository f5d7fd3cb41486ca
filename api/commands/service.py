"""Commands to machines: what may be written (the registry's writable tags), the checks before a command is sent,
and its audit row. Publishing is the router's (it needs the row committed first, see there)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.commands import CommandPayload, CommandStatus, CommandWrite, WriteLimits, WriteValue
from core.contract import ContractError
from core.errors import Conflict, InvalidInput, NotFound
from core.models import Machine, MachineCommand, MachineLatest, UserAccount, WorkOrder, WorkOrderStage, WritableTag
from core.security import Principal

UNANSWERED = "no result from the gateway before the command expired"


class JobField(StrEnum):
    """What a writable tag takes when a stage's job data is sent to its machine."""

    WORK_ORDER_ID = "work_order_id"
    STAGE_ID = "stage_id"
    TARGET_QTY = "target_qty"  # the work order's quantity
    IDEAL_CYCLE_TIME_S = "ideal_cycle_time_s"  # the machine's ideal cycle time


def limits_of(row: WritableTag) -> WriteLimits:
    """A registry row's limits, checked by the same rules as the gateway's configuration."""
    return WriteLimits(type=row.value_type, min=row.min, max=row.max, allowed=row.allowed)  # type: ignore[arg-type]


async def writable_tags(session: AsyncSession, *, machine_id: int) -> list[WritableTag]:
    """The machine's writable tags, by tag."""
    await _machine(session, machine_id)
    query = select(WritableTag).where(WritableTag.machine_id == machine_id).order_by(WritableTag.tag)
    rows = await session.scalars(query)
    return list(rows)


async def set_writable_tag(
    session: AsyncSession,
    *,
    machine_id: int,
    tag: str,
    limits: WriteLimits,
    job_field: JobField | None,
    description: str | None,
) -> WritableTag:
    """Let commands write this tag within these limits (replacing what was set)."""
    await _machine(session, machine_id)
    if job_field is not None:
        taken = await session.scalar(
            select(WritableTag.tag).where(
                WritableTag.machine_id == machine_id, WritableTag.job_field == job_field, WritableTag.tag != tag
            )
        )
        if taken is not None:
            raise Conflict(
                f"Tag {taken} already takes the job field {job_field}",
                code="job_field_taken",
                fields={"job_field": f"already taken by {taken}"},
            )
    row = await session.get(WritableTag, (machine_id, tag))
    if row is None:
        row = WritableTag(machine_id=machine_id, tag=tag)
        session.add(row)
    row.value_type, row.min, row.max, row.allowed = limits.type, limits.min, limits.max, limits.allowed
    row.job_field = job_field.value if job_field is not None else None
    row.description = description
    await session.flush()
    return row


async def delete_writable_tag(session: AsyncSession, *, machine_id: int, tag: str) -> None:
    """Commands may no longer write this tag (commands already sent keep their rows)."""
    row = await session.get(WritableTag, (machine_id, tag))
    if row is None:
        raise NotFound(f"Tag {tag} of machine {machine_id} is not writable")
    await session.delete(row)
    await session.flush()


@dataclass(frozen=True)
class CommandRequest:
    """What was asked: writes, or the job data of a stage (exactly one)."""

    writes: list[CommandWrite] | None
    stage_id: int | None
    expires_in_s: int


async def create_command(
    session: AsyncSession, *, actor: Principal, machine_id: int, request: CommandRequest, now: datetime
) -> tuple[MachineCommand, Machine]:
    """Check a command against the machine's writable tags and record it as sent (the caller publishes it after
    the commit). Nothing is recorded when a check fails."""
    machine = await _machine(session, machine_id)
    if machine.archived_at is not None:
        raise Conflict(f"Machine {machine_id} is archived", code="machine_archived")
    registry = {row.tag: row for row in await writable_tags(session, machine_id=machine_id)}
    if request.stage_id is not None:
        writes = await _job_data(session, machine, registry, stage_id=request.stage_id)
    else:
        assert request.writes is not None  # noqa: S101 -- the schema gives exactly one of the two
        writes = request.writes
    checked: list[tuple[str, WriteValue]] = []
    for index, write in enumerate(writes):
        row = registry.get(write.tag)
        if row is None:
            raise InvalidInput(
                f"Tag {write.tag} is not writable on machine {machine.code}",
                fields={f"writes.{index}.tag": "not writable on this machine"},
                code="tag_not_writable",
            )
        try:
            checked.append((write.tag, limits_of(row).check(write.value)))
        except ContractError as error:
            raise InvalidInput(
                f"Tag {write.tag}: {error}", fields={f"writes.{index}.value": str(error)}, code="value_refused"
            ) from None
    tags = [tag for tag, _ in checked]
    if len(set(tags)) != len(tags):
        raise InvalidInput("A tag is written at most once per command", code="tag_repeated")
    latest = await session.execute(
        select(MachineLatest.tag, MachineLatest.value).where(
            MachineLatest.machine_id == machine_id, MachineLatest.tag.in_(tags)
        )
    )
    old = {row.tag: row.value for row in latest}
    command = MachineCommand(
        id=uuid.uuid4(),
        machine_id=machine_id,
        requested_by_id=actor.user_id,
        requested_at=now,
        expires_at=now + timedelta(seconds=request.expires_in_s),
        writes=[{"tag": tag, "value": value, "old_value": old.get(tag)} for tag, value in checked],
        stage_id=request.stage_id,
        status=CommandStatus.SENT,
    )
    session.add(command)
    await session.flush()
    return command, machine


async def _job_data(
    session: AsyncSession, machine: Machine, registry: dict[str, WritableTag], *, stage_id: int
) -> list[CommandWrite]:
    """The writes that give a stage's job data to its machine: one per writable tag that takes a job field."""
    stage = await session.get(WorkOrderStage, stage_id)
    if stage is None:
        raise NotFound(f"Stage {stage_id} does not exist")
    if stage.machine_id != machine.id:
        raise InvalidInput(
            f"Stage {stage_id} is not set to run on machine {machine.code}",
            fields={"stage_id": "not a stage of this machine"},
            code="stage_not_on_machine",
        )
    work_order = await session.get_one(WorkOrder, stage.work_order_id)
    values: dict[str, WriteValue | None] = {
        JobField.WORK_ORDER_ID: work_order.id,
        JobField.STAGE_ID: stage.id,
        JobField.TARGET_QTY: work_order.qty,
        JobField.IDEAL_CYCLE_TIME_S: machine.ideal_cycle_time_s,
    }
    fields = {row.job_field: row.tag for row in registry.values() if row.job_field is not None}
    if not fields:
        raise InvalidInput(
            f"Machine {machine.code} has no writable tag that takes job data (set job_field on its writable tags)",
            code="no_job_data_tags",
        )
    writes = []
    for field, tag in sorted(fields.items()):
        value = values[field]
        if value is None:
            raise InvalidInput(f"The job field {field} has no value for this stage", code="job_field_missing")
        writes.append(CommandWrite(tag=tag, value=value))
    return writes


def payload_of(command: MachineCommand, *, issued_by: str) -> CommandPayload:
    """The command as the gateway receives it."""
    return CommandPayload(
        id=command.id,
        writes=[CommandWrite(tag=write["tag"], value=write["value"]) for write in command.writes],
        expires_at=command.expires_at,
        issued_at=command.requested_at,
        issued_by=issued_by,
    )


async def record_not_sent(
    session: AsyncSession, *, command_id: uuid.UUID, reason: str, maybe_sent: bool, now: datetime
) -> None:
    """The broker did not take the command: it is failed, and the row says why (nothing can execute it). When the
    broker may hold it all the same (no PUBACK came back), it stays `sent` with the reason: the gateway's answer, or
    its expiry, will tell what happened."""
    command = await session.get(MachineCommand, command_id)
    if command is None or command.status is not CommandStatus.SENT:
        return
    command.reason = reason
    if not maybe_sent:
        command.status, command.finished_at = CommandStatus.FAILED, now
    await session.flush()


@dataclass(frozen=True)
class CommandView:
    """A command as the API shows it: its row, who asked, and its status as of now."""

    command: MachineCommand
    requested_by: str
    status: CommandStatus
    reason: str | None

    @property
    def writes(self) -> list[dict[str, Any]]:
        """Each write with what the gateway saw before and read back after, when it answered."""
        outcome = {item["tag"]: item for item in self.command.outcome or []}
        return [
            {
                **write,
                "previous": outcome.get(write["tag"], {}).get("previous"),
                "read_back": outcome.get(write["tag"], {}).get("read_back"),
            }
            for write in self.command.writes
        ]


def view(command: MachineCommand, requested_by: str, *, now: datetime) -> CommandView:
    """A `sent` command past its expiry shows as expired: the gateway refuses it from then on. The row keeps
    `sent`, so a result the gateway buffered through an outage still lands and tells what really happened."""
    if command.status is CommandStatus.SENT and now >= command.expires_at:
        return CommandView(command, requested_by, CommandStatus.EXPIRED, UNANSWERED)
    return CommandView(command, requested_by, command.status, command.reason)


async def list_commands(
    session: AsyncSession, *, machine_id: int, stage_id: int | None = None, limit: int, offset: int, now: datetime
) -> tuple[list[CommandView], int]:
    """A page of the machine's commands (those of one stage's job data when `stage_id` is given), newest first."""
    await _machine(session, machine_id)
    where = MachineCommand.machine_id == machine_id
    if stage_id is not None:
        where &= MachineCommand.stage_id == stage_id
    total = await session.scalar(select(func.count()).select_from(MachineCommand).where(where))
    rows = await session.execute(
        select(MachineCommand, UserAccount.username)
        .join(UserAccount, UserAccount.id == MachineCommand.requested_by_id)
        .where(where)
        .order_by(MachineCommand.requested_at.desc(), MachineCommand.id)
        .limit(limit)
        .offset(offset)
    )
    return [view(command, username, now=now) for command, username in rows], int(total or 0)


async def get_command(session: AsyncSession, *, machine_id: int, command_id: uuid.UUID, now: datetime) -> CommandView:
    """One command of the machine."""
    row = (
        await session.execute(
            select(MachineCommand, UserAccount.username)
            .join(UserAccount, UserAccount.id == MachineCommand.requested_by_id)
            .where(MachineCommand.id == command_id, MachineCommand.machine_id == machine_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"Machine {machine_id} has no command {command_id}")
    command, username = row
    return view(command, username, now=now)


async def _machine(session: AsyncSession, machine_id: int) -> Machine:
    machine = await session.get(Machine, machine_id)
    if machine is None:
        raise NotFound(f"Machine {machine_id} does not exist")
    return machine

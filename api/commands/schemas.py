"""Request and response bodies of the command routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.commands.service import CommandView, JobField, limits_of
from api.schemas import InputModel
from core.commands import MAX_WRITES, CommandStatus, CommandWrite, WriteLimits, WriteType, WriteValue
from core.contract import TAG_PATTERN
from core.models import WritableTag

Finite = Annotated[float, Field(allow_inf_nan=False)]


class WritableTagIn(InputModel):
    """What commands may write to a tag: its type, a range or a set of allowed values, and optionally the job
    field it takes when a stage's job data is sent. The gateway's own configuration must allow it too."""

    type: WriteType = "float"
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    allowed: Annotated[list[Finite], Field(min_length=1, max_length=64)] | None = None
    job_field: JobField | None = None
    description: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _limits_hold(self) -> Self:
        self.limits()  # the contract's own rules (min <= max, no range on bool, whole numbers for int)
        return self

    def limits(self) -> WriteLimits:
        """The limits as both sides check them."""
        return WriteLimits(type=self.type, min=self.min, max=self.max, allowed=self.allowed)


class WritableTagRead(BaseModel):
    """A tag commands may write on a machine."""

    tag: str
    type: WriteType
    min: float | None
    max: float | None
    allowed: list[float] | None
    job_field: JobField | None
    description: str | None

    @classmethod
    def of(cls, row: WritableTag) -> Self:
        limits = limits_of(row)
        return cls(
            tag=row.tag,
            type=limits.type,
            min=limits.min,
            max=limits.max,
            allowed=limits.allowed,
            job_field=JobField(row.job_field) if row.job_field is not None else None,
            description=row.description,
        )


class CommandIn(InputModel):
    """One of: a `tag` and a `value`; several `writes`; or `stage_id` to send that stage's job data (the work
    order's id and quantity, the stage's id, the machine's ideal cycle time) to the tags that take them. Strict: a
    command to a machine takes its values as sent (`"5"` or `true` for a number is refused, never converted)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tag: str | None = Field(default=None, pattern=f"^{TAG_PATTERN}$")
    value: WriteValue | None = None
    writes: Annotated[list[CommandWrite], Field(min_length=1, max_length=MAX_WRITES)] | None = None
    stage_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    expires_in_s: int | None = Field(
        default=None, ge=1, le=3600, description="Seconds the gateway may still execute it (default COMMAND_EXPIRY_S)"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        single = self.tag is not None or self.value is not None
        if single and (self.tag is None or self.value is None):
            raise ValueError("tag and value go together")
        if sum((single, self.writes is not None, self.stage_id is not None)) != 1:
            raise ValueError("give exactly one of: tag and value, writes, stage_id")
        return self

    def to_writes(self) -> list[CommandWrite] | None:
        if self.tag is not None and self.value is not None:
            return [CommandWrite(tag=self.tag, value=self.value)]
        return self.writes


class CommandWriteRead(BaseModel):
    """One write: the value asked for, the latest value stored when it was asked (`old_value`), and what the
    gateway read from the device just before writing (`previous`) and just after (`read_back`)."""

    tag: str
    value: WriteValue
    old_value: float | None
    previous: WriteValue | None
    read_back: WriteValue | None


class CommandRead(BaseModel):
    """A command and its outcome. `sent` until the gateway answers; a `sent` command past its expiry shows as
    `expired` (the gateway refuses it from then on)."""

    id: uuid.UUID
    machine_id: int
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    stage_id: int | None
    status: CommandStatus
    reason: str | None
    finished_at: datetime | None
    gateway_id: str | None
    writes: list[CommandWriteRead]

    @classmethod
    def of(cls, item: CommandView) -> Self:
        command = item.command
        return cls(
            id=command.id,
            machine_id=command.machine_id,
            requested_by=item.requested_by,
            requested_at=command.requested_at,
            expires_at=command.expires_at,
            stage_id=command.stage_id,
            status=item.status,
            reason=item.reason,
            finished_at=command.finished_at,
            gateway_id=command.gateway_id,
            writes=[CommandWriteRead.model_validate(write) for write in item.writes],
        )

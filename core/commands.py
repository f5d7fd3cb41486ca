"""Commands to machines in MQTT contract v1: topics, payloads, a writable tag's limits.

The API publishes a command on `shopfloor/v1/{site}/{machine}/command` (QoS 1, not retained); the gateway that
serves the machine checks it again against its own configuration, writes, reads back and publishes the outcome on
`…/command/result`, which the ingestor records on the command's row. Both sides check a value with the same
`WriteLimits`, so what the API accepts and what the gateway accepts cannot drift apart by code.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.contract import PREFIX, TAG_PATTERN, ContractError, check_code

MAX_WRITES = 32
MAX_COMMAND_BYTES = 16 * 1024
MAX_REASON_CHARS = 500
# A command's numbers travel as JSON and are written by 64-bit codecs at most.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

COMMAND_FILTER = f"{PREFIX}/+/+/command"
COMMAND_RESULT_FILTER = f"{PREFIX}/+/+/command/result"

WriteValue = bool | int | float
WriteType = Literal["bool", "int", "float"]


class CommandStatus(StrEnum):
    """Where a command is. `sent` until its result arrives; the rest are final."""

    SENT = "sent"  # published to the broker (PUBACK received); the gateway has not answered yet
    DONE = "done"  # written and read back equal
    REFUSED = "refused"  # not executed: the gateway's configuration does not allow it (reason says why)
    FAILED = "failed"  # executed or attempted, and it went wrong (device error, read-back differs, broker down)
    EXPIRED = "expired"  # not executed: it arrived after its expiry, or no answer came before it


FINAL_STATUSES = frozenset({CommandStatus.DONE, CommandStatus.REFUSED, CommandStatus.FAILED, CommandStatus.EXPIRED})
Model = TypeVar("Model", bound=BaseModel)
RESULT_STATUSES = Literal["done", "refused", "failed", "expired"]


def command_topic(site: str, machine: str) -> str:
    """Where commands for one machine go (published by the API's login only)."""
    return f"{PREFIX}/{check_code(site, 'site')}/{check_code(machine, 'machine')}/command"


def command_result_topic(site: str, machine: str) -> str:
    """Where the gateway answers a machine's commands."""
    return f"{command_topic(site, machine)}/result"


def parse_command_topic(topic: str, *, result: bool) -> tuple[str, str]:
    """(site, machine) of a command topic (`result=False`) or a command result topic; ContractError otherwise."""
    parts = topic.split("/")
    size = 6 if result else 5
    if (
        len(parts) != size
        or "/".join(parts[:2]) != PREFIX
        or parts[4] != "command"
        or (result and parts[5] != "result")
    ):
        raise ContractError(f"not a command{' result' if result else ''} topic: {topic[:200]!r}")
    return check_code(parts[2], "site"), check_code(parts[3], "machine")


class WriteLimits(BaseModel):
    """What may be written to one tag: its type, and a range or a set of allowed values.

    The gateway's configuration (`writable:` on a tag) and the machine registry (`PUT /machines/{id}/writable-tags`)
    both hold these; each side refuses a value they do not allow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: WriteType = "float"
    min: float | None = None
    max: float | None = None
    allowed: Annotated[list[float], Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        bounds = [bound for bound in (self.min, self.max) if bound is not None]
        if any(not math.isfinite(bound) for bound in bounds) or any(not math.isfinite(v) for v in self.allowed or []):
            raise ValueError("limits must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.type == "bool" and (bounds or self.allowed is not None):
            raise ValueError("a bool tag takes neither min/max nor allowed values")
        if self.allowed is not None and bounds:
            raise ValueError("give either min/max or allowed values, not both")
        if self.type == "int" and any(not float(v).is_integer() for v in [*bounds, *(self.allowed or [])]):
            raise ValueError("an int tag's limits must be whole numbers")
        return self

    def check(self, value: object) -> WriteValue:
        """The value as the tag's type, or ContractError saying why it may not be written."""
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            raise ContractError(f"expects true or false, not {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ContractError(f"expects a number, not {value!r}")
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise ContractError("is out of the 64-bit range a command can carry")
        if not math.isfinite(value):
            raise ContractError(f"expects a finite number, not {value!r}")
        if self.type == "int":
            if not float(value).is_integer():
                raise ContractError(f"expects a whole number, not {value!r}")
            value = int(value)
            if not INT64_MIN <= value <= INT64_MAX:
                raise ContractError("is out of the 64-bit range a command can carry")
        else:
            value = float(value)
        if self.min is not None and value < self.min:
            raise ContractError(f"{value} is below the minimum {self.min:g}")
        if self.max is not None and value > self.max:
            raise ContractError(f"{value} is above the maximum {self.max:g}")
        if self.allowed is not None and value not in self.allowed:
            raise ContractError(f"{value} is not one of the allowed values {', '.join(f'{v:g}' for v in self.allowed)}")
        return value


class CommandWrite(BaseModel):
    """One tag to set to one value, as sent: `"5"` for a number is refused, never converted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tag: str = Field(pattern=f"^{TAG_PATTERN}$")
    value: WriteValue


class CommandPayload(BaseModel):
    """A command as published: what to write, who asked, and until when it may still be executed."""

    model_config = ConfigDict(extra="ignore")  # newer fields a gateway does not know are ignored, not refused

    id: uuid.UUID
    writes: Annotated[list[CommandWrite], Field(min_length=1, max_length=MAX_WRITES)]
    expires_at: AwareDatetime
    issued_at: AwareDatetime
    issued_by: str = Field(max_length=64)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        tags = [write.tag for write in self.writes]
        if len(set(tags)) != len(tags):
            raise ValueError("a tag is written at most once per command")
        return self


class WriteOutcome(BaseModel):
    """One write as the gateway saw it: the value before, the value read back after."""

    model_config = ConfigDict(extra="ignore")

    tag: str = Field(pattern=f"^{TAG_PATTERN}$")
    previous: WriteValue | None = None
    read_back: WriteValue | None = None


class CommandResultPayload(BaseModel):
    """The gateway's answer to one command."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    status: RESULT_STATUSES
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    ts: AwareDatetime
    gateway: str | None = Field(default=None, max_length=64)
    writes: Annotated[list[WriteOutcome], Field(max_length=MAX_WRITES)] = Field(default_factory=list)


def _decode(payload: bytes, model: type[Model], what: str) -> Model:
    if len(payload) > MAX_COMMAND_BYTES:
        raise ContractError(f"{what} of {len(payload)} bytes is over the {MAX_COMMAND_BYTES}-byte limit")
    try:
        return model.model_validate(orjson.loads(payload))
    except orjson.JSONDecodeError as error:
        raise ContractError(f"{what} is not JSON: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise ContractError(f"{what}: {where}: {first['msg']}") from None


def decode_command(payload: bytes) -> CommandPayload:
    """A command as the gateway receives it; ContractError when it breaks the contract."""
    return _decode(payload, CommandPayload, "command")


def decode_result(payload: bytes) -> CommandResultPayload:
    """A command result as the ingestor receives it; ContractError when it breaks the contract."""
    return _decode(payload, CommandResultPayload, "command result")


def encode_command(command: CommandPayload) -> bytes:
    return orjson.dumps(command.model_dump(mode="json"))


def encode_result(
    command_id: uuid.UUID,
    status: RESULT_STATUSES,
    *,
    ts: datetime,
    reason: str | None = None,
    gateway: str | None = None,
    writes: list[WriteOutcome] | None = None,
) -> bytes:
    """The gateway's answer; a reason longer than the contract allows is cut, never refused."""
    result = CommandResultPayload(
        id=command_id,
        status=status,
        reason=reason[:MAX_REASON_CHARS] if reason is not None else None,
        ts=ts,
        gateway=gateway,
        writes=writes or [],
    )
    return orjson.dumps(result.model_dump(mode="json", exclude_none=True))

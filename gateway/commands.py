"""Commands to machines, the gateway's side: check a command against this gateway's configuration, write through
the machine's live source, read back, and say how it went. The MQTT contract is `core.commands`.

The checks run in a fixed order and nothing is written until every check of every write has passed: an expired
command is never written; a tag that is not on the machine, not writable, or a value its limits or the device's
data type refuse makes the whole command `refused`; a device that is not connected makes it `failed`. Then the
writes go out one by one, in the command's order, each read before and read back after; the first that fails or
reads back something else stops the command (`failed`, with what was written so far in `writes`).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from core.commands import RESULT_STATUSES, CommandPayload, WriteLimits, WriteOutcome, WriteValue
from core.contract import ContractError
from gateway.sources.base import TRANSIENT_DEVICE_ERRORS, WritableSource, WriteFailed, WriteRefused

# A float32 register or node keeps about 7 significant digits: a float read back within this relative distance of
# what was written is the same value. Integers and booleans must come back exactly.
FLOAT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class CommandOutcome:
    """How one command ended, as its result reports it."""

    status: RESULT_STATUSES
    reason: str | None = None
    writes: list[WriteOutcome] = field(default_factory=list)


async def execute_command(
    command: CommandPayload,
    *,
    machine: str,
    limits: Mapping[str, WriteLimits],
    source: WritableSource | None,
    now: datetime,
    lifetime_left_s: float | None = None,
) -> CommandOutcome:
    """Check `command` for `machine` (whose writable tags are `limits`) and, when everything allows it, write it
    through `source` (None: the device is not connected). Device errors become a `failed` outcome, never raise.

    Whether it has expired: by `lifetime_left_s` when the message carried one (MQTT 5's message expiry, counted
    down by the broker and then by this gateway's monotonic clock, so no wall clock is involved), else by its
    `expires_at` against `now`, this gateway's clock."""
    if lifetime_left_s is not None:
        if lifetime_left_s <= 0:
            return CommandOutcome(
                "expired",
                f"its lifetime (the message expiry, expires_at {command.expires_at.isoformat()}) ran out before it "
                "could be executed",
            )
    elif command.expires_at <= now:
        return CommandOutcome("expired", f"expired at {command.expires_at.isoformat()} before it could be executed")
    checked: list[tuple[str, WriteValue]] = []
    for write in command.writes:
        tag_limits = limits.get(write.tag)
        if tag_limits is None:
            return CommandOutcome("refused", f"tag {write.tag}: not a writable tag of machine {machine}")
        try:
            checked.append((write.tag, tag_limits.check(write.value)))
        except ContractError as error:
            return CommandOutcome("refused", f"tag {write.tag}: {error}")
    if source is None:
        return CommandOutcome("failed", "device not connected")
    for tag, value in checked:
        try:
            source.check_write(tag, value)
        except WriteRefused as error:
            return CommandOutcome("refused", f"tag {tag}: {error}")
    outcomes: list[WriteOutcome] = []
    for tag, value in checked:
        try:
            written = await source.write(tag, value)
        except TRANSIENT_DEVICE_ERRORS as error:
            previous = error.previous if isinstance(error, WriteFailed) else None
            outcomes.append(WriteOutcome(tag=tag, previous=previous))
            return CommandOutcome("failed", f"tag {tag}: {_describe(error)}{_after(outcomes)}", outcomes)
        outcomes.append(WriteOutcome(tag=tag, previous=written.previous, read_back=written.read_back))
        if not same_value(value, written.read_back):
            reason = f"tag {tag}: read back {written.read_back!r} after writing {value!r}{_after(outcomes)}"
            return CommandOutcome("failed", reason, outcomes)
    return CommandOutcome("done", writes=outcomes)


def same_value(written: WriteValue, read_back: WriteValue) -> bool:
    """Whether a value read back is the one written: exact for booleans and whole numbers, float32-close else."""
    if isinstance(written, bool) or isinstance(read_back, bool):
        return isinstance(written, bool) and isinstance(read_back, bool) and written == read_back
    if isinstance(written, int) and isinstance(read_back, int):
        return written == read_back
    if isinstance(written, int) and float(read_back).is_integer():
        return written == int(read_back)
    return math.isclose(written, read_back, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE * 1e-3)


def _after(outcomes: list[WriteOutcome]) -> str:
    done = [outcome.tag for outcome in outcomes[:-1]]
    return f" (already written: {', '.join(done)})" if done else ""


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def command_id_of(payload: bytes) -> uuid.UUID | None:
    """The id of a command that breaks the contract, when it can still be read, so that it can be answered."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return uuid.UUID(str(data.get("id")))
    except ValueError:
        return None

"""What the machine endpoints accept and return."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas import InputModel
from core.contract import CODE_PATTERN

Code = Annotated[str, StringConstraints(pattern=f"^{CODE_PATTERN}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
CycleTime = Annotated[float, Field(gt=0, le=86_400, description="Ideal cycle time in seconds (for OEE performance)")]


class MachineCreate(InputModel):
    """A machine on a site; `site` and `code` are the ones in its MQTT topics."""

    site: Code
    code: Code
    name: Name
    machine_type: ShortText | None = None
    location: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    ideal_cycle_time_s: CycleTime | None = None


class MachineUpdate(InputModel):
    """Change a machine's description; its site and code stay (they are its topic)."""

    name: Name | None = None
    machine_type: ShortText | None = None
    location: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    ideal_cycle_time_s: CycleTime | None = None


class MachineRead(BaseModel):
    """A machine with what the broker last said of it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    site: str
    code: str
    name: str
    machine_type: str | None
    location: str | None
    ideal_cycle_time_s: float | None
    auto_registered: bool
    online: bool | None
    status_changed_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime


class ApiKeyCreate(InputModel):
    """A new key; by default every earlier key of the machine is revoked (rotation)."""

    revoke_others: bool = True


class ApiKeyRead(BaseModel):
    """A key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """A new key: `key` is shown this once and stored only as a hash."""

    key: str


class IngestResultRead(BaseModel):
    """What a posted batch changed."""

    readings_offered: int
    readings_inserted: int
    duplicates: int
    states_inserted: int

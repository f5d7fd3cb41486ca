"""What clients need to know about this installation: the plant's time zone and whether commands to machines are on
(public, like /health)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Settings

router = APIRouter(tags=["health"])


class ConfigRead(BaseModel):
    """How clients should show and send times, and what they may offer."""

    plant_timezone: str = Field(
        description="IANA name of the plant's zone (PLANT_TIMEZONE): datetimes sent without an offset are read in it, "
        "and clients show plant time in it",
        examples=["Europe/Istanbul"],
    )
    commands_enabled: bool = Field(
        description="Whether this server sends commands to machines (COMMANDS_ENABLED): clients offer setpoints only "
        "when it does",
    )


@router.get("/config", response_model=ConfigRead)
async def get_config(settings: Settings) -> ConfigRead:
    """The plant's time zone, for clients that show plant time, and whether commands are on (no token needed)."""
    return ConfigRead(
        plant_timezone=settings.tracking.plant_timezone, commands_enabled=settings.commands.commands_enabled
    )

"""What clients need to know about this installation: the plant's time zone (public, like /health)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Settings

router = APIRouter(tags=["health"])


class ConfigRead(BaseModel):
    """How clients should show and send times."""

    plant_timezone: str = Field(
        description="IANA name of the plant's zone (PLANT_TIMEZONE): datetimes sent without an offset are read in it, "
        "and clients show plant time in it",
        examples=["Europe/Istanbul"],
    )


@router.get("/config", response_model=ConfigRead)
async def get_config(settings: Settings) -> ConfigRead:
    """The plant's time zone, for clients that show plant time (no token needed)."""
    return ConfigRead(plant_timezone=settings.tracking.plant_timezone)

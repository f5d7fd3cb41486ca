"""`GET /gateways`: each gateway's online status and its disk buffer's backlog, as its retained status last said
(stored by the ingestor in `gateway`), so an operator sees during a broker or network outage what waits at the edge
and how long the disk lasts."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from api.deps import CurrentUser, Session
from api.pagination import PAGED, Pagination
from core.models import Gateway

router = APIRouter(tags=["machines"])


class GatewayRead(BaseModel):
    """A gateway and its backlog as last reported (null where it never said; kept through its offline will, so an
    outage shows the figures the gateway last sent)."""

    model_config = ConfigDict(from_attributes=True)

    site: str
    gateway_id: str
    online: bool
    status_at: datetime = Field(description="When its latest status arrived")
    backlog_messages: int | None = Field(description="MQTT messages waiting in its disk buffer")
    backlog_readings: int | None = Field(description="Readings in those messages")
    backlog_oldest_age_s: float | None = Field(description="Age of the oldest waiting message, seconds")
    backlog_bytes: int | None = Field(description="Bytes the buffer uses")
    backlog_max_bytes: int | None = Field(description="The buffer's bound, bytes: beyond it the oldest are dropped")
    backlog_seconds_to_full: float | None = Field(
        description="How long until the bound at the current rate; null when the backlog is not growing"
    )


@router.get("/gateways", response_model=list[GatewayRead], responses=PAGED)
async def list_gateways(session: Session, _user: CurrentUser, page: Pagination) -> list[GatewayRead]:
    """The gateways heard of, by site and id."""
    total = await session.scalar(select(func.count()).select_from(Gateway))
    rows = await session.scalars(
        select(Gateway).order_by(Gateway.site, Gateway.gateway_id).limit(page.limit).offset(page.offset)
    )
    return page.respond([GatewayRead.model_validate(row) for row in rows], int(total or 0))

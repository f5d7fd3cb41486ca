"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import Context
from core.errors import Unavailable
from core.schema import current_revisions, head_revisions

router = APIRouter(tags=["health"])


class HealthRead(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


class ReadyRead(BaseModel):
    """The database answers and its schema is at the newest revision."""

    status: Literal["ready"] = "ready"
    database: Literal["ok"] = "ok"
    schema_revision: list[str]


@router.get("/health", response_model=HealthRead)
async def health() -> HealthRead:
    """Liveness: the process is up (touches nothing else)."""
    return HealthRead()


@router.get("/ready", response_model=ReadyRead, responses={503: {"description": "Not ready"}})
async def ready(context: Context) -> ReadyRead:
    """Readiness: the database is reachable and migrated to head."""
    engine = context.engine
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            current = await connection.run_sync(current_revisions)
    except (SQLAlchemyError, OSError) as error:
        raise Unavailable(
            f"The database is not reachable: {type(error).__name__}", code="database_unreachable"
        ) from None
    heads = head_revisions()
    if current != heads:
        raise Unavailable(
            f"The schema is at {sorted(current) or 'no revision'}, expected {sorted(heads)}: run `shopfloor migrate`",
            code="schema_outdated",
        )
    return ReadyRead(schema_revision=sorted(current))

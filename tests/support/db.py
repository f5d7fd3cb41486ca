"""Database helpers shared by the test tiers."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models import Base


async def empty_tables(engine: AsyncEngine) -> None:
    """Delete every row of every table (children first), leaving the schema as the migrations made it."""
    async with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(delete(table))

"""The bare route `make bench-api` compares the API with: one FastAPI route reading one row through our pool.

    uvicorn bench.bare_app:app --workers N   (DATABASE_URL and DB_POOL_* from the environment, as the API reads them)

No middleware, authentication, session or serialisation beyond FastAPI's own: what any endpoint of any FastAPI app
on this database pays at least. The engine is made by `core.db.create_engine_from_settings` from the same settings,
so the pool (size, overflow, no pre-ping) and the statement timeout are the API's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import text

from core.db import create_engine_from_settings
from core.settings import DatabaseSettings

ONE_ROW = text("SELECT id, username, role FROM user_account WHERE id = :id")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One engine per worker process, disposed at shutdown."""
    engine = create_engine_from_settings(DatabaseSettings())
    app.state.engine = engine
    try:
        yield
    finally:
        await engine.dispose()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/bare")
async def bare(request: Request, user_id: int) -> dict[str, object]:
    """One user row by primary key, through a pooled connection."""
    async with request.app.state.engine.connect() as conn:
        row = (await conn.execute(ONE_ROW, {"id": user_id})).one()
    return {"id": row.id, "username": row.username, "role": row.role}

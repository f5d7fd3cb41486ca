"""The app under test behind an HTTP client (`Api`), its settings, and logging in to it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from api.app import create_app
from api.context import context_of
from core.models import Role, UserAccount
from core.settings import (
    ApiProcessSettings,
    ApiSettings,
    AuthSettings,
    DatabaseSettings,
    Environment,
    RuntimeSettings,
)
from tests.support.db import Database
from tests.support.factories import TEST_PASSWORD, TEST_PASSWORDS, make_user

Headers = dict[str, str]
P = ParamSpec("P")
T = TypeVar("T")
# The address requests come from (login throttling and the login log lines name it).
CLIENT_ADDRESS = ("203.0.113.7", 50000)


def make_settings(database_url: str, *, api: Mapping[str, object] | None = None, **auth: object) -> ApiProcessSettings:
    """Settings for an app under test; `auth` overrides AuthSettings fields, `api` ApiSettings fields."""
    return ApiProcessSettings(
        runtime=RuntimeSettings(shopfloor_env=Environment.TEST),
        database=DatabaseSettings(database_url=database_url, db_pool_size=5),
        auth=AuthSettings.model_validate({"secret_key": "t" * 48, **auth}),
        passwords=TEST_PASSWORDS,
        api=ApiSettings.model_validate(dict(api or {})),
    )


def bearer(token: str) -> Headers:
    """The Authorization header that carries `token`."""
    return {"Authorization": f"Bearer {token}"}


def total_of(response: Response) -> int:
    """The size of the whole list a list response holds one page of (its `X-Total-Count`)."""
    return int(response.headers["X-Total-Count"])


def token_of(headers: Headers) -> str:
    """The bearer token in headers made by `bearer`."""
    return headers["Authorization"].removeprefix("Bearer ")


@dataclass
class Api:
    """An HTTP client on the app, and the test database behind it for tests that look at or add rows."""

    client: AsyncClient
    database: Database
    settings: ApiProcessSettings
    app: FastAPI

    def set_now(self, now: datetime) -> None:
        """Freeze the app's clock at `now` (stage events, metrics and issue times follow it)."""
        context_of(self.app).clock = lambda: now

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session on the app's database in a transaction of its own (for the factories)."""
        return self.database.session()

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection to the app's database in a transaction of its own (for Core statements)."""
        return self.database.begin()

    async def add(
        self, factory: Callable[Concatenate[AsyncSession, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a factory (tests/support/factories.py) in a transaction of its own; what it made."""
        async with self.session() as session:
            return await factory(session, *args, **kwargs)

    async def create_user(self, username: str, role: Role, *, active: bool = True) -> UserAccount:
        """Insert a user directly (bypassing the API), with the shared test password."""
        return await self.add(make_user, username, role, active=active)

    async def login(self, username: str, password: str = TEST_PASSWORD) -> Headers:
        """Log in through the API and return the Authorization header."""
        response = await self.client.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return bearer(response.json()["access_token"])

    async def signed_in(self, role: Role, username: str | None = None) -> tuple[int, Headers]:
        """A new user of this role (named `username`, or a unique name), logged in: its id and its headers."""
        name = username or f"{role.value}-{os.urandom(3).hex()}"
        user = await self.create_user(name, role)
        return user.id, await self.login(name)

    async def actor(self, role: Role, username: str | None = None) -> Headers:
        """A new user of this role, logged in: its headers."""
        _, headers = await self.signed_in(role, username)
        return headers


@asynccontextmanager
async def running_api(database: Database, settings: ApiProcessSettings) -> AsyncIterator[Api]:
    """An app on `settings` whose requests read and write the test's `database`, behind an HTTP client."""
    app = create_app(settings)
    database.bind(app)
    transport = ASGITransport(app=app, client=CLIENT_ADDRESS)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client=client, database=database, settings=settings, app=app)
    finally:
        # What the app's lifespan does at shutdown (ASGITransport does not run it): its hashes still waiting are
        # dropped and its pool closed with the test, not whenever the garbage collector reaches the app.
        context_of(app).hasher.close()
        await context_of(app).engine.dispose()

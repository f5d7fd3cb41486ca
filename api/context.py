"""What one app owns, built once in `create_app`: settings, engine, services. Reached through `api.deps` only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.clock import utcnow

if TYPE_CHECKING:  # the context is plain data: what it holds imports the routers' dependencies, never the reverse
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
    from starlette.applications import Starlette

    from api.auth.cache import PrincipalCache
    from api.auth.throttle import LoginThrottle
    from api.commands.publisher import CommandPublisher
    from api.machines.stream import StreamHub
    from api.prometheus import ApiMetrics
    from core.security import PasswordHasher, TokenService
    from core.settings import ApiProcessSettings


@dataclass
class AppContext:
    """The per-app resources every request may use."""

    settings: ApiProcessSettings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    # Requests that only read (GET, HEAD) on PostgreSQL: autocommit sessions, no BEGIN/COMMIT round trips. None: they
    # use `session_factory` like the others (SQLite; tests that run everything in one rolled-back transaction).
    read_session_factory: async_sessionmaker[AsyncSession] | None
    hasher: PasswordHasher
    tokens: TokenService
    login_throttle: LoginThrottle
    # The user behind each recent bearer token (AUTH_USER_CACHE_S).
    principals: PrincipalCache
    streams: StreamHub
    # The operator view's bundle (`make ui`); tests point it elsewhere.
    ui_static_dir: Path
    # None when API_METRICS_ENABLED is false.
    prometheus: ApiMetrics | None = None
    # None when COMMANDS_ENABLED is false.
    commands: CommandPublisher | None = None
    # The app's clock: tests replace it to follow a shift minute by minute.
    clock: Callable[[], datetime] = field(default=utcnow)


def context_of(app: Starlette) -> AppContext:
    """The context `create_app` attached to this app."""
    context = app.state.context
    if not isinstance(context, AppContext):  # pragma: no cover -- only an app not made by create_app
        raise TypeError("this app was not built by api.app.create_app")
    return context

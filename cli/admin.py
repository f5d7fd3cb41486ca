"""Maintenance commands: `migrate` and `user create`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys
from typing import TYPE_CHECKING

from cli.errors import CommandError
from core.logging import configure_logging
from core.settings import ToolSettings

if TYPE_CHECKING:
    from core.models import Role


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the schema to head (or to/down to a given revision)."""
    from core import schema
    from core.logging import get_logger

    settings = ToolSettings.load()
    configure_logging(settings.log, settings.env)
    log = get_logger("shopfloor.migrate")
    if args.downgrade:
        schema.downgrade(settings.database.database_url, args.downgrade, timeseries=settings.timeseries)
        log.info("schema_downgraded", revision=args.downgrade)
    else:
        schema.upgrade(settings.database.database_url, args.revision, timeseries=settings.timeseries)
        log.info("schema_upgraded", revision=args.revision)
    return 0


async def _create_user(
    settings: ToolSettings, *, username: str, password: str, role: Role, full_name: str | None
) -> int:
    from api.users.service import create_user
    from core.db import create_engine_from_settings, session_factory, transaction
    from core.security import PasswordHasher

    engine = create_engine_from_settings(settings.database)
    hasher = PasswordHasher(
        time_cost=settings.passwords.argon2_time_cost, memory_kib=settings.passwords.argon2_memory_kib
    )
    try:
        async with transaction(session_factory(engine)) as session:
            user = await create_user(
                session,
                hasher=hasher,
                username=username,
                password=password,
                role=role,
                full_name=full_name,
                min_password_length=settings.passwords.password_min_length,
            )
            return user.id
    finally:
        await engine.dispose()


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password and whether it was generated (and so must be printed)."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin: no password on standard input")
        return password, False
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise CommandError("the passwords do not match")
        return first, False
    return secrets.token_urlsafe(15), True


def cmd_user_create(args: argparse.Namespace) -> int:
    """Create a user; the first admin is made this way."""
    from core.errors import DomainError
    from core.models import Role

    settings = ToolSettings.load()
    configure_logging(settings.log, settings.env)
    username = args.username.strip().lower()
    password, generated = _read_password(args)
    try:
        user_id = asyncio.run(
            _create_user(settings, username=username, password=password, role=Role(args.role), full_name=args.full_name)
        )
    except DomainError as error:
        raise CommandError(error.message) from None
    print(f"created user {username!r} (id {user_id}, role {args.role})")
    if generated:
        print(f"generated password (shown once): {password}")
    return 0

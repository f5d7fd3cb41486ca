"""The `shopfloor` command: the only module that may import every process, each lazily in its subcommand."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from core.settings import (
    ApiProcessSettings,
    ConfigurationError,
    Environment,
    IngestorProcessSettings,
    ProcessSettings,
    ToolSettings,
)

if TYPE_CHECKING:
    from core.models import Role

EXIT_USAGE = 2
S = TypeVar("S", bound=ProcessSettings)


class CommandError(Exception):
    """A one-line failure the user can act on; printed without a traceback."""


def _settings(factory: type[S]) -> S:
    try:
        settings = factory()
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"]).upper() or "settings"
        raise ConfigurationError(f"{name}: {first['msg']}") from None
    return settings.check()


def _configure_logging(settings: ProcessSettings) -> None:
    from core.logging import configure_logging

    configure_logging(settings.log, settings.env)


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the HTTP API with uvicorn."""
    settings = _settings(ApiProcessSettings)  # first, so a bad setting fails before the heavy imports
    import uvicorn

    from api.app import create_app

    _configure_logging(settings)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.api.api_host,
        port=args.port or settings.api.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=settings.api.trust_forwarded_for,
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Consume telemetry from the broker into the database until SIGTERM."""
    settings = _settings(IngestorProcessSettings)
    from ingestor.service import main as ingest_main

    _configure_logging(settings)
    return asyncio.run(ingest_main(settings))


def cmd_gateway(args: argparse.Namespace) -> int:
    """Poll the configured devices and publish their readings until SIGTERM."""
    from core.logging import configure_logging
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise ConfigurationError(str(error)) from None
    settings = _settings(ToolSettings)
    configure_logging(settings.log, settings.env)
    from gateway.service import main as gateway_main

    return asyncio.run(gateway_main(config))


SIMULATORS = {
    "opcua": "simulators.opcua",
    "modbus": "simulators.modbus",
    "mqtt": "simulators.mqtt_device",
    "load": "simulators.loadgen",
}


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run one simulator in the foreground; its own options follow its name (`--help` lists them)."""
    import importlib

    module = importlib.import_module(SIMULATORS[args.kind])
    code: int = module.main(args.options)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the schema to head (or to/down to a given revision)."""
    from core import schema
    from core.logging import get_logger

    settings = _settings(ToolSettings)
    _configure_logging(settings)
    log = get_logger("shopfloor.migrate")
    if args.downgrade:
        schema.downgrade(settings.database.database_url, args.downgrade)
        log.info("schema_downgraded", revision=args.downgrade)
    else:
        schema.upgrade(settings.database.database_url, args.revision)
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

    settings = _settings(ToolSettings)
    _configure_logging(settings)
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


async def _seed(settings: ToolSettings) -> list[tuple[str, str, str]]:
    from sqlalchemy import select

    from api.users.service import create_user
    from core.db import create_engine_from_settings, session_factory, transaction
    from core.models import Role, UserAccount
    from core.security import PasswordHasher

    engine = create_engine_from_settings(settings.database)
    hasher = PasswordHasher(
        time_cost=settings.passwords.argon2_time_cost, memory_kib=settings.passwords.argon2_memory_kib
    )
    created: list[tuple[str, str, str]] = []
    try:
        async with transaction(session_factory(engine)) as session:
            for role in (Role.ADMIN, Role.PLANNER, Role.WORKER):
                username = role.value
                if await session.scalar(select(UserAccount.id).where(UserAccount.username == username)):
                    continue
                password = secrets.token_urlsafe(12)
                await create_user(
                    session,
                    hasher=hasher,
                    username=username,
                    password=password,
                    role=role,
                    full_name=f"Demo {role.value}",
                    min_password_length=settings.passwords.password_min_length,
                )
                created.append((username, role.value, password))
    finally:
        await engine.dispose()
    return created


def cmd_seed(args: argparse.Namespace) -> int:
    """Create demo users (admin, planner, worker) that do not exist yet, printing their passwords once."""
    settings = _settings(ToolSettings)
    _configure_logging(settings)
    if settings.env is Environment.PRODUCTION and not args.force:
        raise CommandError("seed makes demo accounts; refusing in production without --force")
    created = asyncio.run(_seed(settings))
    if not created:
        print("demo users exist already; nothing created")
    for username, role, password in created:
        print(f"created {role:<8} username={username} password={password}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="shopfloor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", help="listen address (default: API_HOST)")
    api.add_argument("--port", type=int, help="listen port (default: API_PORT)")
    api.set_defaults(handler=cmd_api)

    ingest = sub.add_parser("ingest", help="consume telemetry from MQTT into the database")
    ingest.set_defaults(handler=cmd_ingest)

    gateway = sub.add_parser("gateway", help="poll OPC-UA / Modbus devices and publish to MQTT")
    gateway.add_argument("--config", required=True, type=Path, help="the gateway's YAML file")
    gateway.set_defaults(handler=cmd_gateway)

    simulate = sub.add_parser(
        "simulate",
        help="run a machine simulator: opcua (injection press), modbus (assembly station), mqtt (device), load",
    )
    simulate.add_argument("kind", choices=sorted(SIMULATORS))
    simulate.add_argument("options", nargs=argparse.REMAINDER, help="the simulator's own options")
    simulate.set_defaults(handler=cmd_simulate)

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (base: drop all)")
    migrate.set_defaults(handler=cmd_migrate)

    seed = sub.add_parser("seed", help="create demo users with generated passwords")
    seed.add_argument("--force", action="store_true", help="allow in production")
    seed.set_defaults(handler=cmd_seed)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = user_sub.add_parser("create", help="create a user (for example the first admin)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", required=True, choices=["admin", "planner", "worker"])
    create.add_argument("--full-name")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(handler=cmd_user_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `shopfloor` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as error:
        print(f"shopfloor: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as error:
        print(f"shopfloor: {error}", file=sys.stderr)
        return 1
    return code


def run() -> None:
    """Console-script wrapper: exit with the command's status."""
    sys.exit(main())


if __name__ == "__main__":
    run()

"""The `shopfloor` command: the only module that may import every process, each lazily in its subcommand."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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
    from core.stack import ChildSpec, Ports

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
    from api.machines.stream import StreamingServer

    _configure_logging(settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host or settings.api.api_host,
        port=args.port or settings.api.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=settings.api.trust_forwarded_for,
    )
    # uvicorn.run with a server that ends the live streams on SIGTERM instead of waiting for them.
    server = StreamingServer(config, streams=app.state.streams)
    server.run()
    return 0 if server.started else 3  # uvicorn's exit status for a server that could not start


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


# The demo plant of `shopfloor seed` / `shopfloor up`: what the simulators and the gateway example publish as.
DEMO_SITE = "plant1"
DEMO_MACHINES = (
    # code, name, type, ideal cycle time (s): the simulators' defaults
    ("press-1", "Injection press 1 (OPC-UA)", "injection_moulding", 12.0),
    ("assembly-1", "Assembly station 1 (Modbus TCP)", "assembly", 8.0),
    ("press-2", "Injection press 2 (MQTT-native)", "injection_moulding", 12.0),
)
DEMO_WORK_ORDERS = (
    # product, lot, qty, stages as (name, machine code, minutes) from the hour after seeding
    ("HOUSING-A", "DEMO-001", 500, (("Enjeksiyon", "press-1", 120), ("Montaj", "assembly-1", 120))),
    ("HOUSING-B", "DEMO-002", 250, (("Enjeksiyon", "press-2", 90), ("Montaj", "assembly-1", 90))),
    ("COVER-C", "DEMO-003", 1000, (("Enjeksiyon", "press-1", 240),)),
)


@dataclass(frozen=True)
class SeedResult:
    """What `seed` created: users with their one-time passwords, machine codes, work-order lots."""

    users: list[tuple[str, str, str]]
    machines: list[str]
    work_orders: list[str]


async def _seed(settings: ToolSettings) -> SeedResult:
    from datetime import timedelta

    from sqlalchemy import select

    from api.machines.service import NewMachine, create_machine
    from api.stages.schemas import StagePlan
    from api.stages.service import assign
    from api.users.service import create_user
    from api.workorders.service import WorkOrderPlan, create_work_order
    from core.clock import utcnow
    from core.db import create_engine_from_settings, session_factory, transaction
    from core.models import Machine, Role, UserAccount, WorkOrder
    from core.security import PasswordHasher, Principal

    engine = create_engine_from_settings(settings.database)
    hasher = PasswordHasher(
        time_cost=settings.passwords.argon2_time_cost, memory_kib=settings.passwords.argon2_memory_kib
    )
    result = SeedResult([], [], [])
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
                result.users.append((username, role.value, password))
            admin = await session.scalar(select(UserAccount).where(UserAccount.username == Role.ADMIN.value))
            worker = await session.scalar(select(UserAccount).where(UserAccount.username == Role.WORKER.value))
            if admin is None or worker is None:
                return result
            actor = Principal(user_id=admin.id, username=admin.username, role=admin.role)
            machine_ids: dict[str, int] = {}
            for code, name, machine_type, ideal in DEMO_MACHINES:
                existing = await session.scalar(select(Machine).where(Machine.site == DEMO_SITE, Machine.code == code))
                if existing is None:
                    new = NewMachine(DEMO_SITE, code, name, machine_type, "Hall A", ideal)
                    existing = await create_machine(session, actor=actor, machine=new)
                    result.machines.append(code)
                elif existing.ideal_cycle_time_s is None:  # registered by its first telemetry: complete it
                    existing.ideal_cycle_time_s, existing.name, existing.machine_type = ideal, name, machine_type
                machine_ids[code] = existing.id
            start = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            for product, lot, qty, stages in DEMO_WORK_ORDERS:
                if await session.scalar(select(WorkOrder.id).where(WorkOrder.lot_no == lot)):
                    continue
                plans, cursor = [], start
                for stage_name, machine, minutes in stages:
                    end = cursor + timedelta(minutes=minutes)
                    machine_id = machine_ids[machine]
                    plans.append(
                        StagePlan(stage_name=stage_name, planned_start=cursor, planned_end=end, machine_id=machine_id)
                    )
                    cursor = end
                plan = WorkOrderPlan(product, lot, qty, start, cursor, "demo work order")
                details = await create_work_order(session, actor=actor, plan=plan, stages=plans, templates=[])
                for stage in details.stages:
                    await assign(session, actor=actor, stage_id=stage.stage.id, user_id=worker.id, now=utcnow())
                result.work_orders.append(lot)
    finally:
        await engine.dispose()
    return result


def cmd_seed(args: argparse.Namespace) -> int:
    """Create the demo plant: users (admin, planner, worker; passwords printed once), machines, work orders."""
    settings = _settings(ToolSettings)
    _configure_logging(settings)
    if settings.env is Environment.PRODUCTION and not args.force:
        raise CommandError("seed makes demo accounts; refusing in production without --force")
    result = asyncio.run(_seed(settings))
    if not result.users:
        print("demo users exist already; nothing created")
    for username, role, password in result.users:
        print(f"created {role:<8} username={username} password={password}")
    if result.machines:
        print(f"demo machines registered: {', '.join(result.machines)} (site {DEMO_SITE})")
    if result.work_orders:
        print(f"demo work orders planned: {', '.join(result.work_orders)} (stages assigned to 'worker')")
    return 0


def cmd_import_sqlite(args: argparse.Namespace) -> int:
    """Copy a SQLite database into a migrated PostgreSQL / TimescaleDB, verified, in one transaction."""
    from core.transfer import TransferFailed, TransferInputError, import_sqlite

    settings = _settings(ToolSettings)
    target = args.to or settings.database.database_url
    try:
        report = import_sqlite(args.source, target, force=args.force)
    except TransferInputError as error:
        print(f"shopfloor: import-sqlite: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TransferFailed as error:
        raise CommandError(f"import-sqlite: {error}") from None
    if report.emptied_first:
        print("emptied the target first (--force)")
    for table in report.tables:
        verdict = "checksum ok" if table.checksum_ok else "CHECKSUM MISMATCH"
        print(f"{table.table:<20} {table.rows:>12,} rows  {verdict}  {table.seconds:8.2f} s")
    print(f"imported {report.total_rows:,} rows at revision {', '.join(report.revision)}")
    if report.refreshed_views:
        print(f"refreshed continuous aggregates: {', '.join(report.refreshed_views)}")
    if report.skipped_source_tables:
        print(f"not copied (not shopfloor tables): {', '.join(report.skipped_source_tables)}")
    return 0


REPO_ROOT = Path(__file__).resolve().parent
GATEWAY_EXAMPLE = REPO_ROOT / "gateway" / "example.yaml"
MQTT_DEVICE_MACHINE = "press-2"
# Debian puts the broker in /usr/sbin, which is not on every user's PATH.
MOSQUITTO_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def _broker_command(choice: str, data_dir: Path, port: int) -> tuple[list[str], str, str]:
    """The broker's command line, its MQTT version and a description (configs written into the data folder)."""
    import getpass as users
    import importlib.util
    import shutil

    from core import stack

    mosquitto = shutil.which("mosquitto", path=MOSQUITTO_PATH) if choice in ("auto", "mosquitto") else None
    if choice == "mosquitto" and mosquitto is None:
        raise CommandError("--broker mosquitto: the mosquitto binary is not installed (apt-get install mosquitto)")
    if mosquitto is not None:
        (data_dir / "mosquitto").mkdir(exist_ok=True)
        config = data_dir / "mosquitto.conf"
        config.write_text(stack.mosquitto_config(port=port, data_dir=data_dir, user=users.getuser()))
        return [mosquitto, "-c", str(config)], "5", f"Mosquitto ({mosquitto})"
    if importlib.util.find_spec("amqtt") is None:
        raise CommandError(
            "no MQTT broker: install Mosquitto (apt-get install mosquitto) or the embedded one "
            "(uv sync --extra demo, which installs amqtt)"
        )
    config = data_dir / "amqtt.yaml"
    config.write_text(stack.amqtt_config(port=port))
    argv = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]
    return argv, "3.1.1", "embedded amqtt (MQTT 3.1.1, in memory)"


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole stack on this machine until Ctrl-C: broker, simulators, gateway, ingestor, API."""
    from core import stack
    from core.settings import DatabaseSettings

    settings = _settings(ToolSettings)
    if settings.env is Environment.PRODUCTION:
        raise CommandError("`up` runs a demo stack (anonymous broker, demo accounts); refusing in production")
    try:
        ports = stack.Ports.plan(args.port_offset, api=args.api_port, mqtt=args.mqtt_port)
    except stack.StackError as error:
        raise CommandError(str(error)) from None
    taken = stack.taken_ports(ports)
    if taken:
        listed = ", ".join(f"{port} ({name})" for name, port in taken)
        raise CommandError(f"port in use: {listed}; stop what holds it or pick other ports with --port-offset N")
    data_dir: Path = args.data_dir.expanduser().resolve()
    default_url = DatabaseSettings.model_fields["database_url"].default
    database_url = settings.database.database_url
    if database_url == default_url:  # the SQLite default lives in the data folder
        database_url = f"sqlite:///{data_dir / 'shopfloor.db'}"
    if args.reset:
        _reset(data_dir, database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    first_run = not (data_dir / "up.txt").exists()

    settings = settings.model_copy(update={"database": DatabaseSettings(database_url=database_url)})
    _configure_logging(settings)
    import logging

    # Alembic logs a line per plugin (at import) and per revision: they would bury the banner.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from core import schema

    try:
        schema.upgrade(database_url, "head")
        seeded = asyncio.run(_seed(settings))
    except KeyboardInterrupt:
        raise CommandError("interrupted while preparing the database; nothing was started") from None
    (data_dir / "up.txt").write_text("`shopfloor up` has run on this data folder; passwords are not stored.\n")

    broker_argv, protocol, broker_name = _broker_command(args.broker, data_dir, ports.mqtt)
    specs = _stack_children(ports, data_dir, database_url, broker_argv, protocol)
    _print_banner(ports, broker_name, database_url, data_dir, seeded, first_run=first_run)
    code = asyncio.run(stack.supervise(stack.Supervisor(specs, quiet=args.quiet)))
    print("shopfloor up: stopped" if code == 0 else "shopfloor up: stopped after a failure (see above)", flush=True)
    return code


def _stack_children(
    ports: Ports, data_dir: Path, database_url: str, broker_argv: list[str], protocol: str
) -> list[ChildSpec]:
    """The child processes of `up`, in start order (the gateway's config is written into the data folder)."""
    import signal

    from core import stack

    gateway_file = data_dir / "gateway.yaml"
    example = GATEWAY_EXAMPLE.read_text(encoding="utf-8")
    buffer = data_dir / "gateway-buffer.db"
    gateway_file.write_text(stack.gateway_config(example, ports=ports, protocol=protocol, buffer_path=buffer))
    env = dict(os.environ) | {
        "DATABASE_URL": database_url,
        "MQTT_HOST": stack.HOST,
        "MQTT_PORT": str(ports.mqtt),
        "MQTT_PROTOCOL": protocol,
        "INGEST_CLIENT_ID": "shopfloor-up-ingestor",
        "INGEST_METRICS_PORT": str(ports.ingest_metrics),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MQTT_USERNAME", None)  # the demo broker is anonymous
    env.pop("MQTT_PASSWORD", None)
    me = [sys.executable, "-m", "cli"]
    sim = [*me, "simulate"]
    device = ["--port", str(ports.mqtt), "--site", stack.SITE, "--machine", MQTT_DEVICE_MACHINE]
    device += ["--samples-per-message", "1", "--protocol", protocol]
    # amqtt's script shuts down cleanly on KeyboardInterrupt only.
    broker_stop = signal.SIGINT if protocol == "3.1.1" else signal.SIGTERM
    return [
        stack.ChildSpec("broker", broker_argv, env, ready_port=ports.mqtt, stop_signal=broker_stop),
        # Before the publishers: on MQTT 3.1.1 the gateway cannot tell that nobody subscribed yet.
        stack.ChildSpec("ingestor", [*me, "ingest"], env, ready_line="mqtt_subscribed", stop_timeout_s=30),
        stack.ChildSpec("opcua", [*sim, "opcua", "--port", str(ports.opcua)], env, ready_line="READY opcua"),
        stack.ChildSpec("modbus", [*sim, "modbus", "--port", str(ports.modbus)], env, ready_line="READY modbus"),
        stack.ChildSpec("gateway", [*me, "gateway", "--config", str(gateway_file)], env, ready_line="broker_connected"),
        stack.ChildSpec("device", [*sim, "mqtt", *device], env, ready_line="READY mqtt"),
        stack.ChildSpec("api", [*me, "api", "--host", stack.HOST, "--port", str(ports.api)], env, ready_port=ports.api),
    ]


def _reset(data_dir: Path, database_url: str) -> None:
    """Forget the demo: the SQLite database, broker persistence and gateway buffer in the data folder."""
    import shutil

    if not database_url.startswith("sqlite") or str(data_dir) not in database_url:
        raise CommandError(f"--reset only removes a SQLite database in {data_dir}; drop {database_url} yourself")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    print(f"reset: removed {data_dir}")


def _print_banner(
    ports: Ports, broker: str, database_url: str, data_dir: Path, seeded: SeedResult, *, first_run: bool
) -> None:
    from core.stack import HOST

    api = f"http://{HOST}:{ports.api}"
    lines = [
        "",
        "Shopfloor is starting (Ctrl-C stops everything):",
        f"  API docs       {api}/api-docs",
        f"  operator view  {api}/ui",
        f"  MQTT broker    mqtt://{HOST}:{ports.mqtt}  {broker}, anonymous (demo only)",
        f"  metrics        ingestor http://{HOST}:{ports.ingest_metrics}/metrics  "
        f"gateway http://{HOST}:{ports.gateway_metrics}/metrics",
        f"  simulators     OPC-UA opc.tcp://{HOST}:{ports.opcua} (press-1)  "
        f"Modbus {HOST}:{ports.modbus} (assembly-1)  MQTT device ({MQTT_DEVICE_MACHINE})",
        f"  database       {database_url}",
        f"  data folder    {data_dir}",
    ]
    if seeded.users:
        lines.append("Demo users (passwords shown ONCE, not stored anywhere):")
        lines += [f"  {role:<8} username={username} password={password}" for username, role, password in seeded.users]
    else:
        lines += [
            "Demo users exist already: their passwords were printed at the first run and are not stored.",
            "  New user: shopfloor user create --username NAME --role admin|planner|worker",
            f"  Start over: shopfloor up --reset (removes {data_dir})",
        ]
    if not first_run and seeded.users:
        lines.append("  (the users were missing, so they were made again)")
    print("\n".join([*lines, ""]), flush=True)


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

    up = sub.add_parser("up", help="run the whole demo stack here: broker, simulators, gateway, ingestor, API")
    up.add_argument("--data-dir", type=Path, default=Path("data"), help="the demo's data folder (default: ./data)")
    up.add_argument("--port-offset", type=int, default=0, help="add N to every port (API 8000, MQTT 1883, ...)")
    up.add_argument("--api-port", type=int, help="the API's port (default: 8000 + offset)")
    up.add_argument("--mqtt-port", type=int, help="the broker's port (default: 1883 + offset)")
    up.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="auto: Mosquitto when installed, else the embedded amqtt (MQTT 3.1.1)",
    )
    up.add_argument("--quiet", action="store_true", help="hide the processes' logs (shown when one fails)")
    up.add_argument("--reset", action="store_true", help="remove the data folder first (new demo users and data)")
    up.set_defaults(handler=cmd_up)

    seed = sub.add_parser("seed", help="create demo users with generated passwords")
    seed.add_argument("--force", action="store_true", help="allow in production")
    seed.set_defaults(handler=cmd_seed)

    transfer = sub.add_parser(
        "import-sqlite", help="copy a SQLite database into a migrated PostgreSQL (docs/migration_guide.md)"
    )
    transfer.add_argument("--from", dest="source", required=True, type=Path, help="the SQLite file")
    transfer.add_argument("--to", help="the target database URL (default: DATABASE_URL)")
    transfer.add_argument("--force", action="store_true", help="empty a non-empty target first (same transaction)")
    transfer.set_defaults(handler=cmd_import_sqlite)

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

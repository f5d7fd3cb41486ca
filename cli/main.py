"""The `shopfloor` command line: argument parsing and dispatch; each subcommand's module is imported lazily."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cli.errors import EXIT_USAGE, CommandError
from core.lifecycle import add_ready_file_option
from core.settings import ConfigurationError

# `shopfloor simulate KIND`: the simulator modules (each has `main(argv) -> int`).
SIMULATORS = {
    "opcua": "simulators.opcua",
    "modbus": "simulators.modbus",
    "mqtt": "simulators.mqtt_device",
    "load": "simulators.loadgen",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="shopfloor", description="Shopfloor: production tracking and telemetry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", help="listen address (default: API_HOST)")
    api.add_argument("--port", type=int, help="listen port (default: API_PORT)")
    add_ready_file_option(api)
    api.set_defaults(handler="cli.processes:cmd_api")

    ingest = sub.add_parser("ingest", help="consume telemetry from MQTT into the database")
    add_ready_file_option(ingest)
    ingest.set_defaults(handler="cli.processes:cmd_ingest")

    gateway = sub.add_parser(
        "gateway", help="poll OPC-UA / Modbus devices and publish to MQTT (trust, list-certs: its OPC-UA certificates)"
    )
    gateway.add_argument("--config", type=Path, help="the gateway's YAML file (required)")
    add_ready_file_option(gateway)
    gateway.set_defaults(handler="cli.processes:cmd_gateway")
    # Without an action the gateway runs, as `shopfloor gateway --config FILE` always did.
    gateway_sub = gateway.add_subparsers(dest="gateway_command", metavar="ACTION")
    trust = gateway_sub.add_parser("trust", help="trust an OPC-UA server certificate")
    trust.add_argument("certificate", help="a certificate file (PEM or DER), or the thumbprint of a rejected one")
    trust.set_defaults(handler="cli.certs:cmd_trust")
    list_certs = gateway_sub.add_parser("list-certs", help="the gateway's own, trusted and rejected certificates")
    list_certs.set_defaults(handler="cli.certs:cmd_list_certs")
    for action in (trust, list_certs):
        action.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="the gateway's YAML file")

    simulate = sub.add_parser(
        "simulate",
        help="run a machine simulator: opcua (injection press), modbus (assembly station), mqtt (device), load",
    )
    simulate.add_argument("kind", choices=sorted(SIMULATORS), help="each takes --ready-file PATH too")
    simulate.add_argument("options", nargs=argparse.REMAINDER, help="the simulator's own options")
    simulate.set_defaults(handler="cli.processes:cmd_simulate")

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (base: drop all)")
    migrate.set_defaults(handler="cli.admin:cmd_migrate")

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
    up.set_defaults(handler="cli.up:cmd_up")

    seed = sub.add_parser("seed", help="create demo users with generated passwords")
    seed.add_argument("--force", action="store_true", help="allow in production")
    seed.set_defaults(handler="cli.seed:cmd_seed")

    transfer = sub.add_parser(
        "import-sqlite", help="copy a SQLite database into a migrated PostgreSQL (docs/migration_guide.md)"
    )
    transfer.add_argument("--from", dest="source", required=True, type=Path, help="the SQLite file")
    transfer.add_argument("--to", help="the target database URL (default: DATABASE_URL)")
    transfer.add_argument("--force", action="store_true", help="empty a non-empty target first (same transaction)")
    transfer.set_defaults(handler="cli.transfer:cmd_import_sqlite")

    legacy = sub.add_parser(
        "import-legacy",
        help="import the original app's SQLite database.db into a migrated database (docs/migration_guide.md)",
    )
    legacy.add_argument("--from", dest="source", required=True, type=Path, help="the original app's database.db")
    legacy.add_argument("--to", help="the target database URL (default: DATABASE_URL)")
    legacy.add_argument("--timezone", help="IANA zone of the source's naive times (default: PLANT_TIMEZONE if set)")
    legacy.add_argument("--dry-run", action="store_true", help="check and write everything, then roll back")
    legacy.add_argument("--skip-existing", action="store_true", help="skip source rows whose ids the target holds")
    legacy.add_argument("--json", action="store_true", help="print the report as JSON")
    legacy.set_defaults(handler="cli.legacy:cmd_import_legacy")

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = user_sub.add_parser("create", help="create a user (for example the first admin)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", required=True, choices=["admin", "planner", "worker"])
    create.add_argument("--full-name")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(handler="cli.admin:cmd_user_create")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `shopfloor` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "gateway" and args.config is None:  # before or after the action, so not argparse's `required`
        parser.error("gateway: the following arguments are required: --config")
    module, _, name = args.handler.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    try:
        code = handler(args)
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

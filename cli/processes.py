"""The long-running processes: `api`, `ingest`, `gateway`, `simulate`."""

from __future__ import annotations

import argparse
import asyncio
import importlib

from core.lifecycle import Readiness
from core.logging import configure_logging
from core.settings import ApiProcessSettings, ConfigurationError, IngestorProcessSettings, ToolSettings


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the HTTP API with uvicorn: one process, or API_WORKERS processes on one socket."""
    settings = ApiProcessSettings.load()  # first, so a bad setting fails before the heavy imports
    from api.server import ApiServer, api_config, serve_workers

    configure_logging(settings.log, settings.env)
    host = args.host or settings.api.api_host
    port = args.port or settings.api.api_port
    ready = Readiness(args.ready_file)
    if settings.api.api_workers > 1:
        # Each worker builds its own app (engine, pool, stream hub); the parent only supervises.
        return serve_workers(host=host, port=port, workers=settings.api.api_workers, ready=ready)

    from api.app import create_app
    from api.context import context_of

    app = create_app(settings)
    # uvicorn.run with a server that ends the live streams on SIGTERM instead of waiting for them.
    server = ApiServer(api_config(app, host=host, port=port), streams=context_of(app).streams, ready=ready)
    try:
        server.run()
    finally:
        server.ready.not_ready()
    return 0 if server.started else 3  # uvicorn's exit status for a server that could not start


def cmd_ingest(args: argparse.Namespace) -> int:
    """Consume telemetry from the broker into the database until SIGTERM."""
    settings = IngestorProcessSettings.load()
    from ingestor.service import main as ingest_main

    configure_logging(settings.log, settings.env)
    return asyncio.run(ingest_main(settings, ready_file=args.ready_file))


def cmd_gateway(args: argparse.Namespace) -> int:
    """Poll the configured devices and publish their readings until SIGTERM."""
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise ConfigurationError(str(error)) from None
    settings = ToolSettings.load()
    configure_logging(settings.log, settings.env)
    from gateway.service import main as gateway_main

    return asyncio.run(gateway_main(config, ready_file=args.ready_file, config_file=args.config))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run one simulator in the foreground; its own options follow its name (`--help` lists them)."""
    from cli.main import SIMULATORS

    module = importlib.import_module(SIMULATORS[args.kind])
    code: int = module.main(args.options)
    return code

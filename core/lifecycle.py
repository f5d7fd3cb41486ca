"""How every long-running process starts and stops: a stop event set by SIGTERM/SIGINT, and a readiness file.

Readiness is a signal, not a log line: whoever starts a process (`shopfloor up`, the tests, a container runtime's
probe) hands it a path with `--ready-file PATH`; the process creates that file once it does its job (the ingestor
subscribed, the gateway connected to its broker, a simulator serving) and removes it when it stops. The file holds
one JSON object with the process's pid and what it wants to tell (a port chosen at random, an endpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import Any

import orjson

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event | None = None) -> Iterator[asyncio.Event]:
    """An event that SIGTERM or SIGINT sets while the block runs (inside a running loop); handlers removed after."""
    event = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, event.set)
    try:
        yield event
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


class Readiness:
    """The readiness file of one process; with no path every call does nothing."""

    def __init__(self, path: Path | None = None):
        self.path = path

    def ready(self, **info: object) -> None:
        """Say "ready": write the file atomically (a reader never sees half of it)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        partial.write_bytes(orjson.dumps({"pid": os.getpid(), **info}, default=str))
        partial.replace(self.path)

    def not_ready(self) -> None:
        """Say "not ready" (stopping, or the connection it serves through is lost)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]], *, again_every_s: float = 1.0) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again every `again_every_s` while any runs.

    On Python 3.11 `asyncio.wait_for` drops a cancellation that arrives with the awaited result, and the libraries
    we drive (asyncua, pymodbus) use it: one `cancel()` can be lost, and a shutdown that waits for the task hangs.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_every_s)


def read_ready_file(path: Path) -> dict[str, object] | None:
    """What a ready process wrote, or None while it is not ready."""
    try:
        data = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.asynccontextmanager
async def readiness(path: Path | None) -> AsyncIterator[Readiness]:
    """A Readiness whose file is removed when the block ends, however it ends."""
    marker = Readiness(path)
    marker.not_ready()  # a file left by an earlier run that was killed says nothing about this one
    try:
        yield marker
    finally:
        marker.not_ready()


def add_ready_file_option(parser: argparse.ArgumentParser) -> None:
    """The `--ready-file PATH` option every long-running command takes."""
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="create this file (JSON: pid and details) once ready, remove it when stopping",
    )

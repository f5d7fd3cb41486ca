"""A throwaway PostgreSQL for tests and benchmarks: initdb + pg_ctl in a folder of its own, on a free port.

Public dev support: the tests' fixtures and the benchmarks start their servers through `running_postgres`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


class ServiceUnavailable(RuntimeError):
    """A real service the tests need could not be started; the tier fails rather than skips."""


@dataclass(frozen=True)
class PostgresServer:
    """Where the throwaway server listens, and how to stop and start it again (for outage tests)."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path
    log_file: Path
    options: str

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for one database on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def fresh_database(self, name: str) -> str:
        """Drop database `name` if it exists and create it empty; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Shut the server down fast (open connections are cut)."""
        run_as_postgres(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop"
        )

    def start(self) -> None:
        """Start the server again on the same port with the same data."""
        pg_ctl = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file)]
        run_as_postgres([*pg_ctl, "-w", "-t", "60", "-o", self.options, "start"], "pg_ctl start")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_bin() -> Path:
    """Where the server binaries are (Debian's versioned folder, else PATH); ServiceUnavailable when missing."""
    for candidate in PG_BIN_CANDIDATES:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")


def _as_postgres(args: list[str]) -> list[str]:
    # The server refuses to run as root, so root runs it as the `postgres` system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def run_as_postgres(args: list[str], what: str) -> None:
    """Run a server binary (as the `postgres` user when we are root); ServiceUnavailable when it fails."""
    result = subprocess.run(_as_postgres(args), capture_output=True, text=True, check=False)  # noqa: S603 -- fixed binaries, no shell
    if result.returncode != 0:
        raise ServiceUnavailable(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


@contextlib.contextmanager
def running_postgres(root: Path | None = None, *, keep: bool = False) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL cluster and stop it afterwards.

    In a new temporary folder by default; in `root` when given, where a cluster made by an earlier run is started
    again as it is (a benchmark's data set kept with `keep=True`). The folder is deleted unless `keep`.
    """
    bin_dir = pg_bin()
    root = root if root is not None else Path(tempfile.mkdtemp(prefix="shopfloor-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    fresh = not data.exists()
    sockets.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for folder in {root, root.parent if keep else root, sockets}:
            shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    server = PostgresServer("127.0.0.1", port, "postgres", bin_dir, data, log, options)
    try:
        if fresh:
            initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
            run_as_postgres([*initdb, "--no-locale", "--no-sync"], "initdb")
        server.start()
    except ServiceUnavailable as error:
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        raise ServiceUnavailable(f"{error}\n{detail}") from None
    try:
        yield server
    finally:
        # A kept cluster is stopped cleanly so it starts again; a throwaway one is just cut off.
        mode = "fast" if keep else "immediate"
        subprocess.run(  # noqa: S603 -- fixed binaries, no shell
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

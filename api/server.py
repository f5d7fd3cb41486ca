"""uvicorn's server as `shopfloor api` runs it: live streams ended on shutdown, readiness said through a file.

With API_WORKERS > 1, `serve_workers` runs uvicorn's multiprocess supervisor (`uvicorn.supervisors.Multiprocess`):
the parent binds the one listening socket and starts that many worker processes (spawned, so each imports and
builds its own app, engine and pool), each serving the shared socket through `ApiServer`, so SIGTERM still ends the
live streams. The parent writes the readiness file once every worker has finished its startup (and again, naming
the new worker, once a replacement has finished its own), restarts a worker that dies, and stops everything (exit 3)
when a worker fails at startup, since every replacement would fail alike. It also makes the folder where the workers
keep their Prometheus metrics (api.prometheus), tells it of a worker that died, and removes it when it stops.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from api.machines.stream import StreamHub
from api.prometheus import MULTIPROCESS_DIR_ENV, WORKERS_METRICS_DIR_ENV
from core.lifecycle import Readiness
from core.logging import get_logger

log = get_logger("shopfloor.api.server")

# What uvicorn's Config holds as the app in the parent: never imported there (no app is built in the parent); each
# worker replaces it with the app it builds (`WorkerProcess.target`). A string, so the config pickles to the workers.
WORKER_APP = "api.app:create_app"


def api_config(app: Callable[..., Any] | str, *, host: str, port: int, workers: int = 1) -> uvicorn.Config:
    """uvicorn's settings for `shopfloor api`: the app (WORKER_APP in the supervisor's parent) on one address."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        # The client address is worked out by the app from TRUSTED_PROXIES (api.client), never by uvicorn.
        proxy_headers=False,
    )


class ApiServer(uvicorn.Server):
    """uvicorn's server, ending the app's live streams when it stops (it would otherwise wait for them forever) and
    creating the readiness file once it listens."""

    def __init__(self, config: uvicorn.Config, *, streams: StreamHub, ready: Readiness | None = None):
        super().__init__(config)
        self.streams = streams
        self.ready = ready or Readiness()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does (the app's lifespan, then the listening sockets); then say "ready"."""
        await super().startup(sockets)
        if self.started:
            self.ready.ready(host=self.config.host, port=self.config.port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the streams, then shut down as uvicorn does (open requests finish, then the app's lifespan)."""
        self.ready.not_ready()
        self.streams.close()
        await super().shutdown(sockets)


def worker_server(config: uvicorn.Config) -> ApiServer:
    """In a worker process: the settings read again (validated by the parent already), logging, the app, its server."""
    from api.app import create_app
    from api.context import context_of
    from core.logging import configure_logging
    from core.settings import ApiProcessSettings

    settings = ApiProcessSettings.load()
    configure_logging(settings.log, settings.env)
    app = create_app(settings)
    config.app = app
    return ApiServer(config, streams=context_of(app).streams)


class WorkerProcess(Process):
    """One worker of the supervisor, serving with `ApiServer` instead of uvicorn's plain server."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover - in the worker
        """Answer the parent's pings at once (building the app takes seconds), build the app and its server, serve."""
        threading.Thread(target=self.always_pong, name="api-worker-pong", daemon=True).start()
        try:
            server = worker_server(self.config)
        except Exception:  # any failure to build the app is a startup failure: said once, not retried
            log.exception("api_worker_startup_failed")
            sys.exit(STARTUP_FAILURE)
        self._server = server
        server.run(sockets)

    def pong(self) -> None:  # pragma: no cover - in the worker
        """Answer one ping: whether this worker's server has started (False while the app is being built)."""
        self.child_conn.recv()
        self.child_conn.send(self._server is not None and self._server.started)


class ApiSupervisor(Multiprocess):
    """uvicorn's multiprocess supervisor with `WorkerProcess` workers and a readiness file for the whole group.

    SIGINT / SIGTERM stop every worker (each ends its streams and finishes its open requests) and the parent.
    uvicorn's SIGHUP (rolling restart) and SIGTTIN / SIGTTOU (one worker more or less) would start plain uvicorn
    workers, so they are ignored here: restart the service to change the workers.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], *, ready: Readiness):
        super().__init__(config, sockets)
        self.ready = ready
        self.announced = False
        self.announced_pids: list[int | None] = []
        self.startup_failed = False

    def init_processes(self) -> None:
        """Start the workers."""
        for _ in range(self.processes_num):
            process = WorkerProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def run(self) -> None:
        """Supervise until SIGINT / SIGTERM or a worker's startup failure, then stop every worker."""
        log.info("api_workers_starting", workers=self.processes_num, pid=os.getpid())
        self.init_processes()
        try:
            while not self.should_exit.wait(0.5):
                self.handle_signals()
                self.keep_subprocess_alive()
                self.announce_when_ready()
        finally:
            self.ready.not_ready()
            self.terminate_all()
            self.join_all()
        log.info("api_workers_stopped", pid=os.getpid())

    def announce_when_ready(self) -> None:
        """Write the readiness file once every worker has finished its startup (serves the shared socket), and again
        once a replacement has: the file names the workers serving now."""
        pids = [process.pid for process in self.processes]
        if pids == self.announced_pids or self.should_exit.is_set():
            return
        if all(process.is_ready(timeout=self.config.timeout_worker_healthcheck) for process in self.processes):
            host, port = self.sockets[0].getsockname()[:2]
            self.ready.ready(host=host, port=port, workers=pids)
            self.announced = True
            self.announced_pids = pids
            log.info("api_workers_ready", workers=pids)

    def keep_subprocess_alive(self) -> None:
        """Replace a worker that died or hangs (kept from uvicorn's, with our worker class); stop on a startup
        failure."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone: reap it either way
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                log.error("api_worker_startup_failed", pid=process.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("api_worker_died", pid=process.pid, exitcode=process.exitcode)
            self.forget_metrics_of(process.pid)
            replacement = WorkerProcess(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement

    def forget_metrics_of(self, pid: int | None) -> None:
        """A dead worker's gauges leave the sums (its counters stay in them)."""
        shared_dir = os.environ.get(WORKERS_METRICS_DIR_ENV)
        if pid is not None and shared_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, shared_dir)  # type: ignore[no-untyped-call]

    def handle_hup(self) -> None:
        """Ignored (see the class)."""
        log.warning("api_signal_ignored", signal="SIGHUP", hint="restart the service to restart the workers")

    def handle_ttin(self) -> None:
        """Ignored (see the class)."""
        log.warning("api_signal_ignored", signal="SIGTTIN", hint="set API_WORKERS and restart the service")

    def handle_ttou(self) -> None:
        """Ignored (see the class)."""
        log.warning("api_signal_ignored", signal="SIGTTOU", hint="set API_WORKERS and restart the service")


def serve_workers(*, host: str, port: int, workers: int, ready: Readiness) -> int:
    """Serve with `workers` processes on one socket until SIGINT / SIGTERM; uvicorn's exit status 3 when a worker
    could not start, else 0."""
    config = api_config(WORKER_APP, host=host, port=port, workers=workers)
    sock = config.bind_socket()  # exits with STARTUP_FAILURE itself when the address is taken
    # The workers' shared metrics, new for each run (counters start again with the service, as with one process).
    # Set before the workers are spawned: they inherit it, and prometheus_client reads it as it is imported.
    shared_dir = tempfile.mkdtemp(prefix="shopfloor-api-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = os.environ[WORKERS_METRICS_DIR_ENV] = shared_dir
    try:
        supervisor = ApiSupervisor(config, [sock], ready=ready)
        supervisor.run()
    finally:
        sock.close()
        os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        os.environ.pop(WORKERS_METRICS_DIR_ENV, None)
        shutil.rmtree(shared_dir, ignore_errors=True)
    return STARTUP_FAILURE if supervisor.startup_failed or not supervisor.announced else 0

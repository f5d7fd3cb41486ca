"""API benchmark: a shift change against `shopfloor api` on PostgreSQL, next to a bare route in the same run.

    uv run python -m bench.bench_api [--workers-count 200] [--operators 50] [--api-workers 2] [--seconds 20]

Starts a throwaway PostgreSQL (as `bench.bench_history` does), migrates it and seeds it directly through the ORM:
`--workers-count` users with role worker and `--operators` users watching machines (one production-cost argon2id
hash of one password, computed once), one work order per worker with one planned stage assigned to that worker,
and one machine per operator. Then, each as its own process tree:

- `shopfloor api` as production runs it (SHOPFLOOR_ENV=production, random SECRET_KEY, JSON logs to a file) with
  API_WORKERS=`--api-workers` uvicorn workers, and TRUSTED_PROXIES=127.0.0.1: every simulated person sends its own
  X-Forwarded-For address, as tablets behind the plant's reverse proxy do (the login throttle counts per address);
- the bare route (`bench.bare_app`: FastAPI, one route reading one row through an engine made by
  `core.db.create_engine_from_settings` with the same pool settings), served by uvicorn with as many workers.

The run, from one asyncio client process (uvloop, a minimal keep-alive HTTP/1.1 client, so the client's own CPU
stays small; it is measured):

1. streams: each operator logs in, asks `POST /machines/{id}/stream/ticket` and opens
   `GET /machines/{id}/stream?ticket=…`, held open until the API is stopped at the end;
2. shift change: the workers arrive uniformly over `--ramp` seconds; each logs in (`POST /auth/login`), lists its
   stages (`GET /me/stages`), starts its planned stage (`POST /stages/{id}/start`) and finishes it with a good
   quantity (`POST /stages/{id}/done`), one request after another on its own connection;
3. throughput: `--concurrency` clients, each in a loop on its own connection, for `--seconds` on the list
   (`GET /me/stages` with a worker's token) and `--seconds` on the bare route, in four alternating halves
   (bare, list, list, bare), so a change in other load touches both alike;
4. the API is stopped with SIGTERM while the streams are still open (they must end and the API exit).

Prints per route count, errors, p50 / p95 / p99 / max; throughput; CPU of the API processes, of the bare route's,
of PostgreSQL, of this client and of other processes (disturbance), per phase; list ÷ bare throughput; and the
targets (0 errors, stage actions p95 ≤ 100 ms, list ≥ 0.5 x bare), never asserted. Exit status 1 when any request
failed (every failure is printed, up to `--show-errors`), 2 when the run could not measure. docs/performance.md,
"API under a shift change", explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from bench.bench_history import DATABASE, HOST, REPO, SHOPFLOOR, api_env, cluster, percentile, postmaster_pid, versions
from bench.bench_ingest import CpuMeter, MachineSample, busy_share, others_cpu_s
from bench.procs import BenchFailure, terminate
from core.db import create_engine_from_settings, session_factory
from core.lifecycle import read_ready_file
from core.models import Machine, Role, StageAssignment, UserAccount, WorkOrder, WorkOrderStage
from core.schema import upgrade
from core.security import PasswordHasher
from core.settings import DatabaseSettings, PasswordSettings
from tests.support.postgres import PostgresServer, ServiceUnavailable, free_port

TARGET_STAGE_P95_MS = 100.0
TARGET_LIST_RATIO = 0.5
NOISE_WARNING = 0.05
SITE = "bench"
GOOD_QTY = 480
STAGE_ROUTES = ("POST /stages/{id}/start", "POST /stages/{id}/done")


# ---- the data ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A seeded user: who they are, their password, and what they work on or watch."""

    user_id: int
    username: str
    address: str  # the X-Forwarded-For of their tablet
    stage_id: int | None = None
    machine_id: int | None = None


@dataclass(frozen=True)
class Seeded:
    """Everyone the run plays, and how long seeding took."""

    workers: list[Person]
    operators: list[Person]
    password: str
    seconds: float


def address_of(index: int) -> str:
    """A distinct private address per person (10.x.y.z)."""
    return f"10.{index // 62500 % 256}.{index // 250 % 250}.{index % 250 + 1}"


async def seed(database_url: str, *, workers: int, operators: int) -> Seeded:
    """Users (one production-cost hash), machines, and one work order with one assigned planned stage per worker."""
    started = time.perf_counter()
    password = secrets.token_urlsafe(12)
    costs = PasswordSettings()
    password_hash = PasswordHasher(time_cost=costs.argon2_time_cost, memory_kib=costs.argon2_memory_kib).hash(password)
    engine = create_engine_from_settings(DatabaseSettings(database_url=database_url))
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        async with session_factory(engine)() as session:
            machines = [
                Machine(site=SITE, code=f"m-{index:03d}", name=f"Bench machine {index}", machine_type="bench")
                for index in range(operators)
            ]
            users = [
                UserAccount(username=f"worker-{index:04d}", password_hash=password_hash, role=Role.WORKER)
                for index in range(workers)
            ]
            watchers = [
                UserAccount(username=f"operator-{index:03d}", password_hash=password_hash, role=Role.WORKER)
                for index in range(operators)
            ]
            orders = [
                WorkOrder(
                    product_code="BENCH-1",
                    lot_no=f"L{index:04d}",
                    qty=GOOD_QTY,
                    planned_start=now - timedelta(hours=1),
                    planned_end=now + timedelta(hours=7),
                    stages=[
                        WorkOrderStage(
                            position=0,
                            stage_name="Enjeksiyon",
                            planned_start=now - timedelta(hours=1),
                            planned_end=now + timedelta(hours=7),
                        )
                    ],
                )
                for index in range(workers)
            ]
            session.add_all([*machines, *users, *watchers, *orders])
            await session.flush()
            session.add_all(
                StageAssignment(stage_id=order.stages[0].id, user_id=user.id)
                for order, user in zip(orders, users, strict=True)
            )
            await session.commit()
            seeded_workers = [
                Person(user.id, user.username, address_of(index), stage_id=order.stages[0].id)
                for index, (user, order) in enumerate(zip(users, orders, strict=True))
            ]
            seeded_operators = [
                Person(user.id, user.username, address_of(workers + index), machine_id=machine.id)
                for index, (user, machine) in enumerate(zip(watchers, machines, strict=True))
            ]
    finally:
        await engine.dispose()
    return Seeded(seeded_workers, seeded_operators, password, time.perf_counter() - started)


# ---- a minimal HTTP/1.1 client ------------------------------------------------------------------------------------


class HttpError(Exception):
    """The connection broke or the answer could not be read."""


class Connection:
    """One keep-alive HTTP/1.1 connection (requests one after another), with as little client CPU as possible."""

    IDLE_S = 4.0  # uvicorn closes a keep-alive connection idle for 5 s: a fresh one after 4

    def __init__(self, port: int, address: str | None = None) -> None:
        self.port = port
        self.base = f"Host: {HOST}:{port}\r\n" + (f"X-Forwarded-For: {address}\r\n" if address else "")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last = 0.0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.writer is not None and time.monotonic() - self.last > self.IDLE_S:
            self.close()
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self.reader, self.writer

    async def send(self, method: str, path: str, body: bytes | None, token: str | None) -> asyncio.StreamReader:
        """Write one request; the reader to read its answer from."""
        reader, writer = await self._open()
        head = f"{method} {path} HTTP/1.1\r\n{self.base}"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        return reader

    async def head(self, reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
        """The status and headers of the answer."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as error:
            self.close()
            raise HttpError(f"no answer: {error!r}") from None
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """Status and body."""
        reader = await self.send(method, path, body, token)
        status, headers = await self.head(reader)
        try:
            if headers.get(b"transfer-encoding") == b"chunked":
                payload = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    payload += (await reader.readexactly(size + 2))[:-2]
                await reader.readexactly(2)
            else:
                payload = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as error:
            self.close()
            raise HttpError(f"answer cut: {error!r}") from None
        if headers.get(b"connection") == b"close":
            self.close()
        self.last = time.monotonic()
        return status, payload

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---- what is recorded ----------------------------------------------------------------------------------------------


@dataclass
class RouteStats:
    """Latencies (ms) of one route's successful requests, and its failures."""

    ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def count(self) -> int:
        """Requests sent."""
        return len(self.ms) + self.errors


@dataclass
class Recorder:
    """Every request of the run by route; the failures, described."""

    routes: dict[str, RouteStats] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def stats(self, route: str) -> RouteStats:
        """The route's figures (made on first use)."""
        return self.routes.setdefault(route, RouteStats())

    async def call(
        self,
        route: str,
        connection: Connection,
        method: str,
        path: str,
        *,
        body: object = None,
        token: str | None = None,
        expect: int = 200,
    ) -> bytes | None:
        """One request timed under `route`; the body when it answered `expect`, else None (a failure recorded)."""
        stats = self.stats(route)
        payload = orjson.dumps(body) if body is not None else None
        started = time.perf_counter()
        try:
            status, answer = await connection.request(method, path, payload, token)
        except HttpError as error:
            stats.errors += 1
            self.failures.append(f"{method} {path}: {error}")
            return None
        elapsed = (time.perf_counter() - started) * 1000
        if status != expect:
            stats.errors += 1
            self.failures.append(f"{method} {path}: {status} {answer[:300]!r}")
            return None
        stats.ms.append(elapsed)
        return answer


@dataclass
class Phase:
    """One part of the run: how long it took and the CPU each group used."""

    name: str
    seconds: float = 0.0
    requests: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    others_share: float = 0.0


class Meters:
    """CPU seconds of the API processes, the bare route's, PostgreSQL and this client over one phase."""

    def __init__(self, groups: dict[str, CpuMeter]) -> None:
        self.groups = groups
        self.before: MachineSample | None = None
        self.started = 0.0

    def start(self) -> None:
        """Remember where everything stands."""
        for meter in self.groups.values():
            meter.start()
        self.before, self.started = MachineSample.take(), time.monotonic()

    def stop(self, phase: Phase) -> Phase:
        """CPU since `start()` into `phase`, and the share of the machine other processes used."""
        phase.cpu_s = {name: meter.stop() for name, meter in self.groups.items()}
        after = MachineSample.take()
        phase.seconds = time.monotonic() - self.started
        if self.before is not None:
            phase.machine_busy = busy_share(self.before, after)
            others = others_cpu_s(self.before, after, sum(phase.cpu_s.values()))
            phase.others_share = others / max((os.cpu_count() or 1) * phase.seconds, 1e-9)
        return phase


# ---- the processes -------------------------------------------------------------------------------------------------


class Served:
    """A server process tree on a free port, with its log in the work folder."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("ab") as log:
            # cwd: the work folder, so no .env of the checkout is read.
            self.process = subprocess.Popen(  # noqa: S603 -- our own programs, no shell
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
            )

    @property
    def pid(self) -> int:
        """The supervisor (parent of the workers)."""
        return self.process.pid

    def log(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """BenchFailure when it exited."""
        if self.process.poll() is not None:
            raise BenchFailure(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 30) -> float:
        """SIGTERM, then the seconds it took to exit (killed, and BenchFailure, after `timeout_s`)."""
        started = time.monotonic()
        terminate(self.process, self.name, timeout_s)
        return time.monotonic() - started


def start_api(database_url: str, workdir: Path, workers: int) -> tuple[Served, Path]:
    """`shopfloor api` in production with `workers` processes, behind a trusted proxy at 127.0.0.1."""
    port = free_port()
    env = api_env(database_url, port) | {"API_WORKERS": str(workers), "TRUSTED_PROXIES": "127.0.0.1"}
    ready = workdir / "api.ready"
    ready.unlink(missing_ok=True)
    return Served("api", [str(SHOPFLOOR), "api", "--ready-file", str(ready)], env, workdir, port), ready


def start_bare(database_url: str, workdir: Path, workers: int) -> Served:
    """uvicorn serving `bench.bare_app` with `workers` processes, the API's database settings."""
    port = free_port()
    env = api_env(database_url, port)
    command = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--app-dir", str(REPO)]
    command += ["--host", HOST, "--port", str(port), "--workers", str(workers), "--no-access-log"]
    command += ["--no-proxy-headers", "--log-level", "warning"]
    return Served("bare", command, env, workdir, port)


async def wait_serving(served: Served, path: str, timeout_s: float = 120) -> None:
    """Until `path` answers 200 (every worker of a supervisor is up once its readiness says so)."""
    deadline = time.monotonic() + timeout_s
    while True:
        served.check()
        with contextlib.suppress(HttpError, OSError):
            connection = Connection(served.port)
            status, _ = await connection.request("GET", path)
            connection.close()
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise BenchFailure(f"{served.name} did not answer within {timeout_s} s:\n{served.log()[-3000:]}")
        await asyncio.sleep(0.2)


async def wait_ready_file(served: Served, ready: Path, timeout_s: float = 120) -> None:
    """Until the API's readiness file says every worker listens."""
    deadline = time.monotonic() + timeout_s
    while read_ready_file(ready) is None:
        served.check()
        if time.monotonic() > deadline:
            raise BenchFailure(f"the API was not ready within {timeout_s} s:\n{served.log()[-3000:]}")
        await asyncio.sleep(0.2)


# ---- the load ------------------------------------------------------------------------------------------------------


async def login(recorder: Recorder, connection: Connection, person: Person, password: str) -> str | None:
    """A bearer token for `person`."""
    body = await recorder.call(
        "POST /auth/login",
        connection,
        "POST",
        "/auth/login",
        body={"username": person.username, "password": password},
    )
    return None if body is None else str(orjson.loads(body)["access_token"])


@dataclass
class Stream:
    """One operator's open stream: its connection, what arrived, whether it ended early."""

    connection: Connection
    person: Person
    events: int = 0
    ended: str | None = None
    reader_task: asyncio.Task[None] | None = None


async def open_stream(recorder: Recorder, person: Person, port: int, password: str) -> Stream | None:
    """Log in, ask a ticket, open the stream with it; reading goes on in a task until the stream ends."""
    connection = Connection(port, person.address)
    token = await login(recorder, connection, person, password)
    if token is None:
        return None
    ticket = await recorder.call(
        "POST /machines/{id}/stream/ticket",
        connection,
        "POST",
        f"/machines/{person.machine_id}/stream/ticket",
        token=token,
        expect=201,
    )
    if ticket is None:
        return None
    url = str(orjson.loads(ticket)["url"])
    stats = recorder.stats("GET /machines/{id}/stream (to headers)")
    started = time.perf_counter()
    try:
        reader = await connection.send("GET", url, None, None)
        status, _ = await connection.head(reader)
    except HttpError as error:
        stats.errors += 1
        recorder.failures.append(f"GET {url.split('?')[0]}: {error}")
        return None
    if status != 200:
        stats.errors += 1
        body = await reader.read(300)
        recorder.failures.append(f"GET {url.split('?')[0]}: {status} {body!r}")
        return None
    stats.ms.append((time.perf_counter() - started) * 1000)
    stream = Stream(connection, person)
    stream.reader_task = asyncio.create_task(read_stream(stream, reader), name=f"stream:{person.username}")
    return stream


async def read_stream(stream: Stream, reader: asyncio.StreamReader) -> None:
    """Count the events (`event:` lines) until the server ends the stream."""
    try:
        while line := await reader.readline():
            if line.startswith(b"event:"):
                stream.events += 1
        stream.ended = "closed by the server"
    except (OSError, asyncio.IncompleteReadError) as error:
        stream.ended = repr(error)


async def shift_worker(recorder: Recorder, person: Person, port: int, password: str, delay_s: float) -> str | None:
    """Arrive after `delay_s`, log in, list the stages, start and finish the assigned one; the token."""
    await asyncio.sleep(delay_s)
    connection = Connection(port, person.address)
    try:
        token = await login(recorder, connection, person, password)
        if token is None:
            return None
        listed = await recorder.call("GET /me/stages", connection, "GET", "/me/stages", token=token)
        if listed is None:
            return token
        mine = [item["stage"] for item in orjson.loads(listed) if item["stage"]["status"] == "planned"]
        if not mine or mine[0]["id"] != person.stage_id:
            recorder.failures.append(f"GET /me/stages of {person.username}: not its planned stage: {listed[:300]!r}")
            recorder.stats("GET /me/stages").errors += 1
            return token
        stage = person.stage_id
        started = await recorder.call(STAGE_ROUTES[0], connection, "POST", f"/stages/{stage}/start", token=token)
        if started is not None:
            await recorder.call(
                STAGE_ROUTES[1],
                connection,
                "POST",
                f"/stages/{stage}/done",
                body={"good_qty": GOOD_QTY, "scrap_qty": 0},
                token=token,
            )
        return token
    finally:
        connection.close()


async def hammer(
    recorder: Recorder, route: str, port: int, path_of: Callable[[int], str], tokens: Sequence[str | None], until: float
) -> int:
    """`len(tokens)` clients, each asking `path_of(client)` in a loop on its own connection until `until`."""

    async def client(index: int) -> int:
        connection = Connection(port, address_of(100_000 + index))
        done = 0
        try:
            while time.monotonic() < until:
                await recorder.call(route, connection, "GET", path_of(index), token=tokens[index])
                done += 1
        finally:
            connection.close()
        return done

    counts = await asyncio.gather(*(client(index) for index in range(len(tokens))))
    return sum(counts)


@dataclass
class Throughput:
    """Requests per second of one route under the same concurrency, over its halves."""

    route: str
    requests: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / max(self.seconds, 1e-9)


@dataclass
class RunResult:
    """Everything the report prints."""

    recorder: Recorder
    phases: list[Phase]
    throughput: dict[str, Throughput]
    streams: list[Stream]
    api_stop_s: float
    api_exit: int | None
    seeded: Seeded


async def run(args: argparse.Namespace, server: PostgresServer, workdir: Path) -> RunResult:
    """Seed, serve, play the shift change, measure throughput, stop the API with the streams open."""
    url = server.url(DATABASE)
    seeded = await seed(url, workers=args.workers_count, operators=args.operators)
    print(f"bench_api: seeded in {seeded.seconds:.1f} s", file=sys.stderr, flush=True)
    api, ready = start_api(url, workdir, args.api_workers)
    bare = start_bare(url, workdir, args.api_workers)
    recorder = Recorder()
    phases: list[Phase] = []
    streams: list[Stream] = []
    api_stop_s, api_exit = 0.0, None
    try:
        await wait_ready_file(api, ready)
        await wait_serving(api, "/health")
        await wait_serving(bare, f"/bare?user_id={seeded.workers[0].user_id}")
        meters = Meters(
            {
                "API": CpuMeter(postmaster=api.pid),
                "bare route": CpuMeter(postmaster=bare.pid),
                "PostgreSQL": CpuMeter(postmaster=postmaster_pid(server)),
                "bench client": CpuMeter([os.getpid()]),
            }
        )

        async def phase(name: str, work: Coroutine[Any, Any, int]) -> None:
            print(f"bench_api: {name}", file=sys.stderr, flush=True)
            meters.start()
            requests = await work
            measured = meters.stop(Phase(name))
            measured.requests = requests
            phases.append(measured)
            api.check()

        async def open_streams() -> int:
            opened = await asyncio.gather(
                *(open_stream(recorder, person, api.port, seeded.password) for person in seeded.operators)
            )
            streams.extend(stream for stream in opened if stream is not None)
            return 3 * len(seeded.operators)

        await phase(f"streams: {args.operators} operators log in and open their streams", open_streams())

        rng = random.Random(args.seed)  # noqa: S311 -- arrival times, not secrets
        tokens: list[str | None] = []

        async def shift_change() -> int:
            delays = [rng.uniform(0, args.ramp) for _ in seeded.workers]
            found = await asyncio.gather(
                *(
                    shift_worker(recorder, person, api.port, seeded.password, delay)
                    for person, delay in zip(seeded.workers, delays, strict=True)
                )
            )
            tokens.extend(found)
            return 4 * len(seeded.workers)

        await phase(f"shift change: {args.workers_count} workers over {args.ramp:g} s", shift_change())

        clients = [token for token in tokens if token is not None][: args.concurrency]
        if not clients:
            raise BenchFailure("no worker could log in: nothing to measure throughput with")
        ids = [person.user_id for person in seeded.workers]
        throughput = {"list": Throughput("GET /me/stages"), "bare": Throughput("GET /bare")}
        half = args.seconds / 2
        for kind in ("bare", "list", "list", "bare"):
            until = time.monotonic() + half
            if kind == "list":
                work = hammer(recorder, "GET /me/stages (throughput)", api.port, lambda _: "/me/stages", clients, until)
            else:
                work = hammer(
                    recorder,
                    "GET /bare (throughput)",
                    bare.port,
                    lambda index: f"/bare?user_id={ids[index % len(ids)]}",
                    [None] * len(clients),
                    until,
                )
            await phase(f"throughput: {kind}, {len(clients)} clients, {half:g} s", work)
            throughput[kind].requests += phases[-1].requests
            throughput[kind].seconds += phases[-1].seconds
        open_at_end = sum(1 for stream in streams if stream.ended is None)
        print(f"bench_api: stopping the API with {open_at_end} streams open", file=sys.stderr, flush=True)
        api_stop_s = api.stop(timeout_s=60)
        api_exit = api.process.returncode
        await asyncio.wait_for(
            asyncio.gather(*(stream.reader_task for stream in streams if stream.reader_task is not None)), timeout=30
        )
    finally:
        for stream in streams:
            if stream.reader_task is not None:
                stream.reader_task.cancel()
            stream.connection.close()
        for served in (api, bare):
            with contextlib.suppress(BenchFailure):
                served.stop()
    return RunResult(recorder, phases, throughput, streams, api_stop_s, api_exit, seeded)


# ---- report --------------------------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    """Whether a figure meets its target."""
    return "met" if ok else "NOT met"


def route_line(name: str, stats: RouteStats) -> str:
    """count, errors, p50 / p95 / p99 / max of one route."""
    if not stats.ms:
        return f"{name:<42} {stats.count:>7,} {stats.errors:>6}"
    cells = " ".join(f"{percentile(stats.ms, share):>7.1f}" for share in (0.5, 0.95, 0.99)) + f" {max(stats.ms):>7.1f}"
    return f"{name:<42} {stats.count:>7,} {stats.errors:>6}  {cells}"


def report(args: argparse.Namespace, result: RunResult, machine: dict[str, str]) -> str:
    """The tables the benchmark prints."""
    recorder = result.recorder
    errors = sum(stats.errors for stats in recorder.routes.values())
    stage_ms = [ms for route in STAGE_ROUTES for ms in recorder.stats(route).ms]
    stage_p95 = percentile(stage_ms, 0.95) if stage_ms else math.inf
    bare, listed = result.throughput["bare"], result.throughput["list"]
    ratio = listed.rate / max(bare.rate, 1e-9)
    lines = [
        "",
        f"API benchmark: shift change of {args.workers_count} workers (arrivals over {args.ramp:g} s) with "
        f"{args.operators} live streams; shopfloor api with API_WORKERS={args.api_workers} (production settings, "
        f"argon2id {PasswordSettings().argon2_time_cost} passes x {PasswordSettings().argon2_memory_kib // 1024} MiB) "
        f"on PostgreSQL; bare route with {args.api_workers} uvicorn workers",
        "",
        f"{'route':<42} {'count':>7} {'errors':>6}  {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}   (ms)",
    ]
    lines += [route_line(name, stats) for name, stats in recorder.routes.items()]
    if stage_ms:
        lines.append(route_line("stage actions (start + done)", RouteStats(stage_ms)))
    lines += [
        "",
        f"throughput, {min(args.concurrency, args.workers_count)} concurrent keep-alive clients, "
        f"{args.seconds / 2:g} s x 2 each (bare, list, list, bare):",
        f"  GET /me/stages (API)   {listed.rate:>8,.0f} requests/s",
        f"  GET /bare (bare route) {bare.rate:>8,.0f} requests/s",
        f"  list ÷ bare            {ratio:>8.2f}",
        "",
        f"targets: errors {errors} (0: {mark(errors == 0)}); stage actions p95 {stage_p95:.1f} ms "
        f"(≤ {TARGET_STAGE_P95_MS:g} ms: {mark(stage_p95 <= TARGET_STAGE_P95_MS)}); list ÷ bare {ratio:.2f} "
        f"(≥ {TARGET_LIST_RATIO}: {mark(ratio >= TARGET_LIST_RATIO)})",
        "",
        "CPU seconds per phase (from /proc; 'other processes' is what ran besides the benchmark):",
    ]
    for phase in result.phases:
        cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in phase.cpu_s.items())
        rate = phase.requests / max(phase.seconds, 1e-9)
        lines.append(
            f"  {phase.name}: {phase.seconds:.1f} s, {phase.requests:,} requests ({rate:,.0f}/s); {cpu}; "
            f"all cores busy {phase.machine_busy:.0%}, other processes {phase.others_share:.1%} of the machine"
        )
    for kind, served in (("list", "API"), ("bare", "bare route")):
        used = [phase for phase in result.phases if phase.name.startswith(f"throughput: {kind}")]
        requests = max(sum(phase.requests for phase in used), 1)
        per = {
            name: 1000 * sum(phase.cpu_s.get(name, 0.0) for phase in used) / requests
            for name in (served, "PostgreSQL", "bench client")
        }
        lines.append(f"  CPU per {kind} request: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per.items()))
    still_open = sum(1 for stream in result.streams if stream.ended is None)
    events = sum(stream.events for stream in result.streams)
    lines += [
        "",
        f"streams: {len(result.streams)} of {args.operators} opened, {events} events received; SIGTERM to the API "
        f"with them open: it exited {result.api_exit} after {result.api_stop_s:.1f} s, "
        f"{len(result.streams) - still_open} streams ended by the server",
        "",
        *(f"{name:<11} {value}" for name, value in machine.items()),
    ]
    noisy = [phase.name.split(":")[0] for phase in result.phases if phase.others_share > NOISE_WARNING]
    if noisy:
        lines += [
            "",
            f"WARNING: other processes took more than {NOISE_WARNING:.0%} of the machine during "
            f"{', '.join(sorted(set(noisy)))}: the figures are pessimistic, run again on a quiet machine",
        ]
    if recorder.failures:
        shown = recorder.failures[: args.show_errors]
        lines += ["", f"FAILED requests ({len(recorder.failures)}; first {len(shown)}):", *(f"  {f}" for f in shown)]
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_api", description=__doc__.split("\n")[0])
    parser.add_argument("--workers-count", type=int, default=200, help="users with role worker (default 200)")
    parser.add_argument("--operators", type=int, default=50, help="live streams held open (default 50)")
    parser.add_argument(
        "--api-workers", type=int, default=2, help="API_WORKERS, also the bare route's (default 2: 2 cores, measured)"
    )
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds over which the workers arrive (default 60)")
    parser.add_argument("--seconds", type=float, default=20.0, help="of throughput per route (default 20)")
    parser.add_argument("--concurrency", type=int, default=50, help="clients in the throughput phase (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-errors", type=int, default=20, help="failed requests printed (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (cluster, API and bare logs)")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record the API processes with py-spy (collapsed stacks, workers included)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 6 workers, 2 operators, 1 s ramp, 1 s of throughput"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.workers_count, args.operators, args.ramp, args.seconds = 6, 2, 1.0, 1.0
        args.concurrency = min(args.concurrency, 4)
    if min(args.workers_count, args.operators, args.api_workers, args.concurrency) < 1 or args.seconds <= 0:
        parser.error("--workers-count, --operators, --api-workers, --concurrency and --seconds must be positive")
    if args.ramp < 0:
        parser.error("--ramp must not be negative")
    return args


def start_profiler(pid: int, output: Path, duration_s: float) -> subprocess.Popen[bytes]:
    """py-spy on the API's supervisor and its workers (`--subprocesses`), collapsed stacks."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise BenchFailure("--py-spy needs py-spy on PATH: uv run --with py-spy python -m bench.bench_api …")
    command = [binary, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "100"]
    command += ["--nonblocking", "--duration", str(int(duration_s)), "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603 -- fixed tool, no shell


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 when a request failed, 2 when it could not measure."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="shopfloor-bench-api-"))
    try:
        with cluster(workdir, keep=args.keep) as server:
            with psycopg.connect(server.url(), autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            upgrade(server.url(DATABASE))
            with psycopg.connect(server.url(DATABASE)) as conn:
                machine = versions(conn)
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                result = runner.run(_main(args, server, workdir))
            print(report(args, result, machine))
            return 1 if result.recorder.failures else 0
    except (BenchFailure, ServiceUnavailable, psycopg.Error, OSError) as error:
        print(f"bench_api: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"bench_api: work folder kept at {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _main(args: argparse.Namespace, server: PostgresServer, workdir: Path) -> RunResult:
    if not args.py_spy:
        return await run(args, server, workdir)
    # The profiler attaches once the API is up: started by a watcher that waits for the readiness file.
    ready = workdir / "api.ready"

    async def attach() -> subprocess.Popen[bytes]:
        while True:
            info = read_ready_file(ready)
            if info is not None:
                return start_profiler(int(str(info["pid"])), Path(args.py_spy), 3600)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(attach(), name="py-spy:attach")
    try:
        return await run(args, server, workdir)
    finally:
        if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
            profiler = watcher.result()
            if profiler.poll() is None:
                profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=60)
        else:
            watcher.cancel()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (cheaper per request, so the client takes less of the machine)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())

"""Ingest benchmark: MQTT -> `shopfloor ingest` -> PostgreSQL end to end, next to the raw SQL path it uses.

    uv run python -m bench.bench_ingest [--seconds 60] [--machines 100] [--tags 20] [--samples 50]

Starts a throwaway PostgreSQL and an anonymous Mosquitto (our production config otherwise), migrates a fresh
database, then:

1. end to end: `shopfloor ingest` as its own process, the load generator publishing QoS 1 for `--seconds`; waits
   until every published reading is committed and checks the stored rows exactly (per machine, no dead letters);
2. raw limit: the same rows through the ingestor's SQL (COPY BINARY into a temp staging table, then
   `INSERT … ON CONFLICT DO NOTHING` into `reading`) in batches of the ingestor's size from one connection, and
   plain COPY BINARY into `reading` as the ceiling, each into an emptied table.

Prints one table. Targets are printed, never asserted; the exit status is non-zero only when rows are lost or
duplicated (or a service fails). `docs/performance.md` explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiomqtt
import psycopg
from psycopg import sql

import core.ingest
from bench.procs import (
    CLOCK_TICKS,
    BenchFailure,
    cpu_seconds,
    machine_facts,
    mosquitto_version,
    peak_rss_mb,
    scrape_metrics,
    start_py_spy,
    stop_py_spy,
    terminate,
)
from core.lifecycle import read_ready_file
from core.schema import upgrade
from core.settings import IngestorSettings
from simulators.loadgen import BrokerTarget, LoadPlan, LoadResult, LoadSpec, default_base_time, run_load, tag_names
from tests.support.mosquitto import MosquittoBroker, running_mosquitto
from tests.support.postgres import PostgresServer, free_port, running_postgres

TARGET_E2E_READINGS_PER_S = 150_000
TARGET_RATIO = 0.85
TARGET_PEAK_RSS_MB = 300
# Share of the machine used by processes outside the benchmark above which the figures are flagged as disturbed.
NOISE_WARNING = 0.05
# How often the ingestors' /metrics are read while publishing (each scrape costs the ingestor a few milliseconds).
POLL_S = 0.25
DATABASE = "shopfloor_bench"
SHOPFLOOR = Path(sys.executable).parent / "shopfloor"
WRITTEN_METRIC = "shopfloor_ingest_readings_written_total"
DUPLICATE_METRIC = "shopfloor_ingest_readings_duplicate_total"
QUEUE_METRIC = "shopfloor_ingest_uncommitted_messages"
BATCHES_METRIC = "shopfloor_ingest_batch_seconds_count"
BATCH_SECONDS_METRIC = "shopfloor_ingest_batch_seconds_sum"
SEQ_GAPS_METRIC = "shopfloor_ingest_seq_gaps_total"
# The statements of core/ingest.py::_copy_readings, verbatim, so the raw run measures exactly that SQL.
STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS reading_staging_q (machine_id integer, tag varchar(64), ts timestamptz, "
    "value double precision, quality smallint) ON COMMIT DELETE ROWS"
)
STAGING_COPY = "COPY reading_staging_q (machine_id, tag, ts, value, quality) FROM STDIN (FORMAT BINARY)"
STAGING_INSERT = (
    "INSERT INTO reading (machine_id, tag, ts, value, quality) "
    "SELECT machine_id, tag, ts, value, quality FROM reading_staging_q ON CONFLICT DO NOTHING"
)
STAGING_TRUNCATE = "TRUNCATE reading_staging_q"
DIRECT_COPY = "COPY reading (machine_id, tag, ts, value) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = ["int4", "varchar", "timestamptz", "float8"]
STAGING_TYPES = [*COPY_TYPES, "int2"]  # and the quality (None: good), as the ingestor writes it

Row = tuple[int, str, datetime, float]


def raw_sql_is_the_ingestors() -> bool:
    """Whether core/ingest.py still runs these very statements (compared without quotes and white space)."""

    def squeeze(text: str) -> str:
        return re.sub(r"[\"\s]", "", text)

    source = squeeze(inspect.getsource(core.ingest))
    return all(squeeze(statement) in source for statement in (STAGING_DDL, STAGING_COPY, STAGING_INSERT))


# ---- processes: CPU time and memory from /proc ------------------------------------------------------------------


PF_KTHREAD = 0x00200000  # proc(5), field 9 (flags): a kernel thread


def kernel_threads_jiffies() -> int:
    """CPU time of all kernel threads so far (writeback, softirq handling…: work done for every process)."""
    used = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[6]) & PF_KTHREAD:
                    used += int(fields[11]) + int(fields[12])
    return used


@dataclass(frozen=True)
class MachineSample:
    """CPU jiffies of the whole machine since boot (/proc/stat), and the part no user process is charged for."""

    busy: int  # everything but idle and iowait
    total: int
    kernel: int  # interrupts, softirqs and kernel threads: here mostly our own network and disk traffic

    @classmethod
    def take(cls) -> MachineSample:
        """Read it now."""
        user, nice, system, idle, iowait, irq, softirq, steal = (
            int(part) for part in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
        )
        total = user + nice + system + idle + iowait + irq + softirq + steal
        return cls(total - idle - iowait, total, irq + softirq + kernel_threads_jiffies())


def busy_share(before: MachineSample, after: MachineSample) -> float:
    """How busy all cores were between two samples."""
    return (after.busy - before.busy) / max(after.total - before.total, 1)


def others_cpu_s(before: MachineSample, after: MachineSample, ours_s: float) -> float:
    """CPU seconds used between two samples by user processes other than ours (other work on the machine)."""
    user_space = (after.busy - after.kernel) - (before.busy - before.kernel)
    return max(user_space / CLOCK_TICKS - ours_s, 0.0)


def children_of(parent: int) -> list[int]:
    """Direct children of a process (the backends of a postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
    return found


def pid_running(executable: Path, argument: str) -> int:
    """The pid of the process started as `executable … argument …` (our broker, found by its config file)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0] == str(executable).encode() and argument.encode() in argv:
                    return int(entry.name)
    raise BenchFailure(f"no process {executable} {argument}")


@dataclass
class CpuMeter:
    """CPU seconds used by a group of processes between `start()` and `stop()`."""

    pids: Sequence[int] = ()
    postmaster: int | None = None
    used_s: float = 0.0
    _start: dict[int, float] = field(default_factory=dict)

    def _sample(self) -> dict[int, float]:
        pids = list(self.pids)
        if self.postmaster is not None:
            pids += children_of(self.postmaster)
        sample = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                sample[pid] = cpu_seconds(pid)
        if self.postmaster is not None:
            # Backends and autovacuum workers that exited in between count through the postmaster, which reaps them.
            sample[self.postmaster] = cpu_seconds(self.postmaster, reaped_children=True)
        return sample

    def start(self) -> None:
        """Remember where each process stands."""
        self._start = self._sample()

    def stop(self) -> float:
        """CPU seconds since `start()` (processes born in between count from zero)."""
        self.used_s = sum(now - self._start.get(pid, 0.0) for pid, now in self._sample().items())
        return self.used_s


# ---- the ingestor as its own process ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestorConfig:
    """The ingestor settings under test (env vars of `shopfloor ingest`); None: the production default."""

    batch_min_readings: int | None = None
    batch_max_readings: int | None = None
    batch_max_bytes: int | None = None
    batch_max_age_ms: int | None = None
    max_inflight: int | None = None
    writers: int | None = None

    def env(self) -> dict[str, str]:
        """The variables that differ from the production defaults."""
        names = {
            "INGEST_BATCH_MIN_READINGS": self.batch_min_readings,
            "INGEST_BATCH_MAX_READINGS": self.batch_max_readings,
            "INGEST_BATCH_MAX_BYTES": self.batch_max_bytes,
            "INGEST_BATCH_MAX_AGE_MS": self.batch_max_age_ms,
            "INGEST_MAX_INFLIGHT": self.max_inflight,
            "INGEST_WRITERS": self.writers,
        }
        return {name: str(value) for name, value in names.items() if value is not None}

    def describe(self) -> str:
        """The settings as the run used them (the defaults of core/settings.py where not given)."""
        defaults = IngestorSettings.model_fields
        values = {
            "INGEST_BATCH_MIN_READINGS": self.batch_min_readings or defaults["ingest_batch_min_readings"].default,
            "INGEST_BATCH_MAX_READINGS": self.batch_max_readings or defaults["ingest_batch_max_readings"].default,
            "INGEST_BATCH_MAX_BYTES": self.batch_max_bytes or defaults["ingest_batch_max_bytes"].default,
            "INGEST_BATCH_MAX_AGE_MS": self.batch_max_age_ms or defaults["ingest_batch_max_age_ms"].default,
            "INGEST_MAX_INFLIGHT": self.max_inflight or defaults["ingest_max_inflight"].default,
            "INGEST_WRITERS": self.writers or defaults["ingest_writers"].default,
        }
        return " ".join(f"{name}={value}" for name, value in values.items()) + ("" if self.env() else " (all defaults)")


class Ingestor:
    """`shopfloor ingest` as production runs it, with its metrics endpoint on a free port."""

    def __init__(
        self, broker: MosquittoBroker, database_url: str, config: IngestorConfig, log_path: Path, *, client_id: str
    ):
        self.metrics_port = free_port()
        self.log_path = log_path
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(("SHOPFLOOR_", "INGEST_", "MQTT_"))
        }
        env |= {
            "SHOPFLOOR_ENV": "test",
            "DATABASE_URL": database_url,
            "MQTT_HOST": broker.host,
            "MQTT_PORT": str(broker.port),
            "INGEST_CLIENT_ID": client_id,
            "INGEST_SHARED_GROUP": "bench",
            # Every machine of the load registers itself (the production cap is 50 per site per hour).
            "INGEST_AUTO_REGISTER_MAX_PER_SITE_PER_HOUR": "100000",
            "INGEST_METRICS_PORT": str(self.metrics_port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **config.env(),
        }
        self.ready_file = log_path.with_suffix(".ready")
        self.ready_file.unlink(missing_ok=True)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- our own console script, no shell
                [str(SHOPFLOOR), "ingest", "--ready-file", str(self.ready_file)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        """The ingestor's process id (the console script is the Python process itself)."""
        return self.process.pid

    def log(self) -> str:
        """What it logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_subscribed(self, timeout_s: float = 30) -> None:
        """Until it has subscribed (publishing earlier would match no subscriber and be dropped)."""
        deadline = time.monotonic() + timeout_s
        while read_ready_file(self.ready_file) is None:
            if self.process.poll() is not None:
                raise BenchFailure(f"ingestor exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchFailure(f"ingestor did not subscribe within {timeout_s} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        """Its Prometheus counters (what a scraper sees)."""
        return scrape_metrics("127.0.0.1", self.metrics_port)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (it drains and commits), then wait for the exit status."""
        return terminate(self.process, "ingestor", timeout_s)


# ---- end to end ------------------------------------------------------------------------------------------------


@dataclass
class EndToEnd:
    """What the end-to-end run measured."""

    load: LoadResult
    last_commit: float  # time.monotonic() when the ingestor's counter reached the published readings
    committed: int  # the ingestor's counter at that moment
    duplicates: int
    ingestor_cpu_s: float
    stack_cpu_s: dict[str, float]
    machine_busy: float  # share of all cores busy while the CPU meters ran
    others_cpu_s: float  # CPU seconds of other user processes in that time
    window_s: float  # how long the CPU meters ran (connect, publish, drain)
    peak_rss_mb: list[float]  # per ingestor process
    exit_codes: list[int]
    queue_depths: list[float]
    history: list[tuple[float, int]]
    batches: int
    batch_seconds: float  # time the writer spent storing and committing batches
    seq_gaps: int = 0  # the ingestors' seq_gap counter: every published `seq` is there, so any gap is false
    seq_missing_in_db: int = 0  # the same, as telemetry_seq records it
    seq_behind: int = 0  # publishers whose recorded count did not reach their last `seq`
    stored: int = 0
    stored_by_machine: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    log_warnings: Counter[str] = field(default_factory=Counter)

    @property
    def elapsed_s(self) -> float:
        """First publish to last commit."""
        return self.last_commit - self.load.first_publish

    @property
    def readings_per_s(self) -> float:
        """Readings stored per second, end to end."""
        return self.load.readings / self.elapsed_s

    def rate_between(self, start: float, end: float) -> float:
        """Committed readings per second between two offsets (seconds) from the first publish."""
        origin = self.load.first_publish
        points = [(0.0, 0), *((at - origin, count) for at, count in self.history)]
        first = min(points, key=lambda point: abs(point[0] - start))
        last = min(points, key=lambda point: abs(point[0] - end))
        return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)

    @property
    def problems(self) -> list[str]:
        """Lost or duplicated rows, or anything else that makes the figures wrong."""
        found = []
        if self.stored != self.load.readings:
            found.append(f"stored {self.stored:,} rows but {self.load.readings:,} readings were published")
        wrong = {
            code: (published, self.stored_by_machine.get(code, 0))
            for code, published in self.load.readings_by_machine.items()
            if published != self.stored_by_machine.get(code, 0)
        }
        extra = set(self.stored_by_machine) - set(self.load.readings_by_machine)
        if wrong:
            found.append(
                f"{len(wrong)} machines with wrong counts (published, stored): {dict(list(wrong.items())[:5])}"
            )
        if extra:
            found.append(f"rows for machines nobody published: {sorted(extra)[:5]}")
        if self.dead_letters:
            found.append(f"{self.dead_letters} dead letters")
        if any(self.exit_codes):
            found.append(f"ingestor exit status after SIGTERM: {self.exit_codes}")
        return found


class Progress:
    """The ingestors' committed-readings counters, polled from their metrics endpoints in a thread."""

    def __init__(self, ingestors: Sequence[Ingestor]):
        self.ingestors = ingestors
        self.committed = 0
        self.duplicates = 0
        self.seen_at = time.monotonic()
        self.queue_depth = 0.0
        self.batches = 0
        self.batch_seconds = 0.0
        self.seq_gaps = 0
        self.queue_depths: list[float] = []  # uncommitted messages while publishing: is the ingestor short of work?
        self.history: list[tuple[float, int]] = []  # (time.monotonic(), committed readings) whenever it moved
        self._polled = asyncio.Event()

    async def poll(self) -> int:
        """Read the counter once; remember when it last moved."""
        values = await asyncio.to_thread(self._scrape)
        committed = int(values.get(WRITTEN_METRIC, 0))
        self.duplicates = int(values.get(DUPLICATE_METRIC, 0))
        self.queue_depth = values.get(QUEUE_METRIC, 0.0)
        self.batches = int(values.get(BATCHES_METRIC, 0))
        self.batch_seconds = values.get(BATCH_SECONDS_METRIC, 0.0)
        self.seq_gaps = int(values.get(SEQ_GAPS_METRIC, 0))
        if committed != self.committed:
            self.committed, self.seen_at = committed, time.monotonic()
            self.history.append((self.seen_at, committed))
        self._polled.set()
        self._polled = asyncio.Event()
        return committed

    def _scrape(self) -> dict[str, float]:
        """Every ingestor's metrics, added up."""
        total: Counter[str] = Counter()
        for ingestor in self.ingestors:
            total.update(ingestor.metrics())
        return dict(total)

    async def next_poll(self) -> None:
        """Until the counter has been read again."""
        await self._polled.wait()

    async def follow(self, every_s: float) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            self.queue_depths.append(self.queue_depth)
            await asyncio.sleep(every_s)

    async def wait_for(self, readings: int, *, every_s: float, timeout_s: float) -> None:
        """Until `readings` are committed; BenchFailure after `timeout_s` without reaching them."""
        deadline = time.monotonic() + timeout_s
        while await self.poll() < readings:
            for ingestor in self.ingestors:
                if ingestor.process.poll() is not None:
                    raise BenchFailure(f"ingestor exited with {ingestor.process.returncode}:\n{ingestor.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchFailure(f"only {self.committed:,} of {readings:,} readings committed after {timeout_s} s")
            await asyncio.sleep(every_s)


async def publish_and_wait(
    broker: MosquittoBroker,
    ingestors: Sequence[Ingestor],
    spec: LoadSpec,
    *,
    max_backlog: int | None,
    drain_timeout_s: float,
) -> tuple[LoadResult, Progress]:
    """Run the load (closed loop when `max_backlog` is set) and wait until the ingestors committed all of it."""
    progress = Progress(ingestors)
    follower = asyncio.create_task(progress.follow(POLL_S), name="bench:follow-progress")

    async def gate(issued: int) -> None:
        # Hold the broker's backlog (handed over, not yet committed) bounded: the ingestor is always busy, and
        # the run ends with seconds, not minutes, of draining.
        while max_backlog is not None and issued - progress.committed > max_backlog:
            await progress.next_poll()

    try:
        load = await run_load(BrokerTarget(broker.host, broker.port), spec, gate=gate)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    await progress.wait_for(load.readings, every_s=0.02, timeout_s=drain_timeout_s)
    return load, progress


def run_end_to_end(
    pg: PostgresServer, broker: MosquittoBroker, url: str, args: argparse.Namespace, workdir: Path
) -> EndToEnd:
    """Part a: publish for `--seconds`, wait for every row, check them, measure the ingestor."""
    config = ingestor_config(args)
    # More than one: the designed scale-out, several processes in one shared-subscription group.
    ingestors = [
        Ingestor(broker, url, config, workdir / f"ingestor-{index}.log", client_id=f"ingestor-bench-{index}")
        for index in range(args.ingestors)
    ]
    pids = [ingestor.pid for ingestor in ingestors]
    profiler: subprocess.Popen[bytes] | None = None
    try:
        for ingestor in ingestors:
            ingestor.wait_subscribed()
        if args.py_spy:
            profiler = start_py_spy(pids[0], Path(args.py_spy), args.seconds + 120, bench="bench.bench_ingest")
        spec = LoadSpec(
            machines=args.machines,
            tags=args.tags,
            samples_per_message=args.samples,
            publishers=args.publishers,
            inflight=args.inflight,
            readings_per_s=args.rate or None,
            duration_s=args.seconds,
            seed=args.seed,
            site="bench",
        )
        meters = {
            "ingestor": CpuMeter(pids),
            "postgres": CpuMeter(postmaster=_postmaster_pid(pg)),
            "mosquitto": CpuMeter([pid_running(broker.executable, str(broker.config_file))]),
            "load generator + bench": CpuMeter([os.getpid()]),
        }
        machine_before, window_start = MachineSample.take(), time.monotonic()
        for meter in meters.values():
            meter.start()
        max_backlog = None if args.rate else args.max_backlog
        load, progress = asyncio.run(
            publish_and_wait(broker, ingestors, spec, max_backlog=max_backlog, drain_timeout_s=args.drain_timeout)
        )
        cpu = {name: meter.stop() for name, meter in meters.items()}
        machine_after, window_s = MachineSample.take(), time.monotonic() - window_start
        rss = [peak_rss_mb(pid) for pid in pids]
        if profiler is not None:
            stop_py_spy(profiler)
            profiler = None
        exit_codes = [ingestor.stop() for ingestor in ingestors]
        ours = sum(cpu.values())
        result = EndToEnd(
            load=load,
            last_commit=progress.seen_at,
            committed=progress.committed,
            duplicates=progress.duplicates,
            queue_depths=progress.queue_depths,
            history=progress.history,
            batches=progress.batches,
            batch_seconds=progress.batch_seconds,
            seq_gaps=progress.seq_gaps,
            ingestor_cpu_s=cpu.pop("ingestor"),
            stack_cpu_s=cpu,
            machine_busy=busy_share(machine_before, machine_after),
            others_cpu_s=others_cpu_s(machine_before, machine_after, ours),
            window_s=window_s,
            peak_rss_mb=rss,
            exit_codes=exit_codes,
        )
        result.log_warnings = sum((warnings_in(ingestor.log()) for ingestor in ingestors), Counter())
    finally:
        if profiler is not None:
            stop_py_spy(profiler)
        for ingestor in ingestors:
            if ingestor.process.poll() is None:
                ingestor.process.kill()
                ingestor.process.wait()
    check_stored(url, result, args.tags * args.samples)
    return result


def warnings_in(log: str) -> Counter[str]:
    """Warning and error events in the ingestor's JSON log, by event name."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                found[str(entry.get("event"))] += 1
    return found


def _postmaster_pid(pg: PostgresServer) -> int:
    """The server's main process (first line of postmaster.pid)."""
    return int((pg.data_dir / "postmaster.pid").read_text().split()[0])


def check_stored(url: str, result: EndToEnd, readings_per_message: int) -> None:
    """Count what is in the database, per machine, after the ingestor stopped; and where each publisher's `seq`
    record stands (the load numbers each machine's messages 0, 1, 2 … without a hole)."""
    with psycopg.connect(url) as conn:
        result.stored = int(conn.execute("SELECT count(*) FROM reading").fetchone()[0])  # type: ignore[index]
        rows = conn.execute(
            "SELECT m.code, count(*) FROM reading r JOIN machine m ON m.id = r.machine_id GROUP BY m.code"
        ).fetchall()
        result.stored_by_machine = {code: int(count) for code, count in rows}
        result.dead_letters = int(conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0])  # type: ignore[index]
        last_seq = {code: count // readings_per_message - 1 for code, count in result.load.readings_by_machine.items()}
        missing, behind = conn.execute(
            "SELECT coalesce(sum(missing_total), 0), count(*) FILTER (WHERE contiguous IS DISTINCT FROM last_seq) "
            "FROM telemetry_seq s JOIN machine m ON m.id = s.machine_id "
            "JOIN (SELECT unnest(%s::text[]) AS code, unnest(%s::bigint[]) AS last_seq) l ON l.code = m.code",
            (list(last_seq), list(last_seq.values())),
        ).fetchone() or (0, 0)
        result.seq_missing_in_db, result.seq_behind = int(missing), int(behind)


# ---- optional profiling -----------------------------------------------------------------------------------------


# ---- raw SQL path ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResult:
    """One raw run: rows, seconds spent in the database calls, batches."""

    rows: int
    seconds: float
    batches: int

    @property
    def rows_per_s(self) -> float:
        """Rows inserted per second."""
        return self.rows / self.seconds


@dataclass(frozen=True)
class RawRuns:
    """Both raw runs, and how much of the machine other processes took meanwhile."""

    staging: RawResult
    direct: RawResult
    disturbance: float
    staging_postgres_cpu_s: float = 0.0  # PostgreSQL's CPU seconds during the staging run


def raw_rows(plan: LoadPlan, machine_ids: list[int], total: int) -> Iterator[Row]:
    """The end-to-end run's rows in publishing order: round after round of messages, every machine, S x T."""
    spec = plan.spec
    tags = tag_names(spec)
    produced, seq = 0, 0
    while True:
        for machine, machine_id in enumerate(machine_ids):
            for sample in range(seq * spec.samples_per_message, (seq + 1) * spec.samples_per_message):
                ts, values = plan.sample_time(sample), plan.values(machine, sample)
                for tag in tags:
                    yield machine_id, tag, ts, values[tag]
                    produced += 1
                    if produced == total:
                        return
        seq += 1


def batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Lists of `size` rows (the last one shorter)."""
    while True:
        batch = [row for _, row in zip(range(size), rows, strict=False)]
        if not batch:
            return
        yield batch


def empty_reading_table(conn: psycopg.Connection) -> None:
    """Truncate `reading` and checkpoint, so each raw run starts from the same empty table."""
    conn.execute("TRUNCATE reading")
    conn.commit()
    conn.execute("CHECKPOINT")
    conn.commit()


def raw_staging_path(conn: psycopg.Connection, rows: Iterator[Row], batch_size: int) -> RawResult:
    """The ingestor's SQL, one transaction per batch: COPY BINARY into the staging table, INSERT … ON CONFLICT."""
    seconds, count, number = 0.0, 0, 0
    for batch in batches(rows, batch_size):
        started = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.execute(STAGING_DDL)
            with cursor.copy(STAGING_COPY) as copy:
                copy.set_types(STAGING_TYPES)
                for row in batch:
                    copy.write_row((*row, None))
            cursor.execute(STAGING_INSERT)
            inserted = cursor.rowcount
            cursor.execute(STAGING_TRUNCATE)
        conn.commit()
        seconds += time.perf_counter() - started
        if inserted != len(batch):
            raise BenchFailure(f"raw staging path inserted {inserted} of {len(batch)} rows")
        count, number = count + len(batch), number + 1
    return RawResult(count, seconds, number)


def raw_copy(conn: psycopg.Connection, rows: Iterator[Row], batch_size: int) -> RawResult:
    """The ceiling: COPY BINARY straight into `reading`, one transaction per batch of the same size."""
    seconds, count, number = 0.0, 0, 0
    for batch in batches(rows, batch_size):
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(DIRECT_COPY) as copy:
            copy.set_types(COPY_TYPES)
            for row in batch:
                copy.write_row(row)
        conn.commit()
        seconds += time.perf_counter() - started
        count, number = count + len(batch), number + 1
    return RawResult(count, seconds, number)


def run_raw(url: str, pg: PostgresServer, plan: LoadPlan, total: int, batch_size: int) -> RawRuns:
    """Part b: the same table shape and rows, staging path then plain COPY, each into an emptied `reading`."""
    with psycopg.connect(url) as conn:
        codes = {code: machine_id for machine_id, code in conn.execute("SELECT id, code FROM machine").fetchall()}
        ids = [codes[code] for code in plan.codes]
        # Metered while the connection is open: once it closes, its backend's CPU time is only found again after
        # the postmaster has reaped it.
        meters = [CpuMeter(postmaster=_postmaster_pid(pg)), CpuMeter([os.getpid()])]
        for meter in meters:
            meter.start()
        machine_before, started = MachineSample.take(), time.monotonic()
        empty_reading_table(conn)
        staging_meter = CpuMeter(postmaster=_postmaster_pid(pg))
        staging_meter.start()
        staging = raw_staging_path(conn, raw_rows(plan, ids, total), batch_size)
        staging_postgres_cpu_s = staging_meter.stop()
        stored = conn.execute("SELECT count(*) FROM reading").fetchone()
        if stored is None or stored[0] != total:
            raise BenchFailure(f"raw staging path stored {stored} rows instead of {total}")
        empty_reading_table(conn)
        direct = raw_copy(conn, raw_rows(plan, ids, total), batch_size)
        others = others_cpu_s(machine_before, MachineSample.take(), sum(meter.stop() for meter in meters))
        window_s = time.monotonic() - started
        empty_reading_table(conn)
    return RawRuns(staging, direct, others / max((os.cpu_count() or 1) * window_s, 1e-9), staging_postgres_cpu_s)


# ---- report -----------------------------------------------------------------------------------------------------


def versions(url: str, broker: MosquittoBroker) -> dict[str, str]:
    """The machine and the software measured."""
    with psycopg.connect(url) as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        fsync, shared_buffers, max_wal = (
            str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("fsync", "shared_buffers", "max_wal_size")
        )
    return {
        **machine_facts(),
        "PostgreSQL": f"{server} (throwaway cluster of tests/support/postgres.py; fsync={fsync}, "
        f"shared_buffers={shared_buffers}, max_wal_size={max_wal})",
        "Mosquitto": mosquitto_version(broker.executable),
        "psycopg": psycopg.__version__,
    }


def mark(ok: bool) -> str:
    """Whether a figure meets its target."""
    return "met" if ok else "NOT met"


def report(
    args: argparse.Namespace,
    e2e: EndToEnd,
    raw: RawRuns | None,
    machine: dict[str, str],
) -> str:
    """The table the benchmark prints (without the raw rows when the end-to-end check failed)."""
    cpu_share = e2e.ingestor_cpu_s / e2e.elapsed_s
    load = e2e.load
    mode = f"open loop at {args.rate:,.0f} readings/s" if args.rate else f"closed loop, backlog ≤ {args.max_backlog:,}"
    rows = [
        ("readings/s end to end", f"{e2e.readings_per_s:,.0f}", f"≥ {TARGET_E2E_READINGS_PER_S:,} "
         f"({mark(e2e.readings_per_s >= TARGET_E2E_READINGS_PER_S)})"),
    ]  # fmt: skip
    if raw is not None:
        staging, direct = raw.staging, raw.direct
        ratio = e2e.readings_per_s / staging.rows_per_s
        rows += [
            ("raw staging path readings/s", f"{staging.rows_per_s:,.0f}",
             f"{staging.rows:,} rows, {staging.batches:,} transactions"),
            ("raw COPY readings/s (ceiling)", f"{direct.rows_per_s:,.0f}",
             f"{direct.rows:,} rows, {direct.batches:,} transactions"),
            ("ratio end to end / raw staging", f"{ratio:.2f}", f"≥ {TARGET_RATIO} ({mark(ratio >= TARGET_RATIO)})"),
        ]  # fmt: skip
    depths = sorted(e2e.queue_depths) or [0.0]
    empty = sum(1 for depth in depths if depth == 0) / len(depths)
    rows += [
        ("readings/s in the first / last 10 s", f"{e2e.rate_between(0, 10):,.0f} / "
         f"{e2e.rate_between(e2e.elapsed_s - 10, e2e.elapsed_s):,.0f}", "the table grows from empty"),
        ("ingestor uncommitted messages", f"{depths[len(depths) // 2]:.0f}",
         f"median while publishing; none in {empty:.0%} of {len(depths)} samples"),
        ("ingestor batches", f"{e2e.batches:,}",
         f"{e2e.load.readings / max(e2e.batches, 1):,.0f} readings each; writing them took "
         f"{e2e.batch_seconds:.1f} s ({e2e.batch_seconds / (e2e.elapsed_s * len(e2e.exit_codes)):.0%} of the time)"),
        ("ingestor CPU seconds", f"{e2e.ingestor_cpu_s:.1f}", f"in {e2e.elapsed_s:.1f} s first publish → last commit"),
        ("ingestor CPU % of one core", f"{cpu_share:.0%}", ""),
        ("ingestor peak RSS MB (VmHWM)", f"{max(e2e.peak_rss_mb):.0f}",
         f"≤ {TARGET_PEAK_RSS_MB} ({mark(max(e2e.peak_rss_mb) <= TARGET_PEAK_RSS_MB)})"
         + (f"; the largest of {len(e2e.peak_rss_mb)} processes" if len(e2e.peak_rss_mb) > 1 else "")),
        ("publisher readings/s", f"{load.readings_per_s:,.0f}",
         f"{load.messages:,} msgs, {load.messages_per_s:,.0f} msg/s, {mode}"),
        ("rows published / stored", f"{load.readings:,} / {e2e.stored:,}",
         "exact match" if not e2e.problems else "MISMATCH"),
        ("duplicates skipped / dead letters", f"{e2e.duplicates:,} / {e2e.dead_letters:,}", ""),
    ]  # fmt: skip
    for name, seconds in e2e.stack_cpu_s.items():
        rows.append((f"{name} CPU seconds", f"{seconds:.1f}", f"{seconds / e2e.elapsed_s:.0%} of one core"))
    # CPU per reading is what other load on the machine disturbs least: the figures to compare between runs.
    per_reading = [("ingestor", e2e.ingestor_cpu_s), ("postgres", e2e.stack_cpu_s.get("postgres", 0.0))]
    note = ""
    if raw is not None:
        note = f"raw staging path: postgres {raw.staging_postgres_cpu_s / raw.staging.rows * 1e6:.2f}"
    shares = " / ".join(f"{name} {seconds / load.readings * 1e6:.2f}" for name, seconds in per_reading)
    rows.append(("CPU µs per reading", shares, note))
    cores = os.cpu_count() or 1
    noise = e2e.others_cpu_s / max(cores * e2e.window_s, 1e-9)
    rows.append(("all cores busy", f"{e2e.machine_busy:.0%}",
                 f"other processes: {e2e.others_cpu_s:.1f} CPU s, {noise:.0%} of the machine"))  # fmt: skip
    raw_noise = raw.disturbance if raw is not None else 0.0
    if raw is not None:
        rows.append(("other processes during raw runs", f"{raw_noise:.0%}", "of the machine"))
    rows.append(
        ("false sequence gaps", f"{e2e.seq_gaps:,}", f"seq_gap counter (0 expected: nothing is missing); database: "
         f"{e2e.seq_missing_in_db:,} missing, {e2e.seq_behind:,} publishers' records short of their last seq")
    )  # fmt: skip
    if e2e.log_warnings:
        rows.append(("ingestor warnings", ", ".join(f"{k} x{v}" for k, v in e2e.log_warnings.items()), ""))
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [
        "",
        f"Ingest benchmark: {args.machines} machines x {args.tags} tags, {args.samples} samples/message "
        f"({args.tags * args.samples:,} readings/message), {args.seconds:g} s, {args.publishers} publishers",
        f"ingestor{'s' if args.ingestors > 1 else ''}: {args.ingestors} x `shopfloor ingest` with "
        f"{ingestor_config(args).describe()}",
        "",
        f"{'figure':<{width}}  {'value':>{value_width}}  target / note",
        f"{'-' * width}  {'-' * value_width}  {'-' * 40}",
    ]
    lines += [f"{name:<{width}}  {value:>{value_width}}  {note}" for name, value, note in rows]
    lines += ["", *(f"{name:<11} {value}" for name, value in machine.items())]
    if not raw_sql_is_the_ingestors():
        lines += ["", "NOTE: core/ingest.py no longer runs the staging statements this benchmark times as its raw path"]
    if noise > NOISE_WARNING or raw_noise > NOISE_WARNING:
        warning = (
            f"WARNING: other processes took {noise:.0%} of the machine during the end-to-end run and "
            f"{raw_noise:.0%} during the raw runs: the figures are low, run again on a quiet machine"
        )
        lines += ["", warning]
    if e2e.problems:
        lines += ["", "FAILED: " + "; ".join(e2e.problems)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to publish (default 60)")
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--samples", type=int, default=50, help="samples per message")
    parser.add_argument("--publishers", type=int, default=4, help="publisher connections")
    parser.add_argument("--inflight", type=int, default=100, help="un-acked publishes per publisher connection")
    parser.add_argument("--rate", type=float, default=0, help="open loop at this many readings/s (0: closed loop)")
    parser.add_argument(
        "--max-backlog", type=int, default=300_000, help="closed loop: readings handed to the broker, not committed"
    )
    parser.add_argument("--batch-readings", type=int, help="INGEST_BATCH_MAX_READINGS (default: the setting's)")
    parser.add_argument("--batch-min-readings", type=int, help="INGEST_BATCH_MIN_READINGS")
    parser.add_argument("--batch-max-bytes", type=int, help="INGEST_BATCH_MAX_BYTES")
    parser.add_argument("--batch-age-ms", type=int, help="INGEST_BATCH_MAX_AGE_MS")
    parser.add_argument("--max-inflight", type=int, help="INGEST_MAX_INFLIGHT")
    parser.add_argument("--writers", type=int, help="INGEST_WRITERS")
    parser.add_argument("--ingestors", type=int, default=1, help="ingestor processes in one shared group")
    parser.add_argument("--raw-rows", type=int, help="rows for the raw runs (default: as published, at least 1M)")
    parser.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for the last rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pg", action="append", default=[], metavar="NAME=VALUE", help="extra PostgreSQL setting (repeatable)"
    )
    parser.add_argument("--py-spy", metavar="FILE", help="also record the ingestor with py-spy (collapsed stacks)")
    return parser.parse_args(argv)


def ingestor_config(args: argparse.Namespace) -> IngestorConfig:
    """The ingestor settings the options ask for (None: the production default)."""
    return IngestorConfig(
        batch_min_readings=args.batch_min_readings,
        batch_max_readings=args.batch_readings,
        batch_max_bytes=args.batch_max_bytes,
        batch_max_age_ms=args.batch_age_ms,
        max_inflight=args.max_inflight,
        writers=args.writers,
    )


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 when rows were lost or duplicated, 2 when it could not measure."""
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the `finally` blocks stop the ingestors, the broker and the server.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="shopfloor-bench-"))
    try:
        with running_postgres() as pg, running_mosquitto(anonymous=True) as broker:
            if args.pg:
                # Same data folder and port, restarted with the extra settings on the command line.
                pg.stop()
                pg = dataclasses.replace(pg, options=" ".join([pg.options, *(f"-c {item}" for item in args.pg)]))
                pg.start()
            with psycopg.connect(pg.url(), autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            url = pg.url(DATABASE)
            upgrade(url)
            e2e = run_end_to_end(pg, broker, url, args, workdir)
            if e2e.problems:
                print(report(args, e2e, None, versions(url, broker)))
                return 1
            plan = LoadPlan(
                LoadSpec(machines=args.machines, tags=args.tags, samples_per_message=args.samples, duration_s=1,
                         site="bench", seed=args.seed),
                e2e.load.base_time or default_base_time(),
            )  # fmt: skip
            total = args.raw_rows or max(e2e.load.readings, 1_000_000)
            # The ingestor's batches adapt to the load: the raw path uses the size they had on average.
            batch_size = max(round(e2e.load.readings / max(e2e.batches, 1)), 1)
            raw = run_raw(url, pg, plan, total, batch_size)
            print(report(args, e2e, raw, versions(url, broker)))
    except (BenchFailure, aiomqtt.MqttError) as error:
        print(f"bench_ingest: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

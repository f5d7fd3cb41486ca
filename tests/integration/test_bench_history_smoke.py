"""bench/bench_history.py at a tiny size: its data generation, its options, and that both measured paths agree.

Timings are never asserted; what is checked is that the benchmark measures the right rows.
"""

from __future__ import annotations

import random
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import bench_history
from bench.bench_history import (
    SCENARIOS,
    TAG_PROFILES,
    ApiServer,
    Client,
    DataPlan,
    Generated,
    Window,
    ask_api,
    ask_direct,
    generate,
    parse_args,
    plan_for,
    windows,
)
from core.db import create_engine_from_settings
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres

END = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
# 3 machines x 4 tags x 500 samples, 5 minutes apart: 6,000 readings over 41.6 hours.
PLAN = DataPlan(machines=3, tags=4, samples=500, interval_s=300, end=END)


@pytest.fixture(scope="module")
def generated(postgres_server: PostgresServer) -> tuple[str, Generated]:
    """A migrated database holding the benchmark's data at the tiny size."""
    url = postgres_server.fresh_database("bench_history_smoke")
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        data = generate(conn, PLAN, seed=0.25)
    return url, data


@pytest.fixture(scope="module")
def api_client(generated: tuple[str, Generated], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """`shopfloor api` as the benchmark serves it (production settings), and a logged-in client."""
    url, _ = generated
    server = ApiServer(url, tmp_path_factory.mktemp("bench-history-api"))
    client = Client(server.port)
    try:
        password = secrets.token_urlsafe(18)
        server.create_user(password)
        server.wait_ready()
        client.login(server.username, password)
        yield client
    finally:
        client.close()
        server.stop()


@pytest.fixture
async def engine(generated: tuple[str, Generated]) -> AsyncIterator[AsyncEngine]:
    """An engine made like the API's (overrides the shared fixture: this module has its own database)."""
    url, _ = generated
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    yield engine
    await engine.dispose()


def test_generation_writes_every_series_completely(generated: tuple[str, Generated]) -> None:
    url, data = generated
    assert (data.readings, data.machines) == (6000, 3)
    assert data.table_mb > 0
    assert data.index_mb > 0
    with psycopg.connect(url) as conn:
        machines = conn.execute("SELECT code, site, name FROM machine ORDER BY code").fetchall()
        series = conn.execute(
            "SELECT m.code, r.tag, count(*), count(DISTINCT r.ts), min(r.ts), max(r.ts) "
            "FROM reading r JOIN machine m ON m.id = r.machine_id GROUP BY m.code, r.tag ORDER BY 1, 2"
        ).fetchall()
        moments = conn.execute("SELECT count(DISTINCT ts) FROM reading").fetchone()
        stats = conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'reading'").fetchone()
    assert machines == [
        ("im-001", "bench", "Injection press 1"),
        ("im-002", "bench", "Injection press 2"),
        ("im-003", "bench", "Injection press 3"),
    ]
    tags = sorted(name for name, *_ in TAG_PROFILES[:4])
    assert [(code, tag) for code, tag, *_ in series] == [(f"im-00{i}", tag) for i in (1, 2, 3) for tag in tags]
    start = END - timedelta(minutes=5 * 499)
    assert all(row[2:] == (500, 500, start, END) for row in series)
    assert moments == (500,)
    assert stats is not None
    assert stats[0] > 0  # ANALYZE ran


def test_generated_values_are_plausible_per_tag(generated: tuple[str, Generated]) -> None:
    url, _ = generated
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tag, min(value), max(value), stddev(value) FROM reading GROUP BY tag").fetchall()
    profiles = {name: (base, amplitude, noise) for name, base, amplitude, noise in TAG_PROFILES}
    for tag, low, high, spread in rows:
        base, amplitude, noise = profiles[tag]
        bound = amplitude + base * 0.02 + noise
        assert base - bound <= low < base < high <= base + bound, tag
        assert spread > 0, tag  # a series that varies, not a constant


def test_plan_rounds_readings_up_to_whole_series() -> None:
    plan = plan_for(10_000_000, 100, 10, 60, END.replace(microsecond=123))
    assert (plan.samples, plan.readings, plan.end) == (10_000, 10_000_000, END)
    assert plan.end - plan.start == timedelta(seconds=60 * 9_999)
    assert plan_for(1001, 10, 10, 60, END).samples == 11
    assert bench_history.tag_names(12)[-2:] == ["melt_temp_2", "mold_temp_2"]


def test_windows_are_random_and_inside_the_data() -> None:
    found = windows(PLAN, [7, 8, 9], timedelta(hours=24), 50, random.Random(1))
    assert len({window.start for window in found}) > 40
    assert {window.machine_id for window in found} == {7, 8, 9}
    assert all(PLAN.start <= w.start and w.end <= PLAN.end and w.end - w.start == timedelta(hours=24) for w in found)


def test_options_defaults_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args([])
    assert (args.readings, args.machines, args.tags, args.interval) == (10_000_000, 100, 10, 60)
    assert (args.requests, args.warmup, args.keep, args.reuse) == (200, 20, False, None)
    assert args.only == ["auto", "1m", "1h", "raw"]
    args = parse_args(["--readings", "5000", "--machines", "2", "--tags", "3", "--interval", "300", "--only", "1h"])
    assert (args.readings, args.machines, args.tags, args.interval, args.only) == (5000, 2, 3, 300, ["1h"])
    for wrong, message in [
        (["--tags", "21"], "--tags must be 1 to 20"),
        (["--only", "5m"], "--only: unknown scenarios ['5m']"),
        (["--requests", "0"], "must be positive"),
        (["--readings", "1000", "--machines", "10", "--tags", "10"], "less than the 1 day, 0:00:00 window"),
        (["--reuse", "/nonexistent"], "holds no cluster kept by --keep"),
    ]:
        with pytest.raises(SystemExit) as exited:
            parse_args(wrong)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.key for scenario in SCENARIOS])
async def test_api_and_direct_paths_return_the_same_rows(
    scenario: bench_history.Scenario, api_client: Client, engine: AsyncEngine, generated: tuple[str, Generated]
) -> None:
    url, _ = generated
    with psycopg.connect(url) as conn:
        machine_id = bench_history.machine_ids(conn)[1]
    start = END - timedelta(hours=30, minutes=7)
    window = Window(machine_id, start, start + scenario.window)
    answer = ask_api(api_client, scenario, PLAN.tag_names, window)
    async with engine.connect() as conn:
        own = await ask_direct(conn, scenario, PLAN.tag_names, window)
    assert answer.points == own.points
    expected_bucket = {"auto": "5m", "1m": "1m", "1h": "1h", "raw": "raw"}[scenario.key]
    assert answer.bucket == expected_bucket
    # Samples 5 minutes apart (on the 5-minute grid) in the range answered: 05:50-05:55+1d, 05:53-05:53+1d,
    # 05:00-06:00+1d (25 hourly buckets), 05:53-11:53.
    per_tag = {"auto": 289, "1m": 288, "1h": 25, "raw": 72}[scenario.key]
    assert {tag: len(points) for tag, points in answer.points.items()} == dict.fromkeys(PLAN.tag_names, per_tag)


def test_whole_run_at_a_tiny_size(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder of our own for the benchmark's work folder, which the `postgres` user must be able to reach
    # (pytest's tmp_path is not, when the tests run as root).
    parent = Path(tempfile.mkdtemp(prefix="bench-history-smoke-", dir=tempfile.gettempdir()))
    parent.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        tiny = ["--readings", "3000", "--machines", "2", "--tags", "3", "--interval", "300"]
        code = bench_history.main([*tiny, "--requests", "3", "--warmup", "1"])
        left = list(parent.iterdir())
    finally:
        signal.signal(signal.SIGTERM, handler)
        shutil.rmtree(parent, ignore_errors=True)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "History benchmark: 3,000 readings (2 machines x 3 tags x 500 samples every 300 s" in out
    for key, answered in [("auto", "5m"), ("1m", "1m"), ("1h", "1h"), ("raw", "raw")]:
        line = next(line for line in out.splitlines() if line.startswith(f"{key}: "))
        assert re.search(rf"\s{answered}\s+[0-9,]+\s", line), line  # the bucket answered, then points
    assert "work folder kept" not in err
    assert left == []  # the cluster and the API log are gone

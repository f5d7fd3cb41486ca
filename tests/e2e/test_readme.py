"""The README's commands: every one it shows is run by a test here or elsewhere, or by `.ci/run`.

`test_every_readme_command_is_run_somewhere` reads the README and fails on a command nobody runs, on a test named
below that does not exist, on a `shopfloor` option the parser does not know and on a `make` target the Makefile does
not have. The other tests run the make targets no other test runs, as a newcomer would type them (benchmarks at a
tiny size: they prove the scripts still work, their figures are not looked at).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.main import build_parser
from tests.support.postgres import free_port

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "make"
README = REPO / "README.md"
CI = ".ci/run"

# Each command the README shows -> where it runs: a test ("path::name") or `.ci/run`.
# Docker Compose is the exception, and the README says so: there is no Docker engine here, so the tests render the
# compose file with the real compose binary (`config`) and check the Dockerfile statically; nothing is started.
RUN_BY: dict[str, tuple[str, ...]] = {
    "make demo": ("tests/e2e/test_demo.py::test_make_demo_shows_readings_from_every_source_and_reuses_its_data",),
    "make test": (CI,),
    "make lint": (CI,),
    "make help": ("tests/e2e/test_readme.py::test_make_help_lists_the_targets",),
    "make system-deps": (CI,),
    "make timescale-deps": (CI,),
    "make install": (CI,),
    "make demo-deps": ("tests/e2e/test_demo.py::test_make_demo_shows_readings_from_every_source_and_reuses_its_data",),
    "make ui": (CI, "tests/e2e/test_readme.py::test_make_run_api_migrates_builds_the_view_and_serves"),
    "make test-unit": ("tests/e2e/test_readme.py::test_make_test_unit_runs_the_unit_tier",),
    # The test runs the target's own export command (read from the Makefile) and compares the file.
    "make requirements": ("tests/unit/test_requirements.py::test_requirements_txt_matches_the_lock_file",),
    "make migrate": ("tests/e2e/test_readme.py::test_make_run_api_migrates_builds_the_view_and_serves",),
    "make run-api": ("tests/e2e/test_readme.py::test_make_run_api_migrates_builds_the_view_and_serves",),
    "make bench": (
        "tests/e2e/test_readme.py::test_make_bench_ingest_runs",
        "tests/e2e/test_readme.py::test_make_bench_gateway_runs",
        "tests/e2e/test_readme.py::test_make_bench_history_runs",
        "tests/e2e/test_readme.py::test_make_bench_api_runs",
    ),
    "make bench-ingest": ("tests/e2e/test_readme.py::test_make_bench_ingest_runs",),
    "make bench-gateway": ("tests/e2e/test_readme.py::test_make_bench_gateway_runs",),
    "make bench-history": ("tests/e2e/test_readme.py::test_make_bench_history_runs",),
    "make bench-api": ("tests/e2e/test_readme.py::test_make_bench_api_runs",),
    "shopfloor up": ("tests/e2e/test_demo.py::test_make_demo_shows_readings_from_every_source_and_reuses_its_data",),
    "shopfloor migrate": ("tests/e2e/test_cli.py::test_migrate_create_admin_serve_and_log_in_through_swagger",),
    "shopfloor user": (
        "tests/e2e/test_cli.py::test_migrate_create_admin_serve_and_log_in_through_swagger",
        "tests/e2e/test_cli.py::test_user_create_generates_and_prints_a_password_without_a_terminal",
    ),
    "shopfloor seed": ("tests/e2e/test_cli.py::test_seed_creates_demo_users_once",),
    "shopfloor api": ("tests/e2e/test_cli.py::test_migrate_create_admin_serve_and_log_in_through_swagger",),
    "shopfloor ingest": (
        "tests/integration/test_stream_pipeline.py::test_a_published_reading_reaches_the_stream_within_one_second",
    ),
    "shopfloor gateway": ("tests/integration/test_gateway.py",),
    "shopfloor simulate": ("tests/integration/test_gateway.py", "tests/integration/test_modbus_station.py"),
    "shopfloor import-sqlite": ("tests/integration/test_import_sqlite.py",),
    "shopfloor import-legacy": (
        "tests/integration/test_import_legacy.py::test_the_command_prints_a_json_report_and_refuses_a_second_run",
    ),
    "export": ("tests/e2e/test_cli.py::test_production_without_secret_key_exits_with_one_line",),
    "cp .env.example": ("tests/unit/test_settings.py",),
    "docker compose": ("tests/unit/test_deploy_files.py::test_docker_compose_renders_the_file_with_every_profile",),
}
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(make|uv run shopfloor|shopfloor|docker compose|cp|export) [A-Za-z.-]")


def _code_lines(text: str) -> list[str]:
    """Commands in fenced bash blocks, continuation lines joined and comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]
    return lines


def readme_commands() -> list[str]:
    """Every command the README shows: bash blocks and the code spans that start like a command."""
    text = README.read_text(encoding="utf-8")
    spans = [span.replace("\\|", "|") for span in re.findall(r"`([^`\n]+)`", text)]
    return [command for command in _code_lines(text) + spans if COMMAND_START.match(command)]


def key_of(command: str) -> str:
    """'MQTT_USERNAME=x uv run shopfloor user create --username U' -> 'shopfloor user'."""
    words = re.sub(r"^(?:[A-Z_]+=\S*\s+)*", "", command).replace("uv run ", "", 1).split()
    if words[0] in {"export", "cp"}:
        return "export" if words[0] == "export" else f"cp {words[1]}"
    return " ".join(words[:2])


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _exists(reference: str) -> bool:
    if reference == CI:
        return "make test" in (REPO / CI).read_text(encoding="utf-8")
    path, _, name = reference.partition("::")
    source = (REPO / path).read_text(encoding="utf-8") if (REPO / path).is_file() else ""
    return bool(source) and (not name or re.search(rf"^(?:async )?def {re.escape(name)}\(", source, re.M) is not None)


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(encoding="utf-8"), flags=re.M))


def test_every_readme_command_is_run_somewhere() -> None:
    commands = readme_commands()
    assert len(commands) >= 20, commands  # the parser above still finds the README's commands
    unmapped = sorted({key_of(command) for command in commands} - RUN_BY.keys())
    assert not unmapped, f"README commands no test runs: {unmapped} (add them to RUN_BY with the test that does)"
    missing = [ref for refs in RUN_BY.values() for ref in refs if not _exists(ref)]
    assert not missing, f"RUN_BY names tests that do not exist: {missing}"


def test_readme_shopfloor_commands_and_make_targets_exist() -> None:
    parser = build_parser()
    subcommands = _subparsers(parser)
    targets = makefile_targets()
    for command in readme_commands():
        words = re.sub(r"^(?:[A-Z_]+=\S*\s+)*", "", command).replace("uv run ", "", 1).split()
        if words[0] == "make":
            assert words[1] in targets, f"{command!r}: no target {words[1]!r} in the Makefile"
        elif words[0] == "shopfloor":
            sub = subcommands.get(words[1])
            assert sub is not None, f"{command!r}: no subcommand {words[1]!r}"
            nested = _subparsers(sub)
            # `shopfloor gateway --config …` runs the gateway; its actions (`trust`, `list-certs`) are optional.
            if nested and not words[2].startswith("-"):
                sub = nested.get(words[2])
                assert sub is not None, f"{command!r}: no subcommand {words[2]!r}"
            known = {option for action in sub._actions for option in action.option_strings}
            unknown = [flag for flag in re.findall(r"(--[a-z][a-z-]*)", command) if flag not in known]
            assert not unknown, f"{command!r}: unknown options {unknown}"


def test_key_of_reads_the_command_words() -> None:
    assert key_of("MQTT_USERNAME=ingestor MQTT_PASSWORD=… uv run shopfloor ingest") == "shopfloor ingest"
    assert key_of("uv run shopfloor user create --username admin --role admin") == "shopfloor user"
    assert key_of('make demo DEMO_ARGS="--port-offset 100"') == "make demo"
    assert key_of("docker compose --profile simulators up -d") == "docker compose"
    assert key_of("cp .env.example .env") == "cp .env.example"


def test_make_help_lists_the_targets() -> None:
    output = run_make("help", timeout_s=60)
    listed = set(re.findall(r"^\s+make (\S+)", output, flags=re.M))
    assert {"demo", "test", "lint", "bench", "ui"} <= listed, output


# --- the make targets, run -----------------------------------------------------------------------------------------


def make_env(*, measured: bool = True, **extra: str) -> dict[str, str]:
    """The caller's environment without make's own variables or the project's settings, plus `extra`.

    `measured=False` leaves out the coverage measurement `make test` hands to every process (COVERAGE_PROCESS_*):
    for the targets these tests only prove to run (the unit tier again, the benchmarks at a tiny size), whose code
    the tests of its behaviour measure; traced, a benchmark's processes ran two to three times slower."""
    prefixes: tuple[str, ...] = ("SHOPFLOOR_", "DATABASE_", "MQTT_", "INGEST_", "API_", "MAKE", "MFLAGS", "PYTEST_")
    prefixes = (*prefixes, "BENCH_", *(() if measured else ("COVERAGE_PROCESS_",)))
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update(SHOPFLOOR_ENV="test", ARGON2_TIME_COST="1", ARGON2_MEMORY_KIB="1024", **extra)
    return env


def run_make(*args: str, timeout_s: float, measured: bool = True, **env: str) -> str:
    """Run `make ARGS` in the repository; its whole output, or a failure showing the end of it."""
    result = subprocess.run(  # noqa: S603 -- our own make targets
        [MAKE, "--no-print-directory", *args],
        cwd=REPO,
        env=make_env(measured=measured, **env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"make {' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
    return output


@pytest.mark.sqlite
def test_make_run_api_migrates_builds_the_view_and_serves(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 -- our own make target
        [MAKE, "--no-print-directory", "run-api"],
        cwd=REPO,
        env=make_env(DATABASE_URL=f"sqlite:///{tmp_path / 'readme.db'}", API_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert health is not None, "make run-api did not serve /ready in time"
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ready"
        view = httpx.get(f"http://127.0.0.1:{port}/ui", timeout=5)
        assert view.status_code == 200, view.text
        assert "<title>" in view.text
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert (tmp_path / "readme.db").is_file(), output[-3000:]


def test_make_test_unit_runs_the_unit_tier() -> None:
    output = run_make(
        "test-unit",
        "PYTEST_ARGS=-q -p no:cacheprovider -k test_env_example_documents_every_setting",
        timeout_s=600,
        measured=False,
    )
    assert re.search(r"\b1 passed\b", output), output[-2000:]


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_make_bench_ingest_runs() -> None:
    output = run_make(
        "bench-ingest",
        "BENCH_ARGS=--seconds 3 --machines 2 --tags 5 --samples 10 --raw-rows 2000",
        timeout_s=600,
        measured=False,
    )
    assert "readings/s" in output, output[-3000:]


@pytest.mark.mosquitto
@pytest.mark.modbus
@pytest.mark.opcua
def test_make_bench_gateway_runs() -> None:
    output = run_make(
        "bench-gateway",
        "BENCH_ARGS=--quick --seconds 3 --warmup 1 --only a-poll --raised-rate 0",
        timeout_s=600,
        measured=False,
    )
    assert "% of one core" in output or "CPU" in output, output[-3000:]


@pytest.mark.postgres
def test_make_bench_history_runs() -> None:
    output = run_make(
        "bench-history",
        "BENCH_ARGS=--readings 3000 --machines 1 --tags 2 --interval 60 --requests 5 --warmup 1",
        timeout_s=600,
        measured=False,
    )
    assert "p95" in output, output[-3000:]


@pytest.mark.postgres
def test_make_bench_api_runs() -> None:
    # --quick: 6 workers, 2 streams, 2 API workers; most of its time is starting the processes.
    output = run_make("bench-api", "BENCH_ARGS=--quick", timeout_s=600, measured=False)
    assert "list ÷ bare" in output, output[-3000:]
    assert "targets: errors 0 " in output, output[-3000:]


if __name__ == "__main__":  # pragma: no cover - a quick look at what the README test sees
    for line in readme_commands():
        print(f"{key_of(line):<28} {line}", file=sys.stdout)

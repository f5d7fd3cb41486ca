"""The `shopfloor` command as a user runs it: separate processes, a real HTTP server, real databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import free_port

SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SHOPFLOOR_", "DATABASE_"))}
    env.update(
        SHOPFLOOR_ENV="test",
        DATABASE_URL=database_url,
        SECRET_KEY="e2e-" + "k" * 40,
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_KIB="1024",
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def shopfloor(*args: str, env: dict[str, str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own console script
        [SHOPFLOOR, *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_production_without_secret_key_exits_with_one_line(workdir: Path) -> None:
    env = cli_env(f"sqlite:///{workdir / 'x.db'}", SHOPFLOOR_ENV="production")
    del env["SECRET_KEY"]
    result = shopfloor("api", env=env, cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SECRET_KEY" in lines[0]
    assert "Traceback" not in result.stderr


def test_production_with_a_placeholder_secret_key_exits(workdir: Path) -> None:
    env = cli_env(f"sqlite:///{workdir / 'x.db'}", SHOPFLOOR_ENV="production", SECRET_KEY="change-me")
    result = shopfloor("api", env=env, cwd=workdir)
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr


def test_a_malformed_setting_is_named(workdir: Path) -> None:
    result = shopfloor("migrate", env=cli_env(f"sqlite:///{workdir / 'x.db'}", DB_POOL_SIZE="many"), cwd=workdir)
    assert result.returncode == 2
    assert "DB_POOL_SIZE" in result.stderr


@pytest.fixture
def served(empty_database_url: str, workdir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Migrate, create the first admin, and serve the API as its own process."""
    env = cli_env(empty_database_url)
    migrate = shopfloor("migrate", env=env, cwd=workdir)
    assert migrate.returncode == 0, migrate.stderr
    created = shopfloor(
        "user", "create", "--username", "admin", "--role", "admin", "--password-stdin",
        env=env, cwd=workdir, stdin="first-admin-pass\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 -- our own console script
        [SHOPFLOOR, "api", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the API did not answer within 30 s")
        yield base, env
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal so supervisors see why it stopped.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


def test_migrate_create_admin_serve_and_log_in_through_swagger(served: tuple[str, dict[str, str]]) -> None:
    base, _ = served
    assert httpx.get(f"{base}/ready").status_code == 200
    docs = httpx.get(f"{base}/api-docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    token_url = httpx.get(f"{base}/openapi.json").json()["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    # What Swagger's Authorize button sends: the OAuth2 password form to the scheme's tokenUrl.
    login = httpx.post(
        base + token_url["flows"]["password"]["tokenUrl"],
        data={"grant_type": "password", "username": "admin", "password": "first-admin-pass"},
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "admin"
    assert me.headers["X-Request-ID"]


def test_user_create_generates_and_prints_a_password_without_a_terminal(
    served: tuple[str, dict[str, str]], workdir: Path
) -> None:
    base, env = served
    result = shopfloor("user", "create", "--username", "Planner2", "--role", "planner", env=env, cwd=workdir, stdin="")
    assert result.returncode == 0, result.stderr
    password = result.stdout.split("generated password (shown once): ")[1].strip()
    login = httpx.post(f"{base}/auth/login", json={"username": "planner2", "password": password})
    assert login.status_code == 200
    assert login.json()["role"] == "planner"


def test_user_create_refuses_a_taken_username(served: tuple[str, dict[str, str]], workdir: Path) -> None:
    _, env = served
    result = shopfloor(
        "user", "create", "--username", "admin", "--role", "worker", "--password-stdin",
        env=env, cwd=workdir, stdin="another-pass\n",
    )  # fmt: skip
    assert result.returncode == 1
    assert "This username is not available" in result.stderr


def test_seed_creates_demo_users_once(served: tuple[str, dict[str, str]], workdir: Path) -> None:
    base, env = served
    first = shopfloor("seed", env=env, cwd=workdir)
    assert first.returncode == 0, first.stderr
    credentials = {
        line.split("username=")[1].split()[0]: line.split("password=")[1].strip()
        for line in first.stdout.splitlines()
        if line.startswith("created")
    }
    assert set(credentials) == {"planner", "worker"}  # "admin" exists already
    for username, password in credentials.items():
        assert httpx.post(f"{base}/auth/login", json={"username": username, "password": password}).status_code == 200
    second = shopfloor("seed", env=env, cwd=workdir)
    assert "nothing created" in second.stdout
    # The calendar and yesterday's morning shift of press-1: stops to explain in the OEE by shift from the start.
    assert "demo calendar" in first.stdout
    assert "demo calendar" not in second.stdout
    token = httpx.post(f"{base}/auth/login", json={"username": "planner", "password": credentials["planner"]})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert len(httpx.get(f"{base}/calendar", headers=headers).json()["patterns"]) == 1
    [press] = [row for row in httpx.get(f"{base}/machines", headers=headers).json() if row["code"] == "press-1"]
    # The setpoints the demo gateway may write are writable in the registry too, job data fields included.
    writable = httpx.get(f"{base}/machines/{press['id']}/writable-tags", headers=headers).json()
    assert [(row["tag"], row["job_field"]) for row in writable] == [
        ("cycle_time_setpoint_s", None),
        ("job_id", "work_order_id"),
        ("target_qty", "target_qty"),
    ]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    window = {"from": f"{yesterday}T06:00:00", "to": f"{yesterday}T14:00:00"}
    oee = httpx.get(f"{base}/oee", params={"machine_id": press["id"], "group_by": "shift", **window}, headers=headers)
    assert oee.status_code == 200, oee.text
    [morning] = oee.json()["rows"]
    assert morning["losses_by_reason_min"] == {"setup": 25.0, "breakdown": 15.0, "unclassified": 8.0}
    assert morning["minor_stops"] == 1
    assert morning["total_count"] > 1500  # 270 an hour while running
    assert morning["quality"] == pytest.approx(0.97, abs=0.01)
    assert morning["oee"] is not None


def test_seed_refuses_production_without_force(workdir: Path) -> None:
    env = cli_env(f"sqlite:///{workdir / 'x.db'}", SHOPFLOOR_ENV="production")
    assert shopfloor("migrate", env=env, cwd=workdir).returncode == 0
    result = shopfloor("seed", env=env, cwd=workdir)
    assert result.returncode == 1
    assert "production" in result.stderr

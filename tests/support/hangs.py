"""Where a test hangs or a worker dies, its stacks: written to a file per worker, printed by the controller at the
end of the run.

With pytest-xdist, pytest-timeout's dump and a crash's fault handler write to a worker's stderr, which nobody
sees: the run only says the worker "crashed". Here, `HANG_REPORT_BEFORE_S` before a test's timeout, every
thread's Python stack (faulthandler, which needs no GIL, so a spinning thread is caught too) and every asyncio
task's stack go to the worker's file, as does a fatal signal's traceback; the controller's terminal summary prints
the files that are not empty.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

HANG_DIR_ENV = "SHOPFLOOR_TEST_HANG_DIR"
HANG_REPORT_BEFORE_S = 20.0

_report: IO[str] | None = None


@pytest.hookimpl(trylast=True)  # after pytest's own faulthandler plugin, so a crash is written here
def pytest_configure(config: pytest.Config) -> None:
    global _report
    if not hasattr(config, "workerinput"):
        # The controller: workers are started after this and inherit the environment.
        os.environ.setdefault(HANG_DIR_ENV, tempfile.mkdtemp(prefix="shopfloor-hangs-"))
    folder = os.environ[HANG_DIR_ENV]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _report = Path(folder, f"{worker}-{os.getpid()}.txt").open("a", encoding="utf-8")  # noqa: SIM115  # open for the process's life
    faulthandler.enable(file=_report, all_threads=True)


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    global _report
    if _report is not None:
        faulthandler.disable()  # pytest's own plugin, after this, puts its handler back as it was
        _report.close()
        _report = None


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value) if value else 0.0


def _dump_tasks(report: IO[str]) -> None:
    # The tasks of every loop, from asyncio's private registries (a diagnostic, read from another thread, best
    # effort): `_all_tasks` up to Python 3.11, `_scheduled_tasks` and `_eager_tasks` from 3.12.
    registries: list[Any] = [
        getattr(asyncio.tasks, name, ()) for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks")
    ]
    try:
        pending = [task for tasks in registries for task in list(tasks) if not task.done()]
    except RuntimeError:  # a set changed while it was copied
        report.write("(the tasks changed while they were listed)\n")
        pending = []
    for task in pending:
        report.write(f"\n--- {task!r}\n")
        task.print_stack(file=report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    report = _report
    timeout = _timeout_of(item)
    if report is None or timeout <= HANG_REPORT_BEFORE_S:
        yield
        return
    delay = timeout - HANG_REPORT_BEFORE_S

    def dump_tasks() -> None:
        report.write(f"\n=== {item.nodeid}: still running after {delay:.0f} s; asyncio tasks:\n")
        _dump_tasks(report)
        report.write("\n=== threads:\n")
        report.flush()

    tasks_timer = threading.Timer(max(delay - 1.0, 0.0), dump_tasks)
    tasks_timer.daemon = True
    tasks_timer.start()
    faulthandler.dump_traceback_later(delay, file=report)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        tasks_timer.cancel()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    folder = os.environ.get(HANG_DIR_ENV)
    if hasattr(config, "workerinput") or not folder or not Path(folder).is_dir():
        return
    if _report is not None:
        _report.flush()
    reports = [path for path in sorted(Path(folder).glob("*.txt")) if path.stat().st_size]
    if reports:
        terminalreporter.section("hung or crashed workers: their stacks")
        for path in reports:
            terminalreporter.write_line(f"--- {path.name}")
            terminalreporter.write_line(path.read_text(encoding="utf-8", errors="replace"))
    shutil.rmtree(folder, ignore_errors=True)

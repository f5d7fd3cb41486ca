"""The supervisor of `shopfloor up`, with tiny fake child commands that say "ready" through their ready file."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli.supervisor import ChildSpec, Supervisor

# Every fake child gets its ready file as its last argument; `ready()` creates it and prints READY.
PRELUDE = """
import pathlib, sys
def ready():
    pathlib.Path(sys.argv[-1]).write_text("{}")
    print("READY", flush=True)
"""
# A fake child: says READY, appends "<name> start" / "<name> stop" to a journal, stops on SIGTERM or SIGINT.
SERVE = """
import signal, sys, time
name, journal = sys.argv[1], sys.argv[2]
def stop(*_):
    open(journal, "a").write(name + " stop\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(journal, "a").write(name + " start\\n")
print("READY " + name, flush=True)
pathlib.Path(sys.argv[-1]).write_text("{}")
while True:
    time.sleep(0.05)
"""


def serving(name: str, journal: Path) -> ChildSpec:
    return script(name, SERVE, name, str(journal), ready_file=journal.with_name(f"{name}.ready"))


def script(
    name: str,
    code: str,
    *args: str,
    ready_file: Path | None = None,
    ready_port: int | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_timeout_s: float = 15.0,
) -> ChildSpec:
    argv = [sys.executable, "-c", PRELUDE + code, *args]
    if ready_file is not None:
        argv.append(str(ready_file))
    return ChildSpec(
        name, argv, ready_file=ready_file, ready_port=ready_port, stop_signal=stop_signal, stop_timeout_s=stop_timeout_s
    )


async def run_until(supervisor: Supervisor, condition: asyncio.Event | None = None, *, after_s: float = 0) -> int:
    """Run the supervisor; set stop once everything started (and `condition`, if given) plus `after_s`."""
    stop = asyncio.Event()
    runner = asyncio.create_task(supervisor.run(stop), name="test:supervisor")
    waits = [asyncio.create_task(supervisor.started.wait())]
    if condition is not None:
        waits.append(asyncio.create_task(condition.wait()))
    done, _ = await asyncio.wait([runner, *waits], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if runner not in done:
        await asyncio.wait_for(asyncio.gather(*waits), timeout=30)
        await asyncio.sleep(after_s)
        stop.set()
    for task in waits:
        task.cancel()
    return await asyncio.wait_for(runner, timeout=30)


async def test_children_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", io.StringIO()
    supervisor = Supervisor([serving(name, journal) for name in ("broker", "ingestor", "api")], out=out)
    assert await run_until(supervisor) == 0
    assert journal.read_text().split("\n")[:-1] == [
        "broker start",
        "ingestor start",
        "api start",
        "api stop",
        "ingestor stop",
        "broker stop",
    ]
    text = out.getvalue()
    assert "api      | READY api" in text  # children's lines, prefixed with their name
    assert "up       | stopping: api, ingestor, broker" in text
    for name in ("broker", "ingestor", "api"):
        assert f"up       | {name} stopped\n" in text


async def test_quiet_hides_the_children_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_until(Supervisor([serving("one", tmp_path / "j")], out=out, quiet=True)) == 0
    assert "READY one" not in out.getvalue()
    assert "one ready" in out.getvalue()


async def test_each_child_is_stopped_with_its_own_signal(tmp_path: Path) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntry:\n    ready()\n"
    code += "    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('got SIGINT', flush=True)\n"
    out = io.StringIO()
    spec = script("amqtt", code, ready_file=tmp_path / "ready", stop_signal=signal.SIGINT, stop_timeout_s=5)
    assert await run_until(Supervisor([spec], out=out)) == 0
    assert "got SIGINT" in out.getvalue()
    assert "amqtt stopped\n" in out.getvalue()


async def test_a_child_that_ignores_its_stop_signal_is_killed(tmp_path: Path) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nready()\n"
    code += "time.sleep(60)\n"
    out = io.StringIO()
    spec = script("stubborn", code, ready_file=tmp_path / "ready", stop_timeout_s=0.5)
    assert await run_until(Supervisor([spec], out=out)) == 0
    assert "stubborn did not stop within 0.5 s: killing it" in out.getvalue()
    assert f"stubborn stopped with status {-signal.SIGKILL}" in out.getvalue()


async def test_a_child_that_dies_is_restarted_with_backoff(tmp_path: Path) -> None:
    # Dies the first time it runs (no marker yet), serves from then on.
    marker, journal = tmp_path / "marker", tmp_path / "journal"
    code = (
        "import pathlib, sys, time\nmarker = pathlib.Path(sys.argv[1])\nready()\n"
        "if not marker.exists():\n    marker.touch()\n    time.sleep(0.3)\n    sys.exit(3)\n"
        "open(sys.argv[2], 'a').write('second life\\n')\nwhile True:\n    time.sleep(0.05)\n"
    )
    out = io.StringIO()
    supervisor = Supervisor(
        [script("flaky", code, str(marker), str(journal), ready_file=tmp_path / "ready")], out=out, backoff_base_s=0.05
    )
    restarted = asyncio.Event()

    async def watch() -> None:
        while not journal.exists():  # noqa: ASYNC110 -- the child writes the file; there is nothing to await
            await asyncio.sleep(0.05)
        restarted.set()

    watcher = asyncio.create_task(watch())
    assert await run_until(supervisor, restarted, after_s=0.2) == 0
    watcher.cancel()
    text = out.getvalue()
    assert "flaky exited with status 3; restart 1 of 3 in 0.05 s" in text
    assert text.count("flaky ready") == 2
    assert "flaky stopped\n" in text


async def test_a_child_that_keeps_dying_stops_the_whole_stack(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", io.StringIO()
    dies = script("ingestor", "import time\nready()\ntime.sleep(0.2)\nraise SystemExit(2)\n",
                  ready_file=tmp_path / "ready")  # fmt: skip
    supervisor = Supervisor(
        [serving("broker", journal), dies], out=out, quiet=True, max_restarts=2, backoff_base_s=0.01
    )
    stop = asyncio.Event()
    assert await asyncio.wait_for(supervisor.run(stop), timeout=30) == 1
    text = out.getvalue()
    assert "ingestor exited with status 2; restart 1 of 2" in text
    assert "ingestor exited with status 2; restart 2 of 2" in text
    assert "ingestor exited with status 2 and has died 3 times within 60 s: stopping the stack" in text
    assert journal.read_text() == "broker start\nbroker stop\n"  # the others are stopped too
    assert "ingestor | READY" in text  # quiet mode shows a dead child's last lines, and only those
    assert "READY broker" not in text


async def test_a_child_that_cannot_start_stops_those_already_started(tmp_path: Path) -> None:
    journal, out = tmp_path / "journal", io.StringIO()
    broken = script(
        "gateway", "import sys\nprint('bad config', flush=True)\nsys.exit(2)\n", ready_file=tmp_path / "ready"
    )
    supervisor = Supervisor([serving("broker", journal), broken, serving("api", journal)], out=out)
    assert await asyncio.wait_for(supervisor.run(asyncio.Event()), timeout=30) == 1
    assert "gateway exited with status 2 while starting" in out.getvalue()
    assert journal.read_text() == "broker start\nbroker stop\n"  # api never started


async def test_a_child_not_ready_in_time_fails_the_start(tmp_path: Path) -> None:
    out = io.StringIO()
    silent = script("api", "import time\ntime.sleep(60)\n", ready_port=1)  # nothing will listen on port 1
    supervisor = Supervisor([silent], out=out, ready_timeout_s=0.5)
    assert await asyncio.wait_for(supervisor.run(asyncio.Event()), timeout=30) == 1
    assert "api was not ready within 0.5 s" in out.getvalue()
    assert "api stopped" in out.getvalue()


async def test_a_missing_program_is_reported(tmp_path: Path) -> None:
    out = io.StringIO()
    spec = ChildSpec("broker", [str(tmp_path / "no-such-broker")], ready_port=1)
    assert await asyncio.wait_for(Supervisor([spec], out=out).run(asyncio.Event()), timeout=30) == 1
    assert "cannot start broker" in out.getvalue()


def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    # The supervisor in a process of its own, with one fake child; then SIGKILL, which it cannot handle.
    ready = tmp_path / "sleeper.ready"
    argv = [sys.executable, "-c", PRELUDE + "import time\nready()\ntime.sleep(120)\n", str(ready)]
    program = (
        "import asyncio, pathlib\nfrom cli.supervisor import ChildSpec, Supervisor, supervise\n"
        f"spec = ChildSpec('sleeper', {argv!r}, ready_file=pathlib.Path({str(ready)!r}))\n"
        "asyncio.run(supervise(Supervisor([spec])))\n"
    )
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(  # noqa: S603 -- the test's own interpreter and program
        [sys.executable, "-c", program], cwd=root, stdout=subprocess.PIPE, text=True
    ) as supervisor:
        assert supervisor.stdout is not None
        line = ""
        deadline = time.monotonic() + 30
        while "sleeper ready" not in line and time.monotonic() < deadline:
            line = supervisor.stdout.readline()
        match = re.search(r"sleeper ready \(pid (\d+)\)", line)
        assert match, line
        child = int(match[1])
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphaned = _alive(child)
        if orphaned:
            os.kill(child, signal.SIGKILL)
        assert not orphaned


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (gone) could reap it

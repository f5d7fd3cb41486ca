"""The supervisor of `shopfloor up`: the whole stack on one machine as child processes.

It never imports the processes it runs. Each child is a command line (`python -m cli ingest`, `mosquitto -c …`)
started in its own process group, so Ctrl-C reaches the supervisor alone and the children are stopped by it, in
reverse order of start, each with its own signal and timeout (then SIGKILL). A child is ready when its readiness
file appears (our processes, `--ready-file`) or its port accepts connections (a third-party broker). A child that
dies is reported and restarted with exponential backoff; one that dies more than `max_restarts` times within
`restart_window_s` stops the whole stack with a message saying so. On Linux a child also gets SIGTERM if the
supervisor itself dies (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from core.lifecycle import read_ready_file, stop_on_signals

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """One child process: its command, how to tell it is ready, and how to stop it."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    # Ready when this file exists (the child was started with `--ready-file` on it) and, if set, this port
    # accepts connections (a third-party server that writes no readiness file).
    ready_file: Path | None = None
    ready_port: int | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout_s: float = 15.0


@dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=30))
    deaths: deque[float] = field(default_factory=deque)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux only).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts children in order (each ready before the next), restarts the ones that die, stops them in reverse."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        out: TextIO = sys.stdout,
        quiet: bool = False,
        ready_timeout_s: float = 60.0,
        max_restarts: int = 3,
        restart_window_s: float = 60.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 15.0,
    ):
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.children = [_Child(spec) for spec in specs]
        self.out = out
        self.quiet = quiet
        self.ready_timeout_s = ready_timeout_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.width = max(len(name) for name in [*names, "up"])
        self.started = asyncio.Event()

    def say(self, message: str, *, name: str = "up") -> None:
        """One prefixed line on the output."""
        self.out.write(f"{name:<{self.width}} | {message}\n")
        self.out.flush()

    async def run(self, stop: asyncio.Event) -> int:
        """Start everything, keep it running until `stop` is set, then stop it all; 0 after a clean stop, 1 when
        a child could not start or kept dying."""
        code = 0
        try:
            for child in self.children:
                if stop.is_set():
                    break
                if not await self._start(child, stop):
                    code = 1
                    break
            else:
                self.started.set()
                code = await self._watch(stop)
        finally:
            await self._stop_all()
        return code

    # ---- starting ----------------------------------------------------------------------------------------------

    async def _spawn(self, child: _Child) -> None:
        spec = child.spec
        if spec.ready_file is not None:
            spec.ready_file.unlink(missing_ok=True)  # left by a run that was killed: it says nothing about this one
        child.process = await asyncio.create_subprocess_exec(
            *spec.argv,
            env=dict(spec.env) if spec.env is not None else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches us, and we stop it in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            limit=1024 * 1024,
        )
        child.reader = asyncio.create_task(self._read(child, child.process), name=f"up:read:{spec.name}")

    async def _start(self, child: _Child, stop: asyncio.Event) -> bool:
        """Spawn and wait until ready; False (reported) when it exits or stays unready past the timeout."""
        spec = child.spec
        try:
            await self._spawn(child)
        except OSError as error:
            self.say(f"cannot start {spec.name} ({spec.argv[0]}): {error.strerror or error}")
            return False
        assert child.process is not None  # noqa: S101 -- set by _spawn
        process = child.process
        deadline = time.monotonic() + self.ready_timeout_s
        while not await self._is_ready(child):
            if process.returncode is not None:
                await self._drain_reader(child)
                self.say(f"{spec.name} exited with status {process.returncode} while starting")
                self._show_tail(child)
                return False
            if stop.is_set():
                return True
            if time.monotonic() > deadline:
                self.say(f"{spec.name} was not ready within {self.ready_timeout_s:g} s")
                self._show_tail(child)
                return False
            await asyncio.sleep(0.1)
        self.say(f"{spec.name} ready (pid {process.pid})")
        return True

    async def _is_ready(self, child: _Child) -> bool:
        spec = child.spec
        if spec.ready_file is not None and read_ready_file(spec.ready_file) is None:
            return False
        if spec.ready_port is not None:
            try:
                async with asyncio.timeout(0.5):
                    _, writer = await asyncio.open_connection(HOST, spec.ready_port)
            except (OSError, TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return True

    async def _read(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None  # noqa: S101 -- created with stdout=PIPE
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the limit: skip it rather than stop reading
                continue
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            child.tail.append(line)
            if not self.quiet:
                self.say(line, name=child.spec.name)

    async def _drain_reader(self, child: _Child) -> None:
        if child.reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await asyncio.shield(child.reader)

    def _show_tail(self, child: _Child) -> None:
        if self.quiet:  # its lines were not shown as they came: show the last ones now
            for line in child.tail:
                self.say(line, name=child.spec.name)

    # ---- watching ----------------------------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> int:
        stopping = asyncio.create_task(stop.wait(), name="up:stop")
        try:
            while not stop.is_set():
                waits = {
                    asyncio.create_task(child.process.wait(), name=f"up:wait:{child.spec.name}"): child
                    for child in self.children
                    if child.process is not None
                }
                done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
                if stop.is_set():
                    return 0
                for task in done:
                    if task in waits and not await self._revive(waits[task], stop):
                        return 1
            return 0
        finally:
            stopping.cancel()

    async def _revive(self, child: _Child, stop: asyncio.Event) -> bool:
        """Report a death and restart with backoff; False when it died too often (the stack then stops)."""
        assert child.process is not None  # noqa: S101 -- it was running
        await self._drain_reader(child)
        code = child.process.returncode
        now = time.monotonic()
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > self.restart_window_s:
            child.deaths.popleft()
        self._show_tail(child)
        if len(child.deaths) > self.max_restarts:
            self.say(
                f"{child.spec.name} exited with status {code} and has died {len(child.deaths)} times within "
                f"{self.restart_window_s:g} s: stopping the stack"
            )
            return False
        delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (len(child.deaths) - 1))
        self.say(
            f"{child.spec.name} exited with status {code}; restart {len(child.deaths)} of {self.max_restarts} "
            f"in {delay:g} s"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        if stop.is_set():
            return True
        return await self._start(child, stop)

    # ---- stopping ----------------------------------------------------------------------------------------------

    async def _stop_all(self) -> None:
        running = [child for child in self.children if child.process is not None]
        if running:
            self.say("stopping: " + ", ".join(child.spec.name for child in reversed(running)))
        for child in reversed(running):
            await self._stop(child)

    async def _stop(self, child: _Child) -> None:
        process, spec = child.process, child.spec
        assert process is not None  # noqa: S101 -- only running children are stopped
        if process.returncode is None:
            _signal_group(process.pid, spec.stop_signal)
            try:
                async with asyncio.timeout(spec.stop_timeout_s):
                    await process.wait()
            except TimeoutError:
                self.say(f"{spec.name} did not stop within {spec.stop_timeout_s:g} s: killing it")
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        # Whatever the child started in its group goes with it.
        _signal_group(process.pid, signal.SIGKILL)
        await self._drain_reader(child)
        # Some servers (uvicorn) re-raise the stop signal after a clean shutdown so their parent sees why.
        clean = process.returncode in (0, -spec.stop_signal)
        self.say(f"{spec.name} stopped" if clean else f"{spec.name} stopped with status {process.returncode}")


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def supervise(supervisor: Supervisor) -> int:
    """Run a supervisor until SIGINT or SIGTERM (`asyncio.run(supervise(...))`)."""
    with stop_on_signals() as stop:
        return await supervisor.run(stop)

"""The supervision toolkit (core.retry, core.lifecycle) and how the gateway uses it for its devices."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

import orjson
import pytest

from core.lifecycle import Readiness, cancel_and_wait, read_ready_file, readiness, stop_on_signals
from core.retry import Backoff, keep_connected
from gateway.config import GatewayConfig, ModbusDevice, OpcUaDevice, parse_config
from gateway.service import Gateway
from gateway.sources.base import Source, SourceError, TagValue

FAST = Backoff(base_s=0.001, cap_s=0.01)


class Flaky(Exception):
    """Stands for a transient error (a dropped connection)."""


# ---- keep_connected ----------------------------------------------------------------------------------------------


async def test_transient_errors_are_retried_until_stop() -> None:
    stop, attempts = asyncio.Event(), []
    errors: list[BaseException] = []

    async def session(healthy: Callable[[], None]) -> None:
        attempts.append(1)
        if len(attempts) == 5:
            stop.set()
        raise Flaky(len(attempts))

    await keep_connected(session, transient=(Flaky,), backoff=FAST, stop=stop, event="lost", on_error=errors.append)
    assert len(attempts) == 5
    assert [error.args[0] for error in errors] == [1, 2, 3, 4, 5]


async def test_an_error_that_is_not_transient_propagates_at_once() -> None:
    attempts = []

    async def session(healthy: Callable[[], None]) -> None:
        attempts.append(1)
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        await keep_connected(session, transient=(Flaky,), backoff=FAST, stop=asyncio.Event(), event="lost")
    assert attempts == [1]  # never retried: a programming error must fail the task group, not loop


async def test_healthy_resets_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    stop, asked = asyncio.Event(), []

    def delay(self: Backoff, attempt: int) -> float:
        asked.append(attempt)
        return 0.0

    monkeypatch.setattr(Backoff, "delay", delay)

    async def session(healthy: Callable[[], None]) -> None:
        if len(asked) == 2:
            healthy()  # connected this time, then lost again
        if len(asked) == 4:
            stop.set()
        raise Flaky

    await keep_connected(session, transient=(Flaky,), backoff=FAST, stop=stop, event="lost")
    assert asked == [0, 1, 0, 1, 2]


async def test_quiet_retries_are_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shopfloor.retry")
    stop = asyncio.Event()
    errors: list[BaseException] = []

    async def session(healthy: Callable[[], None]) -> None:
        if len(errors) == 3:
            stop.set()
        raise Flaky

    await keep_connected(
        session, transient=(Flaky,), backoff=FAST, stop=stop, event="lost", on_error=errors.append, quiet=True
    )
    assert len(errors) == 4  # every error still reaches on_error, which reports the outage once
    lost = [record for record in caplog.records if isinstance(record.msg, dict) and record.msg.get("event") == "lost"]
    assert lost
    assert all(record.levelno == logging.DEBUG for record in lost)


async def test_an_async_on_error_is_awaited_and_cancellation_is_never_caught() -> None:
    seen: list[str] = []
    stop = asyncio.Event()

    async def on_error(error: BaseException) -> None:
        await asyncio.sleep(0)
        seen.append(type(error).__name__)

    async def session(healthy: Callable[[], None]) -> None:
        if seen:
            await asyncio.sleep(3600)
        raise Flaky

    task = asyncio.create_task(
        keep_connected(session, transient=(Flaky,), backoff=FAST, stop=stop, event="lost", on_error=on_error)
    )
    while not seen:  # noqa: ASYNC110 -- waiting for the first round to go through
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["Flaky"]


# ---- readiness and signals ---------------------------------------------------------------------------------------


async def test_the_ready_file_appears_when_ready_and_goes_when_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ingestor.json"
    path.parent.mkdir()
    path.write_text('{"pid": 1}')  # left by a killed run: says nothing about this one
    async with readiness(path) as ready:
        assert read_ready_file(path) is None
        ready.ready(port=1883)
        assert read_ready_file(path) == {"pid": os.getpid(), "port": 1883}
        ready.not_ready()
        assert not path.exists()
        ready.ready()
    assert not path.exists()
    assert list(tmp_path.joinpath("run").iterdir()) == []  # no partial file left behind


def test_without_a_path_readiness_does_nothing(tmp_path: Path) -> None:
    marker = Readiness(None)
    marker.ready(port=1)
    marker.not_ready()
    assert list(tmp_path.iterdir()) == []


def test_a_half_written_or_foreign_file_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    path.write_text('{"pid": ')
    assert read_ready_file(path) is None
    path.write_bytes(orjson.dumps([1, 2]))
    assert read_ready_file(path) is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_sets_the_stop_event(signum: signal.Signals) -> None:
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signum)
        await asyncio.wait_for(stop.wait(), timeout=5)
    # The handlers are gone afterwards: the loop has none left to remove.
    assert not asyncio.get_running_loop().remove_signal_handler(signum)


# ---- the gateway's devices ---------------------------------------------------------------------------------------


class FailingSource:
    """A device whose connection fails with `error` at every attempt."""

    def __init__(self, error: Exception, attempts: list[int]):
        self.error = error
        self.attempts = attempts

    async def __aenter__(self) -> Source:
        self.attempts.append(1)
        raise self.error

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def values(self) -> AsyncIterator[list[TagValue]]:  # pragma: no cover -- never connected
        yield []


def gateway_config(tmp_path: Path) -> GatewayConfig:
    return parse_config(
        f"""
site: plant1
gateway_id: edge-01
broker: {{host: 127.0.0.1, port: 1}}
buffer: {{path: {tmp_path / "buffer.db"}}}
metrics_port: null
devices:
  - {{machine: press-9, protocol: modbus, host: 127.0.0.1, port: 1, tags: [{{name: temp, address: 0}}]}}
"""
    )


async def test_a_device_error_is_retried_and_the_device_marked_offline(tmp_path: Path) -> None:
    attempts: list[int] = []

    def factory(device: ModbusDevice | OpcUaDevice) -> Source:
        return FailingSource(SourceError("no answer"), attempts)

    gateway, stop = Gateway(gateway_config(tmp_path), source_factory=factory), asyncio.Event()
    run = asyncio.create_task(gateway.run(stop, drain_timeout_s=0.1))
    while len(attempts) < 2:  # noqa: ASYNC110 -- the gateway's own backoff paces the attempts
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(run, timeout=10)
    assert gateway.metrics.poll_errors.labels("press-9")._value.get() >= 2
    assert gateway.metrics.device_online.labels("press-9")._value.get() == 0


async def test_a_programming_error_in_a_device_fails_the_gateway(tmp_path: Path) -> None:
    attempts: list[int] = []

    def factory(device: ModbusDevice | OpcUaDevice) -> Source:
        return FailingSource(TypeError("a bug in a source"), attempts)

    gateway = Gateway(gateway_config(tmp_path), source_factory=factory)
    with pytest.raises(ExceptionGroup) as failure:
        await asyncio.wait_for(gateway.run(asyncio.Event()), timeout=10)
    assert failure.group_contains(TypeError, match="a bug in a source")
    assert attempts == [1]  # not retried forever


async def test_cancel_and_wait_ends_a_task_that_swallows_a_cancellation() -> None:
    # What asyncio.wait_for does on Python 3.11 when the awaited result and the cancellation come together.
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue  # the first one is lost
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], again_every_s=0.05), timeout=5)
    assert task.cancelled()
    assert swallowed == 2

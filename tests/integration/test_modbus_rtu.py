"""Modbus RTU: the gateway's sources and the assembly station on one serial line (real bytes over a pseudo-terminal
pair made by socat), RTU framed over TCP, mbpoll as a third-party RTU master, and failed blocks published as bad."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core.contract import Quality, QualityLevel
from core.registers import Order, RegisterType
from core.retry import Backoff, keep_connected
from gateway.config import ModbusDevice
from gateway.sources.base import TRANSIENT_DEVICE_ERRORS, SourceError, TagValue
from gateway.sources.modbus import ModbusSource
from simulators.modbus import ModbusStation, SerialSettings, Transport, station_device
from tests.support.serial import PTY_LINE, pty_pair

pytestmark = pytest.mark.modbus

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
WARMUP_S = 3600.0
TIMEOUT_S = 0.3


def rtu_device(machine: str, serial_port: str, unit_id: int, **overrides: Any) -> ModbusDevice:
    config = station_device(machine, order=Order.ABCD)
    del config["host"], config["port"]
    config.update(
        {
            "transport": "rtu",
            "serial_port": serial_port,
            "unit_id": unit_id,
            "poll_interval_s": 0.05,
            "timeout_s": TIMEOUT_S,
            **PTY_LINE,
            **overrides,
        }
    )
    return ModbusDevice.model_validate(config)


def rtu_over_tcp_device(machine: str, port: int, unit_id: int, **overrides: Any) -> ModbusDevice:
    config = station_device(machine, HOST, port, Order.ABCD)
    config.update(
        {"transport": "rtu_over_tcp", "unit_id": unit_id, "poll_interval_s": 0.05, "timeout_s": TIMEOUT_S, **overrides}
    )
    return ModbusDevice.model_validate(config)


def as_dict(values: list[TagValue]) -> dict[str, object]:
    return {value.tag: value.value for value in values}


async def stable_poll(source: ModbusSource, station: ModbusStation) -> dict[str, object]:
    """A poll during which the station changed nothing, so it can be compared exactly."""
    for _ in range(20):
        before = len(station.record)
        values = as_dict(await source.poll())
        if len(station.record) == before:
            return values
    raise AssertionError("the station changed during every poll")


async def test_units_share_one_line_and_a_dead_unit_costs_only_its_timeout(tmp_path: Path) -> None:
    async with pty_pair(tmp_path) as (station_end, gateway_end):
        serial = SerialSettings(station_end, baudrate=19200, parity="N")
        station = ModbusStation(seed=3, speed=1e-6, warmup_s=WARMUP_S, transport="rtu", serial=serial, unit_ids=(1, 2))
        alive = [rtu_device("assembly-1", gateway_end, 1), rtu_device("assembly-2", gateway_end, 2)]
        dead = rtu_device("assembly-3", gateway_end, 3)  # nobody answers unit 3 on this line
        polls: dict[str, list[float]] = {device.machine: [] for device in alive}
        errors: list[BaseException] = []
        turns: list[str] = []  # who had the line, in order: a machine's poll, or "dead" for unit 3's timeout
        stop = asyncio.Event()

        async def poll_alive(device: ModbusDevice) -> None:
            async with ModbusSource(device) as source:
                async for values in source.values():
                    polls[device.machine].append(time.monotonic())
                    turns.append(device.machine)
                    assert {value.quality for value in values} == {None}
                    if stop.is_set():
                        return

        async def supervise_dead(healthy: Callable[[], None]) -> None:
            async with ModbusSource(dead) as source:
                async for _values in source.values():
                    healthy()

        async def failed(error: BaseException) -> None:
            errors.append(error)
            turns.append("dead")

        async with station:
            async with asyncio.TaskGroup() as group:
                for device in alive:
                    group.create_task(poll_alive(device), name=f"poll:modbus:{device.machine}")
                # The gateway's own reconnect loop (as in Gateway._supervise), with a short backoff.
                group.create_task(
                    keep_connected(
                        supervise_dead,
                        transient=TRANSIENT_DEVICE_ERRORS,
                        backoff=Backoff(base_s=0.05, cap_s=0.1),
                        stop=stop,
                        event="device_error",
                        on_error=failed,
                        machine=dead.machine,
                    ),
                    name="poll:modbus:assembly-3",
                )
                deadline = time.monotonic() + 30
                while min(len(stamps) for stamps in polls.values()) < 8 or len(errors) < 3:
                    assert time.monotonic() < deadline, (polls, errors)
                    await asyncio.sleep(0.05)
                stop.set()
            async with ModbusSource(alive[1]) as second:
                assert await stable_poll(second, station) == station.current()  # unit 2 mirrors the station

    assert len(errors) >= 3
    assert all(isinstance(error, SourceError) for error in errors)
    assert "unit 3" in str(errors[0])
    assert f"no answer within {TIMEOUT_S} s" in str(errors[0])
    # The line is served in turn: between two timeouts of unit 3, units 1 and 2 each polled, so a dead unit costs
    # the others one timeout per cycle, never several in a row (the order proves it; no clock is asserted).
    dead_turns = [index for index, who in enumerate(turns) if who == "dead"]
    for earlier, later in itertools.pairwise(dead_turns):
        between = set(turns[earlier + 1 : later])
        assert {device.machine for device in alive} <= between, turns


async def test_the_last_source_of_a_line_closes_it_and_a_new_one_reopens_it(tmp_path: Path) -> None:
    async with pty_pair(tmp_path) as (station_end, gateway_end):
        serial = SerialSettings(station_end, baudrate=19200, parity="N")
        async with ModbusStation(seed=4, speed=1e-6, transport="rtu", serial=serial, unit_ids=(1, 2)) as station:
            first = ModbusSource(rtu_device("assembly-1", gateway_end, 1))
            second = ModbusSource(rtu_device("assembly-2", gateway_end, 2))
            async with first, second:
                assert first.line is second.line is not None
                for table in RegisterType:
                    station.fail(table, 0, 32)
                with pytest.raises(SourceError, match="every read answered an exception"):
                    await first.poll()
                station.heal()
                assert await stable_poll(second, station) == station.current()  # the failure closed nothing
            async with first:
                assert await stable_poll(first, station) == station.current()


async def test_a_serial_port_that_does_not_exist_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        async with ModbusSource(rtu_device("assembly-1", str(tmp_path / "ttyNONE"), 1)):
            pass


async def test_a_serial_port_refusing_the_line_settings_is_a_source_error(tmp_path: Path) -> None:
    async with pty_pair(tmp_path) as (_station_end, gateway_end):
        with pytest.raises(SourceError, match="refuses the line settings"):
            async with ModbusSource(rtu_device("assembly-1", gateway_end, 1, parity="E")):
                pass  # a pty refuses parity: the supervisor retries, the gateway does not crash


async def test_rtu_over_tcp_shares_one_connection_per_serial_server() -> None:
    async with ModbusStation(
        HOST, 0, seed=5, speed=1e-6, warmup_s=WARMUP_S, transport="rtu_over_tcp", unit_ids=(1, 2)
    ) as station:
        first = ModbusSource(rtu_over_tcp_device("assembly-1", station.port, 1))
        second = ModbusSource(rtu_over_tcp_device("assembly-2", station.port, 2))
        dead = ModbusSource(rtu_over_tcp_device("assembly-3", station.port, 3))
        async with first, second, dead:
            assert first.line is second.line is dead.line is not None
            assert await stable_poll(first, station) == station.current()
            assert await stable_poll(second, station) == station.current()
            started = time.monotonic()
            with pytest.raises(SourceError, match="no answer within"):
                await dead.poll()
            assert time.monotonic() - started < 10 * TIMEOUT_S  # its own timeout, not the library's hour
            assert await stable_poll(first, station) == station.current()  # the line stayed open


# ---- a failed block is published bad once -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def station_and_device(transport: Transport, folder: Path) -> AsyncIterator[tuple[ModbusStation, ModbusDevice]]:
    """The station served over `transport`, and the gateway's device for it."""
    if transport == "rtu":
        async with pty_pair(folder) as (station_end, gateway_end):
            serial = SerialSettings(station_end, baudrate=19200, parity="N")
            async with ModbusStation(seed=6, speed=1e-6, transport="rtu", serial=serial) as station:
                yield station, rtu_device("assembly-1", gateway_end, 1)
        return
    async with ModbusStation(HOST, 0, seed=6, speed=1e-6, transport=transport) as station:
        config = station_device("assembly-1", HOST, station.port, Order.ABCD)
        config.update({"transport": transport, "timeout_s": 2.0})
        yield station, ModbusDevice.model_validate(config)


@pytest.mark.parametrize("transport", ["tcp", "rtu", "rtu_over_tcp"])
async def test_a_block_answering_an_exception_is_published_bad_once(transport: Transport, tmp_path: Path) -> None:
    async with station_and_device(transport, tmp_path) as (station, device), ModbusSource(device) as source:
        expected = station.current()
        first = await source.poll()
        assert {value.quality for value in first} == {None}
        assert as_dict(first) == expected

        station.fail(RegisterType.INPUT, 0)  # the input block: temp_c alone
        failed = await source.poll()
        bad = [value for value in failed if value.quality is not None]
        assert bad == [TagValue("temp_c", None, bad[0].ts, Quality(QualityLevel.BAD, 2, "IllegalDataAddress"))]
        assert {value.ts for value in failed} == {bad[0].ts}  # one poll, one time
        good = {value.tag: value.value for value in failed if value.quality is None}
        assert good == {tag: value for tag, value in expected.items() if tag != "temp_c"}

        still_failing = await source.poll()
        assert "temp_c" not in as_dict(still_failing)  # published once, not at every poll
        assert as_dict(still_failing) == good

        station.heal()
        recovered = await source.poll()
        assert as_dict(recovered) == expected
        assert {value.quality for value in recovered} == {None}


async def test_a_failed_block_with_the_state_publishes_its_other_tags_bad(tmp_path: Path) -> None:
    async with station_and_device("rtu_over_tcp", tmp_path) as (station, device), ModbusSource(device) as source:
        station.fail(RegisterType.HOLDING, 10, 2, code=4)  # torque_nm; the whole holding block 0..13 fails
        values = await source.poll()
    bad = {value.tag: value.quality for value in values if value.quality is not None}
    quality = Quality(QualityLevel.BAD, 4, "ServerDeviceFailure")
    # the contract gives a state no quality: the state is left out, not published bad
    assert bad == dict.fromkeys(("cycle_count", "good_count", "scrap_count", "torque_nm", "air_pressure_bar"), quality)
    assert "state" not in as_dict(values)
    assert as_dict(values)["temp_c"] == station.current()["temp_c"]


# ---- a third-party RTU master: mbpoll -m rtu ----------------------------------------------------------------------


def mbpoll() -> str:
    path = shutil.which("mbpoll")
    assert path, "mbpoll is missing: apt-get install -y mbpoll (the Makefile's system-deps installs it)"
    return path


async def read_mbpoll(tty: str, unit: int, *args: str) -> tuple[int, dict[int, str], str]:
    """`mbpoll -m rtu` once on the pty at 19200 8N1; (return code, {reference: printed value}, stderr)."""
    process = await asyncio.create_subprocess_exec(
        mbpoll(),
        *("-m", "rtu", "-b", "19200", "-P", "none", "-d", "8", "-s", "1", "-o", "0.5"),
        *("-a", str(unit), *args, "-1", tty),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=20)
    values = {int(ref): value for ref, value in re.findall(r"^\[(\d+)\]:\s+(\S+)$", out.decode(), re.MULTILINE)}
    return process.returncode or 0, values, err.decode()


async def test_mbpoll_reads_the_rtu_station_on_a_serial_line(tmp_path: Path) -> None:
    seed = 13
    async with ModbusStation(seed=seed, speed=1e-6, warmup_s=WARMUP_S) as reference:
        expected = reference.current()
    assert int(expected["cycle_count"]) > 100
    async with pty_pair(tmp_path) as (station_end, gateway_end):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "simulators.modbus", "--transport", "rtu", "--serial-port", station_end, "--baudrate", "19200"),
            *("--parity", "N", "--unit-id", "1", "--unit-id", "2", "--seed", str(seed)),
            *("--speed", "1e-6", "--warmup", str(WARMUP_S)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
            assert line == f"READY modbus rtu {station_end}\n"
            for unit in (1, 2):
                # uint32 counters at protocol addresses 2, 4, 6 (references 3, 5, 7), ABCD (-B)
                code, counters, err = await read_mbpoll(gateway_end, unit, "-t", "4:int", "-B", "-r", "3", "-c", "3")
                assert code == 0, err
                assert counters == {
                    3: str(expected["cycle_count"]),
                    5: str(expected["good_count"]),
                    7: str(expected["scrap_count"]),
                }
                code, floats, err = await read_mbpoll(gateway_end, unit, "-t", "4:float", "-B", "-r", "11", "-c", "2")
                assert code == 0, err
                assert float(floats[11]) == pytest.approx(expected["torque_nm"], rel=1e-5)
            code, nothing, err = await read_mbpoll(gateway_end, 3, "-t", "4", "-r", "1", "-c", "1")
            assert code != 0  # unit 3 is not on the line: no answer
            assert not nothing
            assert "timed out" in err
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

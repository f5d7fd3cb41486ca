"""The Modbus assembly station simulator read by the gateway's ModbusSource, and by mbpoll, a third-party client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.registers import Order, RegisterType
from gateway.config import ModbusDevice
from gateway.sources.base import SourceError, TagValue
from gateway.sources.modbus import ModbusSource
from simulators.modbus import STATE_MAP, ModbusStation, station_device, station_tags
from tests.support.logs import logged_events

pytestmark = pytest.mark.modbus

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# An hour of simulated shift before serving: counters, torque and temperature are far from zero, so a wrong
# byte or word order cannot pass by accident.
WARMUP_S = 3600.0


def device_for(port: int, order: Order, **overrides: Any) -> ModbusDevice:
    """The gateway's config for the station, made from the simulator's own register map."""
    config = station_device("assembly-1", HOST, port, order)
    config.update({"poll_interval_s": 0.05, "timeout_s": 2.0, **overrides})
    return ModbusDevice.model_validate(config)


def as_dict(values: list[TagValue]) -> dict[str, object]:
    return {value.tag: value.value for value in values}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def station(order: Order, *, speed: float = 30.0, seed: int = 7) -> AsyncIterator[ModbusStation]:
    async with ModbusStation(HOST, 0, seed=seed, speed=speed, order=order, warmup_s=WARMUP_S) as running:
        yield running


def test_station_tags_are_valid_gateway_tags() -> None:
    device = device_for(5020, Order.CDAB)
    assert [tag.name for tag in device.tags] == [entry["name"] for entry in station_tags(Order.CDAB)]
    assert {tag.name for tag in device.tags} >= {
        "state",
        "cycle_count",
        "good_count",
        "scrap_count",
        "torque_nm",
        "air_pressure_bar",
        "temp_c",
        "estop",
        "torque_fault",
        "part_missing",
    }
    assert {tag.order for tag in device.tags if tag.count == 2} == {Order.CDAB}


@pytest.mark.parametrize("order", list(Order))
async def test_gateway_decodes_what_the_station_exposes(order: Order) -> None:
    async with station(order) as sim, ModbusSource(device_for(sim.port, order)) as source:
        # holding 0..13 in one read (gaps of 1 and 2 read through), then input, coil and discrete tables
        assert [(r.register_type, r.address, r.count) for r in source.plan] == [
            (RegisterType.HOLDING, 0, 14),
            (RegisterType.INPUT, 0, 1),
            (RegisterType.COIL, 0, 3),
            (RegisterType.DISCRETE, 0, 1),
        ]
        initial = sim.current()
        assert int(initial["cycle_count"]) > 100  # the warm-up ran
        stable, seen_counts = 0, set[object]()
        deadline = time.monotonic() + 20
        while (stable < 20 or len(seen_counts) < 3) and time.monotonic() < deadline:
            before = len(sim.record)
            values = await source.poll()
            if len(sim.record) != before:
                continue  # the station changed a value during the poll: nothing to compare exactly
            assert as_dict(values) == sim.current()
            stable += 1
            seen_counts.add(as_dict(values)["cycle_count"])
            await asyncio.sleep(0.05)
        assert stable >= 20
        assert len(seen_counts) >= 3, "the station should have completed cycles while being polled"
        decoded = as_dict(values)
        assert decoded["state"] in {state.value for state in STATE_MAP.values()}
        assert type(decoded["cycle_count"]) is int
        assert type(decoded["torque_nm"]) is float
        assert type(decoded["estop"]) is bool
        assert decoded["good_count"] + decoded["scrap_count"] == decoded["cycle_count"]  # type: ignore[operator]


async def test_values_yields_one_timestamp_per_poll_without_drift() -> None:
    async with station(Order.ABCD, speed=1) as sim, ModbusSource(device_for(sim.port, Order.ABCD)) as source:
        stamps = []
        polls = source.values()
        async for values in polls:
            assert len({value.ts for value in values}) == 1
            stamps.append(values[0].ts)
            if len(stamps) == 21:
                break
            await asyncio.sleep(0.02)  # the consumer's own work counts against the interval, not on top of it
        await polls.aclose()
    assert stamps == sorted(stamps)
    # 20 intervals of 50 ms on a fixed schedule; sleeping 50 ms after each poll would take 20 x 70+ ms = 1.4 s
    span = (stamps[-1] - stamps[0]).total_seconds()
    assert 0.95 <= span <= 1.2


async def test_unknown_state_code_is_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    async with station(Order.ABCD, speed=1e-6) as sim:
        code = next(code for code, state in STATE_MAP.items() if state.value == sim.current()["state"])
        partial_map = {other: state for other, state in STATE_MAP.items() if other != code}
        async with ModbusSource(device_for(sim.port, Order.ABCD, state_map=partial_map)) as source:
            first = as_dict(await source.poll())
            second = as_dict(await source.poll())
    assert "state" not in first
    assert "state" not in second
    assert first.keys() == second.keys() == sim.current().keys() - {"state"}  # the other values still come
    assert source.unmapped_states == 2
    events = logged_events(caplog, "unmapped_state")
    assert len(events) == 1  # once per new code, not once per poll
    assert events[0]["code"] == code
    assert events[0]["machine"] == "assembly-1"


async def test_device_down_raises_source_error_quickly() -> None:
    device = device_for(free_port(), Order.ABCD, timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot connect"):
        async with ModbusSource(device):
            pass
    assert time.monotonic() - started < 1.0


async def test_device_that_never_answers_raises_source_error_after_its_timeout() -> None:
    async def accept_and_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # swallow requests until the client hangs up
        writer.close()

    silent = await asyncio.start_server(accept_and_ignore, HOST, 0)
    async with silent:
        port = int(silent.sockets[0].getsockname()[1])
        async with ModbusSource(device_for(port, Order.ABCD, timeout_s=0.5)) as source:
            started = time.monotonic()
            with pytest.raises(SourceError, match="failed"):
                await source.poll()
            assert 0.4 < time.monotonic() - started < 1.5  # one timeout: pymodbus's own retries are off


async def test_station_going_away_ends_the_poll_loop_with_source_error() -> None:
    async with station(Order.ABCD, speed=1) as sim:
        source = ModbusSource(device_for(sim.port, Order.ABCD, timeout_s=1.0))
        await source.__aenter__()
        try:
            assert await source.poll()
            await sim.__aexit__(None, None, None)
            started = time.monotonic()
            with pytest.raises(SourceError):
                async for _values in source.values():
                    pass
            assert time.monotonic() - started < 2.5
        finally:
            await source.__aexit__(None, None, None)


async def test_wrong_unit_id_is_a_source_error() -> None:
    async with (
        station(Order.ABCD, speed=1e-6) as sim,
        ModbusSource(device_for(sim.port, Order.ABCD, unit_id=9)) as source,
    ):
        with pytest.raises(SourceError, match="answered"):
            await source.poll()


# ---- a third-party client: mbpoll (Debian package `mbpoll`) ------------------------------------------------------


def mbpoll() -> str:
    path = shutil.which("mbpoll")
    assert path, "mbpoll is missing: apt-get install -y mbpoll (the Makefile's system-deps installs it)"
    return path


@contextlib.asynccontextmanager
async def standalone(order: Order, seed: int) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """`python -m simulators.modbus` as its own process, nearly frozen (speed 1e-6) after its warm-up."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "simulators.modbus", "--port", "0", "--seed", str(seed), "--order", order.value),
        *("--speed", "1e-6", "--warmup", str(WARMUP_S)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        ready = re.fullmatch(r"READY modbus 127\.0\.0\.1:(\d+)\n", line)
        assert ready, f"unexpected first line {line!r}"
        yield int(ready.group(1)), process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=10)


async def read_mbpoll(port: int, *args: str) -> dict[int, str]:
    """Run `mbpoll -m tcp -a 1 ... -1 -p PORT 127.0.0.1` once; {reference: printed value}."""
    process = await asyncio.create_subprocess_exec(
        mbpoll(),
        *("-m", "tcp", "-a", "1", *args, "-1", "-p", str(port), HOST),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, err.decode()
    return {int(ref): value for ref, value in re.findall(r"^\[(\d+)\]:\s+(\S+)$", out.decode(), re.MULTILINE)}


async def expected_values(order: Order, seed: int) -> dict[str, Any]:
    """The same seed and warm-up in-process: the simulator is deterministic."""
    async with ModbusStation(HOST, 0, seed=seed, speed=1e-6, order=order, warmup_s=WARMUP_S) as sim:
        return sim.current()


async def test_mbpoll_reads_the_documented_register_map() -> None:
    mbpoll()
    seed = 11
    expected = await expected_values(Order.ABCD, seed)
    assert expected["cycle_count"] > 100
    async with standalone(Order.ABCD, seed) as (port, process):
        # mbpoll numbers references from 1: protocol address N is reference N+1.
        state = await read_mbpoll(port, "-t", "4", "-r", "1", "-c", "1")
        assert STATE_MAP[int(state[1])].value == expected["state"]
        # uint32 counters at 2, 4, 6 (references 3, 5, 7); -B = big-endian word order (ABCD)
        counters = await read_mbpoll(port, "-t", "4:int", "-B", "-r", "3", "-c", "3")
        assert counters == {
            3: str(expected["cycle_count"]),
            5: str(expected["good_count"]),
            7: str(expected["scrap_count"]),
        }
        floats = await read_mbpoll(port, "-t", "4:float", "-B", "-r", "11", "-c", "2")
        assert float(floats[11]) == pytest.approx(expected["torque_nm"], rel=1e-5)
        assert float(floats[13]) == pytest.approx(expected["air_pressure_bar"], rel=1e-5)
        temperature = await read_mbpoll(port, "-t", "3", "-r", "1", "-c", "1")
        assert int(temperature[1]) * 0.1 == pytest.approx(expected["temp_c"])
        coils = await read_mbpoll(port, "-t", "0", "-r", "1", "-c", "3")
        assert coils == {
            1: str(int(expected["estop"])),
            2: str(int(expected["torque_fault"])),
            3: str(int(expected["part_missing"])),
        }
        part = await read_mbpoll(port, "-t", "1", "-r", "1", "-c", "1")
        assert part == {1: str(int(expected["part_present"]))}
        # the documented 0-based form of the same read
        assert await read_mbpoll(port, "-0", "-t", "4:float", "-B", "-r", "10", "-c", "1") == {10: floats[11]}
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0  # a clean exit on SIGTERM


async def test_mbpoll_default_word_order_is_cdab() -> None:
    seed = 12
    expected = await expected_values(Order.CDAB, seed)
    async with standalone(Order.CDAB, seed) as (port, _process):
        floats = await read_mbpoll(port, "-t", "4:float", "-r", "11", "-c", "2")
        counters = await read_mbpoll(port, "-t", "4:int", "-r", "3", "-c", "1")
        # the raw words of the counter: low word first in CDAB
        words = await read_mbpoll(port, "-t", "4:hex", "-r", "3", "-c", "2")
    assert float(floats[11]) == pytest.approx(expected["torque_nm"], rel=1e-5)
    assert float(floats[13]) == pytest.approx(expected["air_pressure_bar"], rel=1e-5)
    assert counters == {3: str(expected["cycle_count"])}
    count = int(expected["cycle_count"])
    assert [int(words[3], 16), int(words[4], 16)] == [count & 0xFFFF, count >> 16]

"""The OPC-UA source against the injection-moulding simulator: polling, subscriptions, the watchdog, failures.

One simulator serves the module (an asyncua server start takes one to three seconds); the tests that stop a
server or run it as a process start their own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua.ua.status_codes import StatusCodes

from core.clock import utcnow
from core.contract import MachineState, Quality, QualityLevel
from gateway.config import OpcUaDevice
from gateway.plausibility import CLOCK_SKEW
from gateway.sources.base import SourceError, TagValue
from gateway.sources.opcua import OpcUaSource
from simulators.injection import InjectionParams
from simulators.opcua import STATE_CODES, InjectionMachineServer, machine_tags, node_id
from tests.support.logs import logged_events
from tests.support.postgres import free_port

pytestmark = pytest.mark.opcua

ROOT = Path(__file__).resolve().parents[2]
USERS = {"gateway": "opcua-test-secret"}
# Fast dynamics so a few seconds of wall time show warm-up, cycles and interruptions.
FAST = InjectionParams(barrel_tau_s=20.0, mold_tau_s=10.0, alarm_rate_per_h=20.0, mean_alarm_s=30.0)
ALL_TAGS = {tag["name"] for tag in machine_tags()}
# asyncua's own long-lived tasks on the client side; none may survive a closed source.
CLIENT_TASK_OWNERS = {"Client", "UaClient", "UaSession", "UASocketProtocol", "Subscription"}


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[InjectionMachineServer]:
    """The simulator in-process: 20x speed, an update every 50 ms, anonymous and one user allowed."""
    async with InjectionMachineServer(
        port=0, seed=7, speed=20.0, update_interval_s=0.05, params=FAST, users=USERS
    ) as server:
        yield server


def make_device(server: InjectionMachineServer, **overrides: Any) -> OpcUaDevice:
    """The gateway's config for the simulator, as its YAML would read; `overrides` change fields."""
    config: dict[str, Any] = {
        "protocol": "opcua",
        "machine": "press-1",
        "endpoint": server.endpoint,
        "mode": "poll",
        "poll_interval_s": 0.1,
        "publishing_interval_ms": 50,
        "watchdog_s": 5.0,
        "timeout_s": 2.0,
        "tags": machine_tags(),
        "state_tag": "state",
        "state_map": STATE_CODES,
    }
    config.update(overrides)
    return OpcUaDevice.model_validate(config)


async def collect(
    stream: AsyncIterator[list[TagValue]], *, count: int | None = None, seconds: float = 10.0
) -> list[list[TagValue]]:
    """Batches until `count` arrived or `seconds` passed (checked as batches arrive; the stream stays usable)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    batches: list[list[TagValue]] = []
    async with asyncio.timeout(seconds + 10.0):
        async for batch in stream:
            batches.append(batch)
            if len(batches) == count or loop.time() >= end:
                break
    return batches


async def drain(stream: AsyncIterator[list[TagValue]], seconds: float) -> list[list[TagValue]]:
    """Batches that arrive within `seconds`; the timeout ends the stream, so drain last."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    batches: list[list[TagValue]] = []
    while (remaining := end - loop.time()) > 0:
        try:
            batches.append(await asyncio.wait_for(anext(stream), remaining))
        except TimeoutError:
            break
    return batches


def expected(tag: str, raw: float) -> float | str:
    """What the gateway should make of a value the simulator exposed."""
    return STATE_CODES[int(raw)] if tag == "state" else float(raw)


def assert_all_exposed(server: InjectionMachineServer, batches: list[list[TagValue]]) -> None:
    """Every value yielded is one the server wrote, with that write's source timestamp, converted as documented."""
    exposed = {(tag, ts): value for ts, tag, value in server.record}
    for batch in batches:
        for value in batch:
            assert (value.tag, value.ts) in exposed, f"{value} was never exposed by the server"
            assert value.value == expected(value.tag, exposed[(value.tag, value.ts)])
            assert type(value.value) is (str if value.tag == "state" else float)


def client_tasks() -> list[str]:
    """asyncua client tasks still pending."""
    names = []
    for task in asyncio.all_tasks():
        name = getattr(task.get_coro(), "__qualname__", "")
        if name.split(".")[0] in CLIENT_TASK_OWNERS and not task.done():
            names.append(name)
    return names


async def test_poll_yields_every_tag_with_the_values_and_source_times_the_server_exposed(
    simulator: InjectionMachineServer,
) -> None:
    source = OpcUaSource(make_device(simulator, mode="poll", poll_interval_s=0.1))
    async with source, aclosing(source.values()) as stream:
        batches = await collect(stream, count=12)
    assert simulator.namespace_index == 2  # as machine_tags() and the docs write it
    assert len(batches) == 12
    for batch in batches:
        assert {value.tag for value in batch} == ALL_TAGS
    assert_all_exposed(simulator, batches)
    barrel_times = {value.ts for batch in batches for value in batch if value.tag == "barrel_temp_c"}
    assert len(barrel_times) > 5, "the machine should have moved on between polls"
    states = {value.value for batch in batches for value in batch if value.tag == "state"}
    assert states <= {state.value for state in MachineState}
    assert source.stats.timestamp_fallbacks == 0
    assert source.stats.connects == 1
    assert client_tasks() == []


async def test_poll_keeps_its_schedule_when_the_consumer_is_slow(simulator: InjectionMachineServer) -> None:
    source = OpcUaSource(make_device(simulator, mode="poll", poll_interval_s=0.05))
    loop = asyncio.get_running_loop()
    async with source, aclosing(source.values()) as stream:
        await anext(stream)
        started = loop.time()
        for _ in range(20):
            await anext(stream)
            await asyncio.sleep(0.03)  # the consumer takes 60 % of the interval
        elapsed = loop.time() - started
    # On the 50 ms grid 20 polls take 1.0 s; a loop that sleeps 50 ms after each batch would take 1.6 s or more.
    assert 0.9 <= elapsed < 1.3


async def test_subscription_delivers_changes_with_source_timestamps(simulator: InjectionMachineServer) -> None:
    source = OpcUaSource(make_device(simulator, mode="subscribe", publishing_interval_ms=50, watchdog_s=1.0))
    async with source, aclosing(source.values()) as stream:
        batches = await collect(stream, seconds=2.5)
        simulator.pause()
        try:
            # What was published before the pause still arrives; then the values stand still (for less than the
            # watchdog's second, so it does not fire).
            batches += await drain(stream, seconds=0.5)
            final = simulator.current()
        finally:
            simulator.resume()
    assert {value.tag for value in batches[0]} == ALL_TAGS  # a new subscription starts with every current value
    assert len(batches) > 10
    assert_all_exposed(simulator, batches)
    latest: dict[str, TagValue] = {}
    for batch in batches:
        for value in batch:
            assert value.tag not in latest or value.ts >= latest[value.tag].ts
            latest[value.tag] = value
    assert {tag: value.value for tag, value in latest.items()} == {
        tag: expected(tag, raw) for tag, raw in final.items()
    }
    # Data kept flowing, so the watchdog never fired although 2.5 s passed with it set to one second.
    assert source.stats.subscription_rebuilds == 0
    assert source.stats.polling_fallbacks == 0
    assert source.stats.timestamp_fallbacks == 0
    assert source.mode == "subscribe"
    assert client_tasks() == []


async def test_watchdog_rebuilds_a_silent_subscription_then_falls_back_to_polling(
    simulator: InjectionMachineServer, caplog: pytest.LogCaptureFixture
) -> None:
    device = make_device(simulator, mode="subscribe", watchdog_s=0.6, publishing_interval_ms=50, poll_interval_s=0.1)
    source = OpcUaSource(device)
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, float, list[TagValue]]] = []
    async with source:
        # Values keep changing and stay readable, but the server stops notifying: a stale PLC subscription.
        await simulator.mute_data_changes()
        try:
            started = loop.time()
            async with aclosing(source.values()) as stream:
                async for batch in stream:
                    seen.append((source.mode, loop.time() - started, batch))
                    if sum(1 for mode, _, _ in seen if mode == "poll") == 10:
                        break
        finally:
            await simulator.mute_data_changes(False)
    subscribed = [batch for mode, _, batch in seen if mode == "subscribe"]
    polled = [batch for mode, _, batch in seen if mode == "poll"]
    first_poll_at = next(at for mode, at, _ in seen if mode == "poll")
    # The first subscription and the rebuilt one each deliver the current values once, then nothing.
    assert sum(len(batch) for batch in subscribed) == 2 * len(ALL_TAGS)
    assert source.stats.subscription_rebuilds == 1
    assert source.stats.polling_fallbacks == 1
    assert source.mode == "poll"
    assert 2 * 0.6 <= first_poll_at < 2 * 0.6 + 1.0
    assert len(logged_events(caplog, "opcua_watchdog_rebuild")) == 1
    assert len(logged_events(caplog, "opcua_watchdog_fallback")) == 1
    # Polling sees what the silent subscription did not: the machine kept changing.
    assert_all_exposed(simulator, polled)
    assert len({value.ts for batch in polled for value in batch if value.tag == "barrel_temp_c"}) > 5
    assert client_tasks() == []


async def test_state_codes_outside_the_map_are_counted_logged_once_and_left_out(
    simulator: InjectionMachineServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = OpcUaSource(make_device(simulator, state_map={9: "alarm"}))
    async with source, aclosing(source.values()) as stream:
        batches = await collect(stream, count=4)
    assert len(batches) == 4
    for batch in batches:
        assert {value.tag for value in batch} == ALL_TAGS - {"state"}
    assert source.stats.unmapped_states == 4
    assert len(logged_events(caplog, "unmapped_state")) == 1


async def test_booleans_stay_booleans_and_a_node_that_cannot_be_read_is_published_bad_without_value(
    simulator: InjectionMachineServer, caplog: pytest.LogCaptureFixture
) -> None:
    tags = [
        # The namespace by URI rather than index, resolved by the source against the server's namespace array.
        {"name": "barrel_temp_c", "node_id": "nsu=urn:shopfloor:simulator:injection;s=Machine.BarrelTempC"},
        # Every asyncua server has this Boolean (a property of its namespace metadata).
        {"name": "deprecated", "node_id": "i=15037"},
        {"name": "missing", "node_id": "ns=2;s=Machine.NoSuchVariable"},
    ]
    source = OpcUaSource(make_device(simulator, tags=tags, state_tag=None, state_map={}))
    before = utcnow()
    async with source, aclosing(source.values()) as stream:
        batches = await collect(stream, count=3)
    after = utcnow()
    assert len(batches) == 3
    for batch in batches:
        by_tag = {value.tag: value for value in batch}
        assert set(by_tag) == {"barrel_temp_c", "deprecated", "missing"}
        assert by_tag["deprecated"].value is True
        assert by_tag["deprecated"].quality is None
        # The server answers BadNodeIdUnknown, with no value and no timestamps: bad, null, at the gateway's time.
        missing = by_tag["missing"]
        assert missing.value is None
        assert missing.quality == Quality(QualityLevel.BAD, StatusCodes.BadNodeIdUnknown, "BadNodeIdUnknown")
        assert before <= missing.ts <= after
    assert_all_exposed(simulator, [[value for value in batch if value.tag == "barrel_temp_c"] for batch in batches])
    assert source.stats.bad_values == 3
    assert source.stats.skipped_values == 0
    assert source.stats.timestamp_fallbacks >= 3
    not_good = logged_events(caplog, "opcua_status_not_good")
    assert [(event["tag"], event["status"]) for event in not_good] == [("missing", "BadNodeIdUnknown")]


async def test_a_plc_clock_far_off_is_replaced_by_gateway_time_and_flagged(simulator: InjectionMachineServer) -> None:
    simulator.clock_offset = timedelta(hours=1)
    try:
        await asyncio.sleep(0.2)  # a few updates stamped an hour ahead
        source = OpcUaSource(make_device(simulator, poll_interval_s=0.1))
        before = utcnow()
        async with source, aclosing(source.values()) as stream:
            batches = await collect(stream, count=3)
        after = utcnow()
    finally:
        simulator.clock_offset = timedelta(0)
    barrel = [value for batch in batches for value in batch if value.tag == "barrel_temp_c"]
    assert len(barrel) == 3
    assert all(before <= value.ts <= after for value in barrel)
    assert all(value.quality == CLOCK_SKEW for value in barrel)
    assert source.stats.clock_skews >= 3


async def test_username_and_password_are_sent_and_a_wrong_password_is_refused(
    simulator: InjectionMachineServer,
) -> None:
    # The simulator's unsecured endpoint: a password over security policy None needs the lab-only opt-in.
    login = {"username": "gateway", "allow_insecure_password": True}
    source = OpcUaSource(make_device(simulator, password=USERS["gateway"], **login))
    async with source, aclosing(source.values()) as stream:
        assert {value.tag for value in await anext(stream)} == ALL_TAGS
    refused = OpcUaSource(make_device(simulator, password="not-the-password", **login))
    with pytest.raises(SourceError, match="BadUserAccessDenied"):
        async with refused:
            pass
    assert client_tasks() == []


async def test_a_server_that_is_not_running_fails_fast() -> None:
    loop = asyncio.get_running_loop()
    source = OpcUaSource(make_device_for(f"opc.tcp://127.0.0.1:{free_port()}"))
    started = loop.time()
    with pytest.raises(SourceError, match="cannot connect"):
        async with source:
            pass
    assert loop.time() - started < 1.0
    assert client_tasks() == []


async def test_a_server_that_never_answers_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept the connection, never say hello back
        writer.close()

    listener = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        source = OpcUaSource(make_device_for(f"opc.tcp://127.0.0.1:{port}", timeout_s=0.5))
        started = loop.time()
        with pytest.raises(SourceError, match="cannot connect"):
            async with source:
                pass
        assert 0.4 <= loop.time() - started < 2.0
    finally:
        listener.close()
        await listener.wait_closed()
    assert client_tasks() == []


async def test_a_server_stopped_mid_stream_makes_values_raise_source_error() -> None:
    server = InjectionMachineServer(port=0, seed=3, speed=10.0, update_interval_s=0.05)
    await server.start()
    loop = asyncio.get_running_loop()
    running = {mode: asyncio.Event() for mode in ("poll", "subscribe")}
    failed_at: dict[str, float] = {}

    async def until_it_fails(stream: AsyncIterator[list[TagValue]], started: asyncio.Event) -> None:
        async for _ in stream:
            started.set()

    async def consume(mode: str) -> None:
        source = OpcUaSource(make_device(server, mode=mode))
        async with source, aclosing(source.values()) as stream:
            with pytest.raises(SourceError) as caught:
                await until_it_fails(stream, running[mode])
            failed_at[mode] = loop.time()
            assert "connection lost" in str(caught.value) or "read failed" in str(caught.value)

    try:
        consumers = [asyncio.create_task(consume(mode), name=f"test:consume:{mode}") for mode in running]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in running.values())), 10)
        stopped_at = loop.time()
        await server.stop()
        await asyncio.wait_for(asyncio.gather(*consumers), 10)
    finally:
        await server.stop()
    assert set(failed_at) == {"poll", "subscribe"}
    assert all(at - stopped_at < 2.0 for at in failed_at.values())
    assert client_tasks() == []


def make_device_for(endpoint: str, **overrides: Any) -> OpcUaDevice:
    """A device config for an endpoint without a simulator behind it."""
    return OpcUaDevice.model_validate(
        {"protocol": "opcua", "machine": "press-9", "endpoint": endpoint, "tags": machine_tags(), "state_tag": "state"}
        | overrides
    )


async def test_standalone_simulator_serves_the_documented_node_ids_to_uaread(tmp_path: Path) -> None:
    uaread = Path(sys.executable).with_name("uaread")
    assert uaread.exists(), "asyncua installs uaread next to the interpreter"
    log_file = (tmp_path / "simulator.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.opcua",
        *("--port", "0", "--seed", "1", "--speed", "30", "--update-interval", "0.1"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=log_file,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        assert ready.startswith(b"READY opcua opc.tcp://127.0.0.1:"), ready
        endpoint = ready.split()[2].decode()
        answers = {}
        for tag in ("barrel_temp_c", "state"):
            read = await asyncio.create_subprocess_exec(
                str(uaread),
                *("-u", endpoint, "-n", node_id(tag)),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(read.communicate(), 30)
            assert read.returncode == 0, err.decode()
            answers[tag] = out.decode().strip()
        assert 15.0 <= float(answers["barrel_temp_c"]) <= 250.0
        assert int(answers["state"]) in STATE_CODES
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 10)
        log_file.close()
    assert returncode == 0
    log = (tmp_path / "simulator.log").read_text()
    assert "opcua_simulator_stopped" in log
    assert "Traceback" not in log


def test_machine_tags_name_every_variable_with_a_stable_node_id() -> None:
    assert machine_tags() == [
        {"name": "state", "node_id": "ns=2;s=Machine.State"},
        {"name": "cycle_count", "node_id": "ns=2;s=Machine.CycleCount"},
        {"name": "good_count", "node_id": "ns=2;s=Machine.GoodCount"},
        {"name": "scrap_count", "node_id": "ns=2;s=Machine.ScrapCount"},
        {"name": "barrel_temp_c", "node_id": "ns=2;s=Machine.BarrelTempC"},
        {"name": "mold_temp_c", "node_id": "ns=2;s=Machine.MoldTempC"},
        {"name": "injection_pressure_bar", "node_id": "ns=2;s=Machine.InjectionPressureBar"},
        {"name": "cycle_time_s", "node_id": "ns=2;s=Machine.CycleTimeS"},
    ]
    assert set(STATE_CODES.values()) == {state.value for state in MachineState}

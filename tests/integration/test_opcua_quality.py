"""Whose time and which quality the OPC-UA source gives a value, against a real asyncua server.

The simulator is paused (its machine does not overwrite anything) and each test writes the DataValues a PLC would:
chosen SourceTimestamp / ServerTimestamp (or none), a wrong PLC clock, Uncertain and Bad status codes. What the
source yields then goes through the gateway's grouping and the contract's decoder, as the ingestor would read it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua.ua.status_codes import StatusCodes

from core.clock import utcnow
from core.contract import Quality, QualityLevel, TimeWindow, decode_telemetry, encode_telemetry, telemetry_topic
from gateway.config import OpcUaDevice
from gateway.plausibility import CLOCK_SKEW
from gateway.report import group_samples
from gateway.sources.base import TagValue
from gateway.sources.opcua import OpcUaSource
from simulators.opcua import STATE_CODES, InjectionMachineServer, node_id
from tests.support.logs import logged_events

pytestmark = pytest.mark.opcua

TAGS = ("barrel_temp_c", "mold_temp_c", "injection_pressure_bar", "cycle_time_s", "cycle_count")
LAST_USABLE, SENSOR = StatusCodes.UncertainLastUsableValue, StatusCodes.BadSensorFailure
UNCERTAIN = Quality(QualityLevel.UNCERTAIN, LAST_USABLE, "UncertainLastUsableValue")
# The tags the skew test stamps with a wrong clock.
SKEWED = ("barrel_temp_c", "mold_temp_c", "injection_pressure_bar", "state")
SENSOR_FAILURE = Quality(QualityLevel.BAD, SENSOR, "BadSensorFailure")


@pytest.fixture(scope="module")
async def plc() -> AsyncIterator[InjectionMachineServer]:
    """The simulator, paused: only what a test exposes changes."""
    async with InjectionMachineServer(port=0, seed=11, update_interval_s=0.05) as server:
        server.pause()
        yield server


def device(server: InjectionMachineServer, tags: dict[str, dict[str, Any]] | None = None, **fields: Any) -> OpcUaDevice:
    """A polled device with the TAGS (and the state); `tags` adds fields to some of them."""
    names = (*TAGS, "state")
    config: dict[str, Any] = {
        "protocol": "opcua",
        "machine": "press-7",
        "endpoint": server.endpoint,
        "mode": "poll",
        "poll_interval_s": 0.05,
        "publishing_interval_ms": 50,
        "timeout_s": 2.0,
        "tags": [{"name": name, "node_id": node_id(name)} | (tags or {}).get(name, {}) for name in names],
        "state_tag": "state",
        "state_map": STATE_CODES,
    }
    return OpcUaDevice.model_validate(config | fields)


async def read(source: OpcUaSource, count: int = 1) -> list[list[TagValue]]:
    """`count` batches of a fresh connection."""
    batches = []
    async with source, aclosing(source.values()) as stream:
        for _ in range(count):
            batches.append(await anext(stream))
    return batches


def by_tag(batch: list[TagValue]) -> dict[str, TagValue]:
    return {value.tag: value for value in batch}


def as_ingested(values: list[TagValue]) -> dict[str, tuple[float | None, Quality | None]]:
    """The values after the gateway's grouping, the MQTT payload and the contract's decoder: tag -> (value, quality)."""
    received_at = utcnow()
    readings = {}
    for chunk in group_samples(values, 100):
        telemetry = decode_telemetry(
            telemetry_topic("plant1", "press-7"),
            encode_telemetry(chunk, seq=1),
            received_at=received_at,
            window=TimeWindow(max_past=timedelta(days=1), max_future=timedelta(minutes=10)),
        )
        readings.update({reading.tag: (reading.value, reading.quality) for reading in telemetry.readings})
    return readings


async def expose_good(server: InjectionMachineServer, at: datetime) -> None:
    """Every tag good, source and server time `at` (the state: running)."""
    for number, tag in enumerate(TAGS):
        await server.expose(tag, 10 + number, source_time=at, server_time=at)
    await server.expose("state", 2, source_time=at, server_time=at)


@pytest.mark.parametrize(
    ("mode", "expected", "fallbacks"),
    [
        # both times / no source time / no server time / neither
        ("source", ("source", "server", "source", "gateway"), 2),
        ("server", ("server", "server", "gateway", "gateway"), 2),
        ("gateway", ("gateway", "gateway", "gateway", "gateway"), 0),
    ],
)
async def test_each_timestamp_mode_picks_its_clock_and_falls_back_when_a_time_is_absent(
    plc: InjectionMachineServer, mode: str, expected: tuple[str, ...], fallbacks: int
) -> None:
    now = utcnow()
    source_time, server_time = now - timedelta(seconds=20), now - timedelta(seconds=10)
    given = {
        "barrel_temp_c": (source_time, server_time),
        "mold_temp_c": (None, server_time),
        "injection_pressure_bar": (source_time, None),
        "cycle_time_s": (None, None),
    }
    for tag, (source_ts, server_ts) in given.items():
        await plc.expose(tag, 1.5, source_time=source_ts, server_time=server_ts)
    # One tag overrides the device's mode.
    await plc.expose("cycle_count", 7, source_time=source_time, server_time=server_time)
    await plc.expose("state", 2, source_time=source_time, server_time=server_time)
    source = OpcUaSource(device(plc, {"cycle_count": {"timestamp": "source"}}, timestamp=mode))
    before = utcnow()
    (batch,) = await read(source)
    after = utcnow()
    values = by_tag(batch)
    times = {"source": source_time, "server": server_time}
    for tag, clock in zip(given, expected, strict=True):
        if clock == "gateway":
            assert before <= values[tag].ts <= after, tag
        else:
            assert values[tag].ts == times[clock], tag
        assert values[tag].quality is None
    assert values["cycle_count"].ts == source_time
    assert source.stats.timestamp_fallbacks == fallbacks
    assert source.stats.clock_skews == 0


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_plc_clock_in_2000_or_ten_minutes_ahead_is_replaced_by_gateway_time_flagged_and_counted(
    plc: InjectionMachineServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow()
    await expose_good(plc, now)
    y2k = datetime(2000, 1, 1, tzinfo=UTC)
    ahead = now + timedelta(minutes=10)
    await plc.expose("barrel_temp_c", 205.5, source_time=y2k, server_time=y2k)
    await plc.expose("mold_temp_c", 45.0, source_time=ahead, server_time=ahead)
    # Within the default skew of 300 s: a PLC clock a few minutes off is accepted as it is.
    await plc.expose("cycle_time_s", 12.5, source_time=now - timedelta(minutes=4), server_time=now)
    # Worse than the skew: the device's own bad quality stays, the time is still replaced.
    await plc.expose("injection_pressure_bar", None, source_time=y2k, server_time=y2k, status=SENSOR)
    await plc.expose("state", 4, source_time=ahead, server_time=ahead)
    source = OpcUaSource(device(plc, mode=mode))
    before = utcnow()
    (batch,) = await read(source)
    after = utcnow()
    values = by_tag(batch)
    for tag in SKEWED:
        assert before <= values[tag].ts <= after, tag
    assert (values["barrel_temp_c"].value, values["barrel_temp_c"].quality) == (205.5, CLOCK_SKEW)
    assert (values["mold_temp_c"].value, values["mold_temp_c"].quality) == (45.0, CLOCK_SKEW)
    assert values["injection_pressure_bar"].quality == SENSOR_FAILURE
    # A state has no quality: it is published (at gateway time), the skew counted and logged.
    assert (values["state"].value, values["state"].quality) == ("alarm", None)
    assert (values["cycle_time_s"].ts, values["cycle_time_s"].quality) == (now - timedelta(minutes=4), None)
    assert (values["cycle_count"].ts, values["cycle_count"].quality) == (now, None)
    assert source.stats.clock_skews == 4
    assert [event["tag"] for event in logged_events(caplog, "opcua_clock_skew")] == [
        tag for tag in (*TAGS, "state") if tag in SKEWED
    ]
    readings = as_ingested(batch)
    assert readings["barrel_temp_c"] == (205.5, CLOCK_SKEW)
    assert readings["injection_pressure_bar"] == (None, SENSOR_FAILURE)


async def test_polling_flags_every_new_value_of_a_wrong_clock_but_not_an_old_value_read_again_unchanged(
    plc: InjectionMachineServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow()
    await expose_good(plc, now)
    y2k = datetime(2000, 1, 1, tzinfo=UTC)
    # A PLC clock stuck in 2000 that keeps stamping new values, and a value that last changed an hour ago.
    await plc.expose("barrel_temp_c", 205.5, source_time=y2k, server_time=y2k)
    await plc.expose("mold_temp_c", 45.0, source_time=now - timedelta(hours=1), server_time=now - timedelta(hours=1))
    await plc.expose("cycle_time_s", 12.5, source_time=now + timedelta(minutes=10), server_time=now)
    source = OpcUaSource(device(plc))
    async with source, aclosing(source.values()) as stream:
        first = by_tag(await anext(stream))
        await plc.expose("barrel_temp_c", 206.0, source_time=y2k + timedelta(seconds=1), server_time=y2k)
        before = utcnow()
        second = by_tag(await anext(stream))
        third = by_tag(await anext(stream))
        after = utcnow()
    # First read: an old timestamp cannot be told from a wrong clock.
    assert [first[tag].quality for tag in ("barrel_temp_c", "mold_temp_c", "cycle_time_s")] == [CLOCK_SKEW] * 3
    assert (second["barrel_temp_c"].value, second["barrel_temp_c"].quality) == (206.0, CLOCK_SKEW)
    for batch in (second, third):
        # Read again with the same timestamp: unchanged since, so it holds at the read time, nothing to flag.
        assert batch["mold_temp_c"].quality is None
        assert before <= batch["mold_temp_c"].ts <= after
        # A future time is never a value's last change.
        assert batch["cycle_time_s"].quality == CLOCK_SKEW
    assert third["barrel_temp_c"].quality is None  # 206.0 read again unchanged
    assert source.stats.clock_skews == 3 + 2 + 1
    assert source.stats.unchanged_since == 2 + 1
    assert len(logged_events(caplog, "opcua_clock_skew")) == 3


async def test_a_tighter_skew_guard_replaces_a_clock_the_default_accepts(plc: InjectionMachineServer) -> None:
    now = utcnow()
    await expose_good(plc, now)
    await plc.expose("barrel_temp_c", 1.0, source_time=now - timedelta(minutes=4), server_time=now)
    (batch,) = await read(OpcUaSource(device(plc, max_clock_skew_s=60)))
    assert by_tag(batch)["barrel_temp_c"].quality == CLOCK_SKEW
    assert by_tag(batch)["cycle_count"].quality is None


async def test_uncertain_and_bad_status_codes_are_published_with_their_quality_next_to_the_good_values_of_the_read(
    plc: InjectionMachineServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow()
    await expose_good(plc, now)
    await plc.expose("barrel_temp_c", 198.25, status=LAST_USABLE, source_time=now, server_time=now)
    # A PLC that sends its last value along with the Bad status (reads only, see the simulator): the value is kept.
    await plc.expose("injection_pressure_bar", 850.0, status=SENSOR, source_time=now, server_time=now)
    # A Bad status without a value (asyncua nulls it, as the spec asks): published as null with quality bad.
    await plc.expose("mold_temp_c", None, status=SENSOR, source_time=now, server_time=now)
    # A state with a Bad status is left out (a state has no quality), counted as skipped.
    await plc.expose("state", 2, status=StatusCodes.BadCommunicationError, source_time=now, server_time=now)
    source = OpcUaSource(device(plc))
    (batch,) = await read(source)
    values = by_tag(batch)
    assert set(values) == set(TAGS)
    assert (values["barrel_temp_c"].value, values["barrel_temp_c"].quality) == (198.25, UNCERTAIN)
    assert (values["injection_pressure_bar"].value, values["injection_pressure_bar"].quality) == (850.0, SENSOR_FAILURE)
    assert (values["mold_temp_c"].value, values["mold_temp_c"].quality) == (None, SENSOR_FAILURE)
    for tag in ("cycle_time_s", "cycle_count"):
        assert values[tag].quality is None
        assert values[tag].ts == now
    assert (source.stats.uncertain_values, source.stats.bad_values, source.stats.skipped_values) == (1, 2, 1)
    skipped = logged_events(caplog, "opcua_value_skipped")
    assert [(event["tag"], event["reason"]) for event in skipped] == [("state", "bad_status")]

    sample = group_samples(batch, 100)[0][0]
    assert sample["quality"] == {
        "barrel_temp_c": {
            "level": "uncertain",
            "code": StatusCodes.UncertainLastUsableValue,
            "detail": "UncertainLastUsableValue",
        },
        "injection_pressure_bar": {"level": "bad", "code": StatusCodes.BadSensorFailure, "detail": "BadSensorFailure"},
        "mold_temp_c": {"level": "bad", "code": StatusCodes.BadSensorFailure, "detail": "BadSensorFailure"},
    }
    assert sample["values"]["mold_temp_c"] is None
    readings = as_ingested(batch)
    assert readings["barrel_temp_c"] == (198.25, UNCERTAIN)
    assert readings["mold_temp_c"] == (None, SENSOR_FAILURE)
    assert readings["cycle_count"] == (14.0, None)


async def test_a_subscription_delivers_bad_and_uncertain_changes_in_the_same_notification_as_good_ones(
    plc: InjectionMachineServer,
) -> None:
    now = utcnow()
    await expose_good(plc, now)
    source = OpcUaSource(device(plc, mode="subscribe"))
    async with source, aclosing(source.values()) as stream:
        first = by_tag(await anext(stream))  # a new subscription starts with every current value
        assert set(first) == {*TAGS, "state"}
        later = utcnow()
        await plc.expose("barrel_temp_c", 199.0, status=LAST_USABLE, source_time=later, server_time=later)
        await plc.expose("mold_temp_c", 46.0, status=SENSOR, source_time=later, server_time=later)
        await plc.expose("cycle_time_s", 13.5, source_time=later, server_time=later)
        await plc.expose("state", 1, status=StatusCodes.BadCommunicationError, source_time=later, server_time=later)
        batch = by_tag(await anext(stream))
    assert set(batch) == {"barrel_temp_c", "mold_temp_c", "cycle_time_s"}
    assert (batch["barrel_temp_c"].value, batch["barrel_temp_c"].quality) == (199.0, UNCERTAIN)
    # Over a subscription the server's null travels: no value, quality bad.
    assert (batch["mold_temp_c"].value, batch["mold_temp_c"].quality) == (None, SENSOR_FAILURE)
    assert (batch["cycle_time_s"].value, batch["cycle_time_s"].quality, batch["cycle_time_s"].ts) == (13.5, None, later)
    assert source.stats.skipped_values == 1

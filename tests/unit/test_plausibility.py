"""Engineering ranges and gateway flags: a number outside its range is kept but marked bad, never dropped."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pytest

from core.contract import Quality, QualityLevel
from gateway.config import ModbusDevice, OpcUaDevice, parse_config
from gateway.plausibility import CLOCK_SKEW, OUT_OF_RANGE, check_ranges, flagged
from gateway.service import Gateway
from gateway.sources.base import Source, TagValue

TS = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SENSOR_FAILURE = Quality(QualityLevel.BAD, 0x808C0000, "BadSensorFailure")
LAST_USABLE = Quality(QualityLevel.UNCERTAIN, 0x40900000, "UncertainLastUsableValue")


def tv(tag: str, value: float | bool | str | None, quality: Quality | None = None) -> TagValue:
    return TagValue(tag, value, TS, quality)


@pytest.mark.parametrize(
    ("value", "outside"),
    [(-0.1, True), (0.0, False), (55.5, False), (100.0, False), (100.5, True), (float("nan"), True)],
)
def test_a_number_outside_its_inclusive_range_keeps_its_value_and_is_flagged_bad(value: float, outside: bool) -> None:
    checked, flagged_values = check_ranges([tv("temp", value)], {"temp": (0.0, 100.0)})
    assert len(checked) == 1
    assert checked[0].value == value or math.isnan(value)  # NaN is kept as it is, too
    assert checked[0].quality == (OUT_OF_RANGE if outside else None)
    assert flagged_values == (checked if outside else [])


def test_one_sided_ranges_use_infinity() -> None:
    checked, _ = check_ranges([tv("p", -1.0), tv("p", 1e12)], {"p": (0.0, float("inf"))})
    assert [value.quality for value in checked] == [OUT_OF_RANGE, None]


def test_tags_without_a_range_booleans_states_and_missing_values_are_left_alone() -> None:
    values = [
        tv("other", 1e9),
        tv("flag", True),
        tv("state", "running"),
        tv("temp", None, SENSOR_FAILURE),
        tv("temp", 50.0),
    ]
    ranges = {"flag": (0.0, 0.5), "state": (0.0, 1.0), "temp": (0.0, 100.0)}
    checked, outside = check_ranges(values, ranges)
    assert checked == values
    assert outside == []


def test_a_value_the_device_already_marked_bad_keeps_the_device_reason() -> None:
    checked, outside = check_ranges(
        [tv("temp", 999.0, SENSOR_FAILURE), tv("temp", 999.0, LAST_USABLE)], {"temp": (0, 1)}
    )
    assert [value.quality for value in checked] == [SENSOR_FAILURE, OUT_OF_RANGE]
    assert len(outside) == 2  # both are counted: each was a number outside its range


def test_a_flag_replaces_only_a_better_quality() -> None:
    assert flagged(None, CLOCK_SKEW) == CLOCK_SKEW
    assert flagged(Quality(QualityLevel.GOOD), CLOCK_SKEW) == CLOCK_SKEW
    assert flagged(LAST_USABLE, CLOCK_SKEW) == LAST_USABLE
    assert flagged(SENSOR_FAILURE, CLOCK_SKEW) == SENSOR_FAILURE
    assert flagged(LAST_USABLE, OUT_OF_RANGE) == OUT_OF_RANGE


class ScriptedSource:
    """Yields the given batches, then stays connected and quiet."""

    def __init__(self, batches: list[list[TagValue]]) -> None:
        self.batches = batches

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def values(self) -> AsyncIterator[list[TagValue]]:
        for batch in self.batches:
            yield batch
        await asyncio.Event().wait()


async def test_the_gateway_flags_out_of_range_values_before_report_by_exception_and_counts_them(
    tmp_path: Path,
) -> None:
    config = parse_config(
        f"""
site: plant1
gateway_id: edge-01
broker: {{host: 127.0.0.1, port: 1}}
buffer: {{path: {tmp_path / "buffer.db"}}}
metrics_port: null
devices:
  - machine: press-9
    protocol: modbus
    host: 127.0.0.1
    port: 1
    tags: [{{name: temp, address: 0, deadband: 5, range: [0, 100]}}, {{name: rpm, address: 1}}]
"""
    )
    # 101 moved less than the deadband from 98, but it left the range: it must be reported, marked bad.
    script = [[tv("temp", 98.0), tv("rpm", 5000.0)], [tv("temp", 101.0)], [tv("temp", 102.0)], [tv("temp", 99.0)]]
    seen: list[TagValue] = []

    def factory(device: ModbusDevice | OpcUaDevice) -> Source:
        return ScriptedSource(script)

    gateway = Gateway(config, source_factory=factory, observer=lambda machine, values: seen.extend(values))
    stop = asyncio.Event()
    run = asyncio.create_task(gateway.run(stop, drain_timeout_s=0.1))
    async with asyncio.timeout(10):
        while len(seen) < 4:  # noqa: ASYNC110 -- the observer is a plain callback, polled here
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(run, timeout=10)
    assert [(value.tag, value.value, value.quality) for value in seen] == [
        ("temp", 98.0, None),
        ("rpm", 5000.0, None),
        ("temp", 101.0, OUT_OF_RANGE),
        # 102: still out of range and within the deadband of 101: nothing new to report.
        ("temp", 99.0, None),  # back in range: a change of quality, reported
    ]
    assert gateway.metrics.values_out_of_range.labels("press-9")._value.get() == 2

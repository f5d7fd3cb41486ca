"""Report by exception (deadbands, changes, periodic refresh) and grouping values into contract messages."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from core.contract import (
    MAX_PAYLOAD_BYTES,
    MAX_VALUES_PER_SAMPLE,
    MachineState,
    Quality,
    QualityLevel,
    StateReport,
    TagReading,
    TimeWindow,
    decode_telemetry,
    encode_telemetry,
    telemetry_topic,
)
from gateway.report import ChangeFilter, format_ts, group_samples
from gateway.sources.base import TagValue

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
WINDOW = TimeWindow(max_past=timedelta(days=1), max_future=timedelta(minutes=5))


def tv(tag: str, value: float | bool | str, seconds: float = 0.0) -> TagValue:
    return TagValue(tag, value, T0 + timedelta(seconds=seconds))


def passed(change_filter: ChangeFilter, tag: str, values: list[float | bool | str], *, step: float = 1.0) -> list[bool]:
    """Feed one value per poll (`step` seconds apart); which of them were let through."""
    return [bool(change_filter.accept([tv(tag, value)], now=index * step)) for index, value in enumerate(values)]


def test_the_first_value_of_every_tag_passes() -> None:
    change_filter = ChangeFilter(full_refresh_s=60, deadbands={"temp": 5.0})
    batch = [tv("temp", 20.0), tv("count", 7), tv("running", True), tv("state", "idle")]
    assert change_filter.accept(batch, now=0) == batch


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Inside the deadband (|change| <= 0.5) nothing is sent; the boundary itself is inside.
        ([20.0, 20.3, 20.5, 19.5], [True, False, False, False]),
        # Outside it, upwards and downwards.
        ([20.0, 20.6, 20.0, 19.4], [True, True, True, True]),
        # Negative values and negative changes.
        ([-10.0, -10.4, -10.6, -11.0, -11.2], [True, False, True, False, True]),
    ],
)
def test_numbers_pass_only_outside_their_deadband(values: list[float | bool | str], expected: list[bool]) -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={"temp": 0.5})
    assert passed(change_filter, "temp", values) == expected


def test_the_deadband_is_measured_from_the_last_sent_value_so_a_slow_drift_is_reported() -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={"temp": 1.0})
    # Each step is 0.4, inside the deadband from the previous reading, but 20.0 -> 21.2 crosses it.
    assert passed(change_filter, "temp", [20.0, 20.4, 20.8, 21.2, 21.6]) == [True, False, False, True, False]


@pytest.mark.parametrize("deadbands", [{"count": None}, {"count": 0.0}, {}])
def test_without_a_deadband_any_change_passes_and_a_repeat_does_not(deadbands: dict[str, float | None]) -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands=deadbands)
    assert passed(change_filter, "count", [10, 10, 11, 11, 10.0, 10.000001]) == [True, False, True, False, True, True]


def test_a_value_is_sent_again_when_its_full_refresh_is_due() -> None:
    change_filter = ChangeFilter(full_refresh_s=10, deadbands={"temp": 5.0})
    assert change_filter.accept([tv("temp", 20.0)], now=100.0)
    assert change_filter.accept([tv("temp", 20.0)], now=109.9) == []
    assert change_filter.accept([tv("temp", 20.0)], now=110.0) == [tv("temp", 20.0)]
    # The refresh restarts the interval from that send.
    assert change_filter.accept([tv("temp", 20.0)], now=119.9) == []
    assert change_filter.accept([tv("temp", 20.0)], now=120.0) == [tv("temp", 20.0)]


def test_the_refresh_is_per_tag_and_a_change_restarts_it() -> None:
    change_filter = ChangeFilter(full_refresh_s=10, deadbands={})
    change_filter.accept([tv("a", 1), tv("b", 1)], now=0)
    assert change_filter.accept([tv("a", 2), tv("b", 1)], now=5) == [tv("a", 2)]
    # b was last sent at 0, a at 5.
    assert change_filter.accept([tv("a", 2), tv("b", 1)], now=10) == [tv("b", 1)]
    assert change_filter.accept([tv("a", 2), tv("b", 1)], now=15) == [tv("a", 2)]


def test_bools_and_texts_pass_when_they_change_whatever_the_deadband() -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={"running": 5.0, "state": 5.0})
    assert passed(change_filter, "running", [True, True, False, False, True]) == [True, False, True, False, True]
    assert passed(change_filter, "state", ["idle", "idle", "running", "alarm", "alarm"]) == [
        True,
        False,
        True,
        True,
        False,
    ]


def test_a_change_of_kind_is_a_change_even_when_python_calls_the_values_equal() -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={"x": 5.0})
    # True == 1 in Python, and 1 is inside the deadband of 0: both must still be reported.
    assert passed(change_filter, "x", [0, True, 1, 1, "1"]) == [True, True, True, False, True]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_dropped_counted_and_do_not_replace_the_last_sent_value(bad: float) -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={"temp": 1.0})
    assert change_filter.accept([tv("temp", 20.0)], now=0) == [tv("temp", 20.0)]
    assert change_filter.accept([tv("temp", bad), tv("other", 1.0)], now=1) == [tv("other", 1.0)]
    assert change_filter.accept([tv("temp", bad)], now=2) == []
    assert change_filter.dropped_non_finite == 2
    # 20.5 is compared with 20.0, the last value really sent.
    assert change_filter.accept([tv("temp", 20.5)], now=3) == []


def test_a_first_value_that_is_not_finite_does_not_count_as_sent() -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={})
    assert change_filter.accept([tv("temp", math.nan)], now=0) == []
    assert change_filter.accept([tv("temp", 20.0)], now=1) == [tv("temp", 20.0)]


def test_several_values_of_one_tag_in_a_batch_are_compared_in_order() -> None:
    change_filter = ChangeFilter(full_refresh_s=3600, deadbands={"temp": 1.0})
    batch = [tv("temp", 20.0, 0), tv("temp", 20.5, 1), tv("temp", 21.5, 2), tv("temp", 21.6, 3)]
    assert change_filter.accept(batch, now=0) == [batch[0], batch[2]]


@pytest.mark.parametrize(
    ("full_refresh_s", "deadbands"), [(0, {}), (-1, {}), (math.nan, {}), (10, {"temp": -0.1}), (10, {"t": math.nan})]
)
def test_nonsense_settings_are_refused(full_refresh_s: float, deadbands: dict[str, float | None]) -> None:
    with pytest.raises(ValueError, match=r"full_refresh_s|deadbands"):
        ChangeFilter(full_refresh_s=full_refresh_s, deadbands=deadbands)


def test_values_of_one_ts_share_a_sample_and_samples_are_in_time_order() -> None:
    values = [tv("b", 2.0, 1), tv("a", 1.0, 0), tv("c", True, 1), tv("state", "running", 0.125), tv("a", 3, 1)]
    assert group_samples(values, max_samples=10) == [
        [
            {"ts": "2026-11-26T08:00:00.000Z", "values": {"a": 1.0}},
            {"ts": "2026-11-26T08:00:00.125Z", "values": {"state": "running"}},
            {"ts": "2026-11-26T08:00:01.000Z", "values": {"b": 2.0, "c": True, "a": 3}},
        ]
    ]


def test_the_same_instant_in_another_timezone_is_the_same_sample() -> None:
    plus_three = timezone(timedelta(hours=3))
    values = [tv("a", 1.0), TagValue("b", 2.0, T0.astimezone(plus_three))]
    assert group_samples(values, max_samples=10) == [
        [{"ts": "2026-11-26T08:00:00.000Z", "values": {"a": 1.0, "b": 2.0}}]
    ]


def test_timestamps_keep_sub_millisecond_precision_so_distinct_times_stay_distinct() -> None:
    assert format_ts(T0 + timedelta(microseconds=125_000)) == "2026-11-26T08:00:00.125Z"
    assert format_ts(T0 + timedelta(microseconds=125_001)) == "2026-11-26T08:00:00.125001Z"
    values = [tv("a", 1.0, 0.000_001), tv("a", 2.0, 0.000_002)]
    assert [sample["ts"] for sample in group_samples(values, max_samples=10)[0]] == [
        "2026-11-26T08:00:00.000001Z",
        "2026-11-26T08:00:00.000002Z",
    ]


@pytest.mark.parametrize(("count", "max_samples", "sizes"), [(10, 3, [3, 3, 3, 1]), (6, 3, [3, 3]), (1, 1, [1])])
def test_chunks_hold_at_most_max_samples_in_order(count: int, max_samples: int, sizes: list[int]) -> None:
    chunks = group_samples([tv("a", float(i), i) for i in range(count)], max_samples=max_samples)
    assert [len(chunk) for chunk in chunks] == sizes
    assert [sample["values"]["a"] for chunk in chunks for sample in chunk] == [float(i) for i in range(count)]


def test_nothing_to_group_gives_no_message() -> None:
    assert group_samples([], max_samples=10) == []


def test_a_ts_with_more_tags_than_a_sample_may_hold_is_split_into_samples_of_that_ts() -> None:
    values = [tv(f"t{i:03d}", float(i)) for i in range(MAX_VALUES_PER_SAMPLE + 5)]
    (chunk,) = group_samples(values, max_samples=10)
    assert [len(sample["values"]) for sample in chunk] == [MAX_VALUES_PER_SAMPLE, 5]
    assert {sample["ts"] for sample in chunk} == {"2026-11-26T08:00:00.000Z"}


def test_chunks_stay_under_the_payload_limit() -> None:
    long_tag = "x" * 60
    values = [tv(f"{long_tag}{i:03d}", 123456.789, second) for second in range(60) for i in range(100)]
    chunks = group_samples(values, max_samples=1000)
    assert len(chunks) > 1
    assert all(len(encode_telemetry(chunk, seq=2**63 - 1)) <= MAX_PAYLOAD_BYTES for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) == 60


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_grouping_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        group_samples([tv("a", bad)], max_samples=10)


def test_grouping_refuses_a_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        group_samples([TagValue("a", 1.0, datetime(2026, 11, 26, 8, 0))], max_samples=10)  # noqa: DTZ001 - the case


def test_accepted_values_survive_encoding_and_decoding_exactly() -> None:
    change_filter = ChangeFilter(full_refresh_s=60, deadbands={"barrel_temp_c": 0.5})
    polls = [
        [tv("barrel_temp_c", 212.5, 0), tv("cycle_count", 10234, 0), tv("state", "running", 0), tv("door", False, 0)],
        [tv("barrel_temp_c", 212.7, 1), tv("cycle_count", 10235, 1), tv("state", "running", 1), tv("door", True, 1)],
        [tv("barrel_temp_c", 211.9, 2), tv("cycle_count", 10235, 2), tv("state", "alarm", 2), tv("door", math.nan, 2)],
        [tv("barrel_temp_c", -0.25, 3.5), tv("cycle_count", 10236, 3.5), tv("state", "alarm", 3.5)],
    ]
    accepted = [value for index, poll in enumerate(polls) for value in change_filter.accept(poll, now=float(index))]
    chunks = group_samples(accepted, max_samples=2)
    assert len(chunks) == 2

    topic = telemetry_topic("plant1", "press-3")
    readings: list[TagReading] = []
    states: list[StateReport] = []
    for seq, chunk in enumerate(chunks):
        decoded = decode_telemetry(
            topic, encode_telemetry(chunk, seq=seq), received_at=T0 + timedelta(seconds=5), window=WINDOW
        )
        assert decoded.seq == seq
        readings += decoded.readings
        states += decoded.states

    assert sorted(readings, key=lambda r: (r.ts, r.tag)) == sorted(
        (
            TagReading(v.ts, v.tag, float(v.value))
            for v in accepted
            if v.tag != "state" and isinstance(v.value, float | int)
        ),
        key=lambda r: (r.ts, r.tag),
    )
    assert states == [StateReport(v.ts, MachineState(v.value)) for v in accepted if isinstance(v.value, str)]
    # What was filtered out is exactly the repeats and the NaN.
    assert {(r.tag, r.value) for r in readings} == {
        ("barrel_temp_c", 212.5),
        ("cycle_count", 10234.0),
        ("door", 0.0),
        ("cycle_count", 10235.0),
        ("door", 1.0),
        ("barrel_temp_c", 211.9),
        ("barrel_temp_c", -0.25),
        ("cycle_count", 10236.0),
    }
    assert change_filter.dropped_non_finite == 1


def test_encoded_payload_is_the_contract_shape() -> None:
    (chunk,) = group_samples([tv("a", 1.5), tv("state", "idle")], max_samples=10)
    assert orjson.loads(encode_telemetry(chunk, seq=7)) == {
        "samples": [{"ts": "2026-11-26T08:00:00.000Z", "values": {"a": 1.5, "state": "idle"}}],
        "seq": 7,
    }


SENSOR_FAILURE = Quality(QualityLevel.BAD, 0x808C0000, "BadSensorFailure")
LAST_USABLE = Quality(QualityLevel.UNCERTAIN, 0x40900000, "UncertainLastUsableValue")
OUT_OF_RANGE = Quality(QualityLevel.BAD, None, "out_of_range")


def test_a_change_of_quality_passes_even_within_the_deadband_and_good_again_passes_too() -> None:
    change_filter = ChangeFilter(full_refresh_s=60, deadbands={"temp": 5.0})
    polls = [
        TagValue("temp", 20.0, T0),
        TagValue("temp", 20.5, T0, LAST_USABLE),
        TagValue("temp", 21.0, T0, LAST_USABLE),  # same quality, within the deadband: held back
        TagValue("temp", 21.0, T0, SENSOR_FAILURE),
        TagValue("temp", None, T0, SENSOR_FAILURE),  # the value went missing: a change
        TagValue("temp", None, T0, SENSOR_FAILURE),
        TagValue("temp", 21.0, T0),
    ]
    assert [bool(change_filter.accept([value], now=float(index))) for index, value in enumerate(polls)] == [
        True,
        True,
        False,
        True,
        True,
        False,
        True,
    ]


def test_samples_carry_the_quality_of_their_values_that_are_not_good() -> None:
    values = [
        TagValue("temp", 20.5, T0, LAST_USABLE),
        TagValue("pressure", None, T0, SENSOR_FAILURE),
        TagValue("torque", 999.0, T0, OUT_OF_RANGE),
        TagValue("rpm", 1500.0, T0, Quality(QualityLevel.GOOD)),
        TagValue("state", "running", T0),
        TagValue("temp", 20.7, T0 + timedelta(seconds=1)),
    ]
    first, second = group_samples(values, max_samples=10)[0]
    assert first == {
        "ts": "2026-11-26T08:00:00.000Z",
        "values": {"temp": 20.5, "pressure": None, "torque": 999.0, "rpm": 1500.0, "state": "running"},
        "quality": {
            "temp": {"level": "uncertain", "code": 0x40900000, "detail": "UncertainLastUsableValue"},
            "pressure": {"level": "bad", "code": 2156658688, "detail": "BadSensorFailure"},
            "torque": {"level": "bad", "detail": "out_of_range"},
        },
    }
    assert "quality" not in second  # all good: no map at all
    decoded = decode_telemetry(
        telemetry_topic("plant1", "press-3"),
        encode_telemetry([first, second]),
        received_at=T0 + timedelta(seconds=5),
        window=WINDOW,
    )
    assert {(r.tag, r.value, r.quality) for r in decoded.readings} == {
        ("temp", 20.5, LAST_USABLE),
        ("pressure", None, SENSOR_FAILURE),
        ("torque", 999.0, OUT_OF_RANGE),
        ("rpm", 1500.0, None),
        ("temp", 20.7, None),
    }


def test_grouping_refuses_a_missing_value_that_is_not_marked_bad() -> None:
    with pytest.raises(ValueError, match="only when its quality is bad"):
        group_samples([TagValue("temp", None, T0, LAST_USABLE)], max_samples=10)

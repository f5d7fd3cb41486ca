"""plan_reads: the fewest Modbus requests that cover a device's tags, within the gap and size limits."""

from __future__ import annotations

import logging

import pytest

from core.registers import DataType, RegisterType
from gateway.config import ModbusTag
from gateway.sources.modbus import ReadRequest, plan_reads

HR, IR, CO, DI = RegisterType.HOLDING, RegisterType.INPUT, RegisterType.COIL, RegisterType.DISCRETE


def tag(name: str, address: int, data_type: DataType = DataType.UINT16, register: RegisterType = HR) -> ModbusTag:
    return ModbusTag(name=name, address=address, data_type=data_type, table=register)


def shape(requests: list[ReadRequest]) -> list[tuple[RegisterType, int, int, list[str]]]:
    return [(r.register_type, r.address, r.count, [t.name for t in r.tags]) for r in requests]


def test_contiguous_registers_are_one_request() -> None:
    tags = [tag("a", 0), tag("b", 1), tag("c", 2, DataType.UINT32), tag("d", 4, DataType.FLOAT32)]
    assert shape(plan_reads(tags, max_gap=0, max_registers=125)) == [(HR, 0, 6, ["a", "b", "c", "d"])]


def test_tags_are_sorted_by_address_whatever_the_config_order() -> None:
    tags = [tag("late", 10), tag("early", 3), tag("middle", 6)]
    assert shape(plan_reads(tags, max_gap=8, max_registers=125)) == [(HR, 3, 8, ["early", "middle", "late"])]


def test_gap_within_max_gap_is_read_through() -> None:
    tags = [tag("a", 0), tag("b", 4)]  # registers 1, 2, 3 unused: a gap of 3
    assert shape(plan_reads(tags, max_gap=3, max_registers=125)) == [(HR, 0, 5, ["a", "b"])]


def test_gap_over_max_gap_splits() -> None:
    tags = [tag("a", 0), tag("b", 5)]  # a gap of 4
    assert shape(plan_reads(tags, max_gap=3, max_registers=125)) == [(HR, 0, 1, ["a"]), (HR, 5, 1, ["b"])]


def test_gap_is_counted_from_the_end_of_a_multi_register_tag() -> None:
    # a float64 at 10 covers 10..13; b at 16 leaves a gap of 2 (14, 15)
    tags = [tag("a", 10, DataType.FLOAT64), tag("b", 16)]
    assert shape(plan_reads(tags, max_gap=2, max_registers=125)) == [(HR, 10, 7, ["a", "b"])]
    assert shape(plan_reads(tags, max_gap=1, max_registers=125)) == [(HR, 10, 4, ["a"]), (HR, 16, 1, ["b"])]


def test_max_gap_zero_reads_only_adjacent_registers_together() -> None:
    tags = [tag("a", 0), tag("b", 1), tag("c", 3)]
    assert shape(plan_reads(tags, max_gap=0, max_registers=125)) == [(HR, 0, 2, ["a", "b"]), (HR, 3, 1, ["c"])]


def test_max_registers_splits_a_long_run() -> None:
    tags = [tag(f"t{n}", n) for n in range(10)]
    assert shape(plan_reads(tags, max_gap=8, max_registers=4)) == [
        (HR, 0, 4, ["t0", "t1", "t2", "t3"]),
        (HR, 4, 4, ["t4", "t5", "t6", "t7"]),
        (HR, 8, 2, ["t8", "t9"]),
    ]


def test_a_multi_register_tag_is_never_cut_by_max_registers() -> None:
    # a uint32 at 2..3 would end at 4 > 3: it starts the next request instead
    tags = [tag("a", 0), tag("b", 1), tag("c", 2, DataType.UINT32)]
    assert shape(plan_reads(tags, max_gap=0, max_registers=3)) == [(HR, 0, 2, ["a", "b"]), (HR, 2, 2, ["c"])]


def test_the_gap_read_through_counts_against_max_registers() -> None:
    tags = [tag("a", 0), tag("b", 5)]  # together 6 registers
    assert shape(plan_reads(tags, max_gap=8, max_registers=5)) == [(HR, 0, 1, ["a"]), (HR, 5, 1, ["b"])]
    assert shape(plan_reads(tags, max_gap=8, max_registers=6)) == [(HR, 0, 6, ["a", "b"])]


@pytest.mark.parametrize(
    ("data_type", "count"),
    [(DataType.INT16, 1), (DataType.INT32, 2), (DataType.FLOAT32, 2), (DataType.INT64, 4), (DataType.FLOAT64, 4)],
)
def test_each_tag_spans_its_type_width(data_type: DataType, count: int) -> None:
    assert shape(plan_reads([tag("x", 100, data_type)], max_gap=0, max_registers=125)) == [(HR, 100, count, ["x"])]


def test_64_bit_tags_back_to_back() -> None:
    tags = [tag("a", 0, DataType.UINT64), tag("b", 4, DataType.INT64), tag("c", 8, DataType.FLOAT64)]
    assert shape(plan_reads(tags, max_gap=0, max_registers=125)) == [(HR, 0, 12, ["a", "b", "c"])]
    assert shape(plan_reads(tags, max_gap=0, max_registers=8)) == [(HR, 0, 8, ["a", "b"]), (HR, 8, 4, ["c"])]


def test_a_tag_wider_than_max_registers_is_refused() -> None:
    with pytest.raises(ValueError, match="'wide' spans 4 registers"):
        plan_reads([tag("wide", 0, DataType.FLOAT64)], max_gap=0, max_registers=3)


def test_tables_are_planned_separately_even_at_the_same_addresses() -> None:
    tags = [
        tag("h0", 0),
        tag("i0", 0, DataType.INT16, IR),
        tag("h1", 1),
        tag("i1", 1, DataType.INT16, IR),
        tag("c0", 0, DataType.BOOL, CO),
        tag("d0", 0, DataType.BOOL, DI),
    ]
    assert shape(plan_reads(tags, max_gap=8, max_registers=125)) == [
        (HR, 0, 2, ["h0", "h1"]),
        (IR, 0, 2, ["i0", "i1"]),
        (CO, 0, 1, ["c0"]),
        (DI, 0, 1, ["d0"]),
    ]


def test_coils_are_bit_reads_with_their_own_limit() -> None:
    # 200 coils in a row: one bit read, although max_registers is 125
    coils = [tag(f"c{n}", n, DataType.BOOL, CO) for n in range(200)]
    requests = plan_reads(coils, max_gap=0, max_registers=125)
    assert [(r.register_type, r.address, r.count) for r in requests] == [(CO, 0, 200)]
    split = plan_reads(coils, max_gap=0, max_registers=125, max_bits=64)
    assert [(r.address, r.count) for r in split] == [(0, 64), (64, 64), (128, 64), (192, 8)]


def test_coil_gaps_follow_max_gap() -> None:
    coils = [tag("estop", 0, DataType.BOOL, CO), tag("fault", 1, DataType.BOOL, CO), tag("far", 20, DataType.BOOL, CO)]
    assert shape(plan_reads(coils, max_gap=8, max_registers=125)) == [
        (CO, 0, 2, ["estop", "fault"]),
        (CO, 20, 1, ["far"]),
    ]


def test_bool_in_a_holding_register_is_a_register_read() -> None:
    assert shape(plan_reads([tag("flag", 7, DataType.BOOL, HR)], max_gap=0, max_registers=1)) == [(HR, 7, 1, ["flag"])]


def test_no_tags_no_requests() -> None:
    assert plan_reads([], max_gap=8, max_registers=125) == []


@pytest.mark.parametrize(("max_gap", "max_registers"), [(-1, 10), (0, 0)])
def test_invalid_limits_are_refused(max_gap: int, max_registers: int) -> None:
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads([tag("a", 0)], max_gap=max_gap, max_registers=max_registers)


def test_every_tag_is_planned_exactly_once_within_its_request() -> None:
    tags = [
        tag("a", 0),
        tag("b", 3, DataType.FLOAT32),
        tag("c", 30, DataType.FLOAT64),
        tag("d", 36),
        tag("e", 0, DataType.BOOL, CO),
    ]
    requests = plan_reads(tags, max_gap=2, max_registers=6)
    planned = [t.name for r in requests for t in r.tags]
    assert sorted(planned) == ["a", "b", "c", "d", "e"]
    for request in requests:
        for member in request.tags:
            assert request.address <= member.address
            assert member.address + member.count <= request.address + request.count
            assert member.table is request.register_type
        assert request.count <= (2000 if request.register_type is CO else 6)


def test_pymodbus_errors_about_a_device_reach_the_log_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """pymodbus's own ERROR for a request without reply (it raises it too, and the gateway handles that) is kept,
    at WARNING: a device missing one reply must not look like an alarm in the gateway's log."""
    # The filter is installed by importing gateway.sources.modbus (above).
    with caplog.at_level(logging.DEBUG, logger="pymodbus.logging"):
        # What pymodbus.logging.Log.error does: its logger, at ERROR.
        logging.getLogger("pymodbus.logging").error("No response received after 0 retries, continue with next request")
    [record] = [record for record in caplog.records if record.name == "pymodbus.logging"]
    assert (record.levelname, record.levelno) == ("WARNING", logging.WARNING)
    assert "No response received after 0 retries" in record.getMessage()

"""The row normalisation and order-independent checksum behind `shopfloor import-sqlite`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cli.transfer import normalise_row, normalise_value, table_checksum
from core.contract import MachineState
from core.models import Role

ISTANBUL = timezone(timedelta(hours=3))
ROWS: list[tuple[Any, ...]] = [
    (1, "Şükrü", datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC), b"\x00\xff", True, 1.5, None),
    (2, "işçi", datetime(2026, 11, 26, 9, 0, tzinfo=UTC), b"", False, -0.25, Role.WORKER),
    (3, "", datetime(2026, 11, 26, 10, 0, tzinfo=UTC), bytes(range(256)), None, 1e300, MachineState.ALARM),
]


def test_the_same_instant_in_any_zone_is_the_same_value() -> None:
    utc = datetime(2026, 11, 26, 8, 0, 0, 5, tzinfo=UTC)
    assert normalise_value(utc) == normalise_value(utc.astimezone(ISTANBUL))


def test_microseconds_count() -> None:
    base = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert normalise_value(base) != normalise_value(base + timedelta(microseconds=1))
    assert normalise_value(base) == ["t", "2026-11-26T08:00:00.000000+00:00"]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        normalise_value(datetime(2026, 11, 26, 8, 0))  # noqa: DTZ001 -- the point of the test


def test_enums_compare_by_their_stored_value() -> None:
    assert normalise_value(Role.ADMIN) == normalise_value("admin")
    assert normalise_value(MachineState.RUNNING) == ["s", "running"]


@pytest.mark.parametrize(
    ("left", "right"),
    [(1, True), (1, 1.0), (1, "1"), ("", None), (b"", ""), (0, False), (b"1", "31")],
    ids=["int-bool", "int-float", "int-text", "empty-text-null", "empty-bytes-text", "zero-false", "bytes-hex"],
)
def test_values_of_different_types_never_collide(left: object, right: object) -> None:
    assert normalise_value(left) != normalise_value(right)


def test_floats_round_trip_exactly_and_negative_zero_is_zero() -> None:
    assert normalise_value(0.1 + 0.2) != normalise_value(0.3)
    assert normalise_value(-0.0) == normalise_value(0.0)
    assert normalise_value(float("nan")) == normalise_value(float("nan"))


def test_column_boundaries_are_kept() -> None:
    assert normalise_row(["a,b", "c"]) != normalise_row(["a", "b,c"])
    assert normalise_row(['a"', "b"]) != normalise_row(["a", '"b'])


def test_turkish_text_is_kept_as_is() -> None:
    assert normalise_row(["İşçi ğ"]) == '[["s","İşçi ğ"]]'.encode()
    assert normalise_value("I") != normalise_value("ı")


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        normalise_value(object())


def test_checksum_ignores_row_order() -> None:
    assert table_checksum(ROWS).total == table_checksum(list(reversed(ROWS))).total
    assert table_checksum(ROWS).rows == len(ROWS)


def test_checksum_notices_a_changed_missing_or_repeated_row() -> None:
    reference = table_checksum(ROWS)
    changed = [ROWS[0], (*ROWS[1][:5], -0.26, ROWS[1][6]), ROWS[2]]
    assert table_checksum(changed).total != reference.total
    assert table_checksum(ROWS[:2]).total != reference.total
    # A row twice and another not at all: XOR of two equal hashes would cancel out, a sum does not.
    assert table_checksum([ROWS[0], ROWS[0], ROWS[1], ROWS[1], ROWS[2]]).total != table_checksum(ROWS[2:]).total


def test_checksum_of_nothing_is_zero() -> None:
    empty = table_checksum([])
    assert (empty.rows, empty.hexdigest) == (0, "0" * 32)

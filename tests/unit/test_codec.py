"""Golden vectors for the Modbus register codec: every type in every byte/word order, written out by hand.

Each expected register list comes from the value's big-endian bytes A B C D (E F G H), written in the comment
above it (two's complement for integers, IEEE 754 for floats), then laid out by the rule of the order:

    ABCD [AB, CD, (EF, GH)]    CDAB [(GH, EF,) CD, AB]    BADC [BA, DC, (FE, HG)]    DCBA [(HG, FE,) DC, BA]

None of these lists is computed by the code under test.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.registers import REGISTER_COUNT, DataType, Order, apply_scale, decode, encode, unapply_scale

A, C, B, D = Order.ABCD, Order.CDAB, Order.BADC, Order.DCBA

# (type, value, {order: registers})
GOLDEN: list[tuple[DataType, int | float | bool, dict[Order, list[int]]]] = [
    # int16 4660 = 0x1234: A=12 B=34
    (DataType.INT16, 4660, {A: [0x1234], C: [0x1234], B: [0x3412], D: [0x3412]}),
    # int16 -12345: 65536 - 12345 = 53191 = 0xCFC7
    (DataType.INT16, -12345, {A: [0xCFC7], C: [0xCFC7], B: [0xC7CF], D: [0xC7CF]}),
    # int16 -1 = 0xFFFF
    (DataType.INT16, -1, {A: [0xFFFF], C: [0xFFFF], B: [0xFFFF], D: [0xFFFF]}),
    # int16 min -32768 = 0x8000
    (DataType.INT16, -32768, {A: [0x8000], C: [0x8000], B: [0x0080], D: [0x0080]}),
    # int16 max 32767 = 0x7FFF
    (DataType.INT16, 32767, {A: [0x7FFF], C: [0x7FFF], B: [0xFF7F], D: [0xFF7F]}),
    # uint16 43981 = 0xABCD
    (DataType.UINT16, 43981, {A: [0xABCD], C: [0xABCD], B: [0xCDAB], D: [0xCDAB]}),
    # uint16 min 0
    (DataType.UINT16, 0, {A: [0x0000], C: [0x0000], B: [0x0000], D: [0x0000]}),
    # uint16 max 65535 = 0xFFFF
    (DataType.UINT16, 65535, {A: [0xFFFF], C: [0xFFFF], B: [0xFFFF], D: [0xFFFF]}),
    # uint16 2 = 0x0002 (a state code as a byte-swapping PLC stores it)
    (DataType.UINT16, 2, {A: [0x0002], C: [0x0002], B: [0x0200], D: [0x0200]}),
    # int32 305419896 = 0x12345678: A=12 B=34 C=56 D=78
    (DataType.INT32, 305419896, {A: [0x1234, 0x5678], C: [0x5678, 0x1234], B: [0x3412, 0x7856], D: [0x7856, 0x3412]}),
    # int32 -123456789: 123456789 = 0x075BCD15, inverted 0xF8A432EA, +1 = 0xF8A432EB
    (DataType.INT32, -123456789, {A: [0xF8A4, 0x32EB], C: [0x32EB, 0xF8A4], B: [0xA4F8, 0xEB32], D: [0xEB32, 0xA4F8]}),
    # int32 min -2147483648 = 0x80000000
    (DataType.INT32, -(2**31), {A: [0x8000, 0x0000], C: [0x0000, 0x8000], B: [0x0080, 0x0000], D: [0x0000, 0x0080]}),
    # int32 max 2147483647 = 0x7FFFFFFF
    (DataType.INT32, 2**31 - 1, {A: [0x7FFF, 0xFFFF], C: [0xFFFF, 0x7FFF], B: [0xFF7F, 0xFFFF], D: [0xFFFF, 0xFF7F]}),
    # uint32 3735928559 = 0xDEADBEEF
    (DataType.UINT32, 3735928559, {A: [0xDEAD, 0xBEEF], C: [0xBEEF, 0xDEAD], B: [0xADDE, 0xEFBE], D: [0xEFBE, 0xADDE]}),
    # uint32 70000 = 0x00011170 (a counter past one register)
    (DataType.UINT32, 70000, {A: [0x0001, 0x1170], C: [0x1170, 0x0001], B: [0x0100, 0x7011], D: [0x7011, 0x0100]}),
    # uint32 min 0, max 4294967295 = 0xFFFFFFFF
    (DataType.UINT32, 0, {A: [0, 0], C: [0, 0], B: [0, 0], D: [0, 0]}),
    (DataType.UINT32, 2**32 - 1, {A: [0xFFFF, 0xFFFF], C: [0xFFFF, 0xFFFF], B: [0xFFFF, 0xFFFF], D: [0xFFFF, 0xFFFF]}),
    # int64 72623859790382856 = 0x0102030405060708: A=01 B=02 C=03 D=04 E=05 F=06 G=07 H=08
    (
        DataType.INT64,
        72623859790382856,
        {
            A: [0x0102, 0x0304, 0x0506, 0x0708],
            C: [0x0708, 0x0506, 0x0304, 0x0102],
            B: [0x0201, 0x0403, 0x0605, 0x0807],
            D: [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    # int64 -2 = 0xFFFFFFFFFFFFFFFE
    (
        DataType.INT64,
        -2,
        {
            A: [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
            C: [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
            B: [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
            D: [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
        },
    ),
    # int64 -1234567890123456789 = 0xEEDDEF0B82167EEB (two's complement of 0x112210F47DE98115)
    (
        DataType.INT64,
        -1234567890123456789,
        {
            A: [0xEEDD, 0xEF0B, 0x8216, 0x7EEB],
            C: [0x7EEB, 0x8216, 0xEF0B, 0xEEDD],
            B: [0xDDEE, 0x0BEF, 0x1682, 0xEB7E],
            D: [0xEB7E, 0x1682, 0x0BEF, 0xDDEE],
        },
    ),
    # int64 min = 0x8000000000000000
    (
        DataType.INT64,
        -(2**63),
        {
            A: [0x8000, 0x0000, 0x0000, 0x0000],
            C: [0x0000, 0x0000, 0x0000, 0x8000],
            B: [0x0080, 0x0000, 0x0000, 0x0000],
            D: [0x0000, 0x0000, 0x0000, 0x0080],
        },
    ),
    # int64 max = 0x7FFFFFFFFFFFFFFF
    (
        DataType.INT64,
        2**63 - 1,
        {
            A: [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF],
            C: [0xFFFF, 0xFFFF, 0xFFFF, 0x7FFF],
            B: [0xFF7F, 0xFFFF, 0xFFFF, 0xFFFF],
            D: [0xFFFF, 0xFFFF, 0xFFFF, 0xFF7F],
        },
    ),
    # uint64 18364758544493064720 = 0xFEDCBA9876543210
    (
        DataType.UINT64,
        18364758544493064720,
        {
            A: [0xFEDC, 0xBA98, 0x7654, 0x3210],
            C: [0x3210, 0x7654, 0xBA98, 0xFEDC],
            B: [0xDCFE, 0x98BA, 0x5476, 0x1032],
            D: [0x1032, 0x5476, 0x98BA, 0xDCFE],
        },
    ),
    # uint64 min 0, max 0xFFFFFFFFFFFFFFFF
    (DataType.UINT64, 0, {A: [0, 0, 0, 0], C: [0, 0, 0, 0], B: [0, 0, 0, 0], D: [0, 0, 0, 0]}),
    (
        DataType.UINT64,
        2**64 - 1,
        {A: [0xFFFF] * 4, C: [0xFFFF] * 4, B: [0xFFFF] * 4, D: [0xFFFF] * 4},
    ),
    # float32 123.456: 1.929 * 2^6, exponent 127+6 = 133 = 0x85, mantissa 0x76E979 -> 0x42F6E979.
    # The float32 is exactly (2^23 + 0x76E979) / 2^17 = 16181625 / 131072 = 123.45600128173828125.
    (
        DataType.FLOAT32,
        123.45600128173828,
        {A: [0x42F6, 0xE979], C: [0xE979, 0x42F6], B: [0xF642, 0x79E9], D: [0x79E9, 0xF642]},
    ),
    # float32 -1.5: sign 1, exponent 127 = 0x7F, mantissa .1b -> 1 01111111 100... = 0xBFC00000
    (DataType.FLOAT32, -1.5, {A: [0xBFC0, 0x0000], C: [0x0000, 0xBFC0], B: [0xC0BF, 0x0000], D: [0x0000, 0xC0BF]}),
    # float32 max (2 - 2^-23) * 2^127 = 3.4028234663852886e38 = 0x7F7FFFFF
    (
        DataType.FLOAT32,
        3.4028234663852886e38,
        {A: [0x7F7F, 0xFFFF], C: [0xFFFF, 0x7F7F], B: [0x7F7F, 0xFFFF], D: [0xFFFF, 0x7F7F]},
    ),
    # float32 +infinity = 0x7F800000, -infinity = 0xFF800000
    (DataType.FLOAT32, math.inf, {A: [0x7F80, 0x0000], C: [0x0000, 0x7F80], B: [0x807F, 0x0000], D: [0x0000, 0x807F]}),
    (DataType.FLOAT32, -math.inf, {A: [0xFF80, 0x0000], C: [0x0000, 0xFF80], B: [0x80FF, 0x0000], D: [0x0000, 0x80FF]}),
    # float64 123.456: exponent 1023+6 = 1029 = 0x405, mantissa 0xEDD2F1A9FBE77 -> 0x405EDD2F1A9FBE77
    (
        DataType.FLOAT64,
        123.456,
        {
            A: [0x405E, 0xDD2F, 0x1A9F, 0xBE77],
            C: [0xBE77, 0x1A9F, 0xDD2F, 0x405E],
            B: [0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
            D: [0x77BE, 0x9F1A, 0x2FDD, 0x5E40],
        },
    ),
    # float64 -2.5 = -1.25 * 2^1: sign 1, exponent 1024 = 0x400, mantissa .01b -> 0xC004000000000000
    (
        DataType.FLOAT64,
        -2.5,
        {
            A: [0xC004, 0x0000, 0x0000, 0x0000],
            C: [0x0000, 0x0000, 0x0000, 0xC004],
            B: [0x04C0, 0x0000, 0x0000, 0x0000],
            D: [0x0000, 0x0000, 0x0000, 0x04C0],
        },
    ),
    # float64 max (2 - 2^-52) * 2^1023 = 0x7FEFFFFFFFFFFFFF
    (
        DataType.FLOAT64,
        1.7976931348623157e308,
        {
            A: [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF],
            C: [0xFFFF, 0xFFFF, 0xFFFF, 0x7FEF],
            B: [0xEF7F, 0xFFFF, 0xFFFF, 0xFFFF],
            D: [0xFFFF, 0xFFFF, 0xFFFF, 0xEF7F],
        },
    ),
    # float64 +infinity = 0x7FF0000000000000, -infinity = 0xFFF0000000000000
    (
        DataType.FLOAT64,
        math.inf,
        {A: [0x7FF0, 0, 0, 0], C: [0, 0, 0, 0x7FF0], B: [0xF07F, 0, 0, 0], D: [0, 0, 0, 0xF07F]},
    ),
    (
        DataType.FLOAT64,
        -math.inf,
        {A: [0xFFF0, 0, 0, 0], C: [0, 0, 0, 0xFFF0], B: [0xF0FF, 0, 0, 0], D: [0, 0, 0, 0xF0FF]},
    ),
    # bool: the word 0x0001 / 0x0000
    (DataType.BOOL, True, {A: [0x0001], C: [0x0001], B: [0x0100], D: [0x0100]}),
    (DataType.BOOL, False, {A: [0x0000], C: [0x0000], B: [0x0000], D: [0x0000]}),
]

CASES = [
    pytest.param(data_type, value, order, registers, id=f"{data_type.value}-{value}-{order.value}")
    for data_type, value, by_order in GOLDEN
    for order, registers in by_order.items()
]

# NaN: float32 quiet NaN 0x7FC00000, float64 quiet NaN 0x7FF8000000000000.
NAN_REGISTERS = {
    DataType.FLOAT32: {A: [0x7FC0, 0], C: [0, 0x7FC0], B: [0xC07F, 0], D: [0, 0xC07F]},
    DataType.FLOAT64: {A: [0x7FF8, 0, 0, 0], C: [0, 0, 0, 0x7FF8], B: [0xF87F, 0, 0, 0], D: [0, 0, 0, 0xF87F]},
}

INT_TYPES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def test_golden_vectors_cover_every_type_and_order() -> None:
    """A new DataType or Order without golden vectors fails here."""
    covered = {(data_type, order) for data_type, _value, by_order in GOLDEN for order in by_order}
    assert covered == {(data_type, order) for data_type in DataType for order in Order}


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), CASES)
def test_decode_golden(data_type: DataType, value: float, order: Order, registers: list[int]) -> None:
    decoded = decode(registers, data_type, order)
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), CASES)
def test_encode_golden(data_type: DataType, value: float, order: Order, registers: list[int]) -> None:
    assert encode(value, data_type, order) == registers


def test_float32_encode_rounds_to_the_nearest_float32() -> None:
    assert encode(123.456, DataType.FLOAT32, Order.ABCD) == [0x42F6, 0xE979]
    # 0.1 = 0x3DCCCCCD in float32 (the mantissa 0x4CCCCC.CC... rounds up)
    assert encode(0.1, DataType.FLOAT32, Order.CDAB) == [0xCCCD, 0x3DCC]


@pytest.mark.parametrize("data_type", [DataType.FLOAT32, DataType.FLOAT64])
@pytest.mark.parametrize("order", list(Order))
def test_nan_decodes_as_nan_and_encodes(data_type: DataType, order: Order) -> None:
    registers = NAN_REGISTERS[data_type][order]
    decoded = decode(registers, data_type, order)
    assert isinstance(decoded, float)
    assert math.isnan(decoded)
    assert encode(math.nan, data_type, order) == registers


@pytest.mark.parametrize("registers", [[0x7FC0, 0x0001], [0xFFC0, 0x0000], [0x7F80, 0x0001]])
def test_any_float32_nan_pattern_decodes_as_nan(registers: list[int]) -> None:
    assert math.isnan(decode(registers, DataType.FLOAT32, Order.ABCD))


def test_bool_decodes_any_nonzero_word_as_true() -> None:
    assert decode([0x8000], DataType.BOOL, Order.ABCD) is True
    assert decode([0x0100], DataType.BOOL, Order.ABCD) is True
    assert decode([0x0000], DataType.BOOL, Order.DCBA) is False


def test_integer_types_take_integral_floats_rounded() -> None:
    assert encode(233.99999999999997, DataType.INT16, Order.ABCD) == [234]
    assert encode(-1.0, DataType.INT32, Order.ABCD) == [0xFFFF, 0xFFFF]


@pytest.mark.parametrize(
    ("data_type", "value"),
    [
        (DataType.INT16, 32768),
        (DataType.INT16, -32769),
        (DataType.UINT16, -1),
        (DataType.UINT16, 65536),
        (DataType.INT32, 2**31),
        (DataType.INT32, -(2**31) - 1),
        (DataType.UINT32, -1),
        (DataType.UINT32, 2**32),
        (DataType.INT64, 2**63),
        (DataType.INT64, -(2**63) - 1),
        (DataType.UINT64, -1),
        (DataType.UINT64, 2**64),
        (DataType.FLOAT32, 3.5e38),
        (DataType.FLOAT32, -1e39),
        (DataType.INT16, math.nan),
        (DataType.UINT32, math.inf),
        (DataType.BOOL, 2),
        (DataType.BOOL, -1),
    ],
)
def test_encode_out_of_range_names_the_type(data_type: DataType, value: float) -> None:
    with pytest.raises(ValueError, match=data_type.value if data_type is not DataType.BOOL else "bool"):
        encode(value, data_type, Order.ABCD)


@pytest.mark.parametrize(
    ("registers", "data_type", "message"),
    [
        ([1], DataType.INT32, "int32 needs 2 register"),
        ([1, 2, 3], DataType.FLOAT32, "float32 needs 2 register"),
        ([0, 0, 0], DataType.FLOAT64, "float64 needs 4 register"),
        ([0x10000], DataType.UINT16, "not 0..65535"),
        ([-1], DataType.INT16, "not 0..65535"),
    ],
)
def test_decode_refuses_malformed_registers(registers: list[int], data_type: DataType, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(registers, data_type, Order.ABCD)


def _values(data_type: DataType) -> st.SearchStrategy[int | float | bool]:
    if data_type is DataType.BOOL:
        return st.booleans()
    if data_type is DataType.FLOAT32:
        return st.floats(width=32, allow_nan=False)
    if data_type is DataType.FLOAT64:
        return st.floats(allow_nan=False)
    low, high = INT_TYPES[data_type]
    return st.integers(min_value=low, max_value=high)


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize("data_type", list(DataType))
@given(data=st.data())
def test_round_trip_value(data_type: DataType, order: Order, data: st.DataObject) -> None:
    value = data.draw(_values(data_type))
    registers = encode(value, data_type, order)
    assert len(registers) == REGISTER_COUNT[data_type]
    assert all(0 <= register <= 0xFFFF for register in registers)
    decoded = decode(registers, data_type, order)
    assert decoded == value
    assert math.copysign(1, decoded) == math.copysign(1, value)  # -0.0 keeps its sign


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize("data_type", sorted(INT_TYPES))
@given(data=st.data())
def test_round_trip_registers(data_type: DataType, order: Order, data: st.DataObject) -> None:
    """Every register pattern of an integer type is some value, and encodes back to the same words."""
    words = st.integers(min_value=0, max_value=0xFFFF)
    registers = data.draw(st.lists(words, min_size=REGISTER_COUNT[data_type], max_size=REGISTER_COUNT[data_type]))
    assert encode(decode(registers, data_type, order), data_type, order) == registers


@pytest.mark.parametrize("order", list(Order))
@given(value=st.floats(width=32, allow_nan=False))
def test_orders_are_permutations_of_the_big_endian_bytes(order: Order, value: float) -> None:
    """Cross-check of the table in the codec's docstring against the standard ABCD layout."""
    ab, cd = encode(value, DataType.FLOAT32, Order.ABCD)

    def swap(word: int) -> int:
        return ((word & 0xFF) << 8) | (word >> 8)

    expected = {A: [ab, cd], C: [cd, ab], B: [swap(ab), swap(cd)], D: [swap(cd), swap(ab)]}[order]
    assert encode(value, DataType.FLOAT32, order) == expected


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "expected"),
    [
        (234, 0.1, 0.0, 23.4),
        (-55, 0.1, 0.0, -5.5),
        (1000, 0.01, -40.0, -30.0),
        (4000, 0.025, 0.0, 100.0),
        (7, 1.0, 0.0, 7),
        (12.5, 2.0, 1.0, 26.0),
    ],
)
def test_apply_scale(raw: int | float, scale: float, offset: float, expected: float) -> None:
    assert apply_scale(raw, scale, offset) == expected


def test_apply_scale_keeps_integers_and_booleans_unscaled() -> None:
    unscaled = apply_scale(10234, 1.0, 0.0)
    assert unscaled == 10234
    assert type(unscaled) is int
    assert apply_scale(True, 0.1, 5.0) is True
    assert math.isnan(apply_scale(math.nan, 0.1, 0.0))


@pytest.mark.parametrize(("value", "scale", "offset", "raw"), [(23.4, 0.1, 0.0, 234), (-30.0, 0.01, -40.0, 1000)])
def test_unapply_scale_then_encode_gives_the_raw_register(value: float, scale: float, offset: float, raw: int) -> None:
    assert encode(unapply_scale(value, scale, offset), DataType.INT16, Order.ABCD) == [raw]


def test_unapply_scale_refuses_zero_scale() -> None:
    with pytest.raises(ValueError, match="scale 0"):
        unapply_scale(1.0, 0.0, 0.0)


@given(raw=st.integers(min_value=-(2**15), max_value=2**15 - 1))
def test_scale_round_trip_for_int16(raw: int) -> None:
    value = apply_scale(raw, 0.1, -10.0)
    assert isinstance(value, float)
    assert encode(unapply_scale(value, 0.1, -10.0), DataType.INT16, Order.ABCD) == encode(raw, DataType.INT16, A)

"""The Modbus register model and the one codec: values to 16-bit register words and back, read and write.

Pure: enums and functions on plain lists of ints; no pymodbus, no configuration. The gateway decodes with it
and the Modbus simulator encodes with it, so both sides of every test share one convention.

Byte and word order
-------------------
Write the value's bytes big-endian, most significant first, and call them A B C D (32-bit) or
A B C D E F G H (64-bit). A Modbus register carries two bytes; the order says which bytes land in which
register, register 0 being the one at the tag's address::

    order   meaning                                   32-bit registers    64-bit registers
    ABCD    big-endian (the Modbus standard)          [AB, CD]            [AB, CD, EF, GH]
    CDAB    word swap: registers reversed,            [CD, AB]            [GH, EF, CD, AB]
            bytes inside a register big-endian
    BADC    byte swap inside each register,           [BA, DC]            [BA, DC, FE, HG]
            registers in big-endian order
    DCBA    fully little-endian                       [DC, BA]            [HG, FE, DC, BA]

    float32 123.456 = 0x42F6E979, so A=42 B=F6 C=E9 D=79:

                 register n    register n+1
        ABCD       0x42F6        0xE979
        CDAB       0xE979        0x42F6
        BADC       0xF642        0x79E9
        DCBA       0x79E9        0xF642

16-bit types (int16, uint16, bool) fill one register: the word order is irrelevant, so ABCD and CDAB give
[AB], while BADC and DCBA swap the two bytes: [BA]. A bool is the 16-bit word 0 or 1 (decoding takes any
non-zero word as true).

Decoding keeps NaN and +/-infinity as float nan/inf; the gateway's publisher drops non-finite values, because
the MQTT contract forbids them. Encoding NaN and infinities works for float32 and float64 (a device may need a
NaN written as "no value"). Out-of-range values raise ValueError naming the type.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from enum import StrEnum


class Order(StrEnum):
    """Byte/word order of multi-register values: A is the most significant byte."""

    ABCD = "ABCD"  # big-endian words, big-endian bytes (Modbus standard)
    CDAB = "CDAB"  # word-swapped
    BADC = "BADC"  # byte-swapped
    DCBA = "DCBA"  # little-endian


class DataType(StrEnum):
    """Register data types."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"


REGISTER_COUNT = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BOOL: 1,
}


class RegisterType(StrEnum):
    """The four Modbus tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


Value = int | float | bool

# struct format (big-endian) of each type; bool is carried as an unsigned 16-bit word.
_FORMAT = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
    DataType.BOOL: ">H",
}

_INT_RANGE = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}

_FLOATS = (DataType.FLOAT32, DataType.FLOAT64)
_WORD_SWAPPED = (Order.CDAB, Order.DCBA)
_BYTE_SWAPPED = (Order.BADC, Order.DCBA)


def _to_registers(big_endian: bytes, order: Order) -> list[int]:
    words = [big_endian[index : index + 2] for index in range(0, len(big_endian), 2)]
    if order in _WORD_SWAPPED:
        words.reverse()
    if order in _BYTE_SWAPPED:
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


def _from_registers(registers: Sequence[int], order: Order) -> bytes:
    words = [register.to_bytes(2, "big") for register in registers]
    if order in _BYTE_SWAPPED:
        words = [word[::-1] for word in words]
    if order in _WORD_SWAPPED:
        words.reverse()
    return b"".join(words)


def decode(registers: Sequence[int], data_type: DataType, order: Order) -> Value:
    """The value held in these registers (exactly REGISTER_COUNT[data_type] words of 0..65535)."""
    expected = REGISTER_COUNT[data_type]
    if len(registers) != expected:
        raise ValueError(f"{data_type.value} needs {expected} register(s), got {len(registers)}")
    for register in registers:
        if not 0 <= register <= 0xFFFF:
            raise ValueError(f"register word {register} is not 0..65535")
    (value,) = struct.unpack(_FORMAT[data_type], _from_registers(registers, order))
    if data_type is DataType.BOOL:
        return bool(value)
    if data_type in _FLOATS:
        return float(value)
    return int(value)


def encode(value: Value, data_type: DataType, order: Order) -> list[int]:
    """The register words that hold `value`; ValueError (naming the type) when it does not fit.

    Integer types take an int, or a float that is rounded to the nearest integer (what `unapply_scale`
    gives for a scaled tag); bool takes a bool or 0/1.
    """
    if data_type is DataType.BOOL:
        if value not in (0, 1):  # True == 1 and False == 0
            raise ValueError(f"{value!r} is not a bool (true/false or 0/1)")
        number: int | float = int(value)
    elif data_type in _FLOATS:
        number = float(value)
    else:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{value!r} cannot be stored in {data_type.value}")
            value = round(value)
        low, high = _INT_RANGE[data_type]
        if not low <= value <= high:
            raise ValueError(f"{value!r} is out of range for {data_type.value} ({low}..{high})")
        number = int(value)
    try:
        packed = struct.pack(_FORMAT[data_type], number)
    except (OverflowError, struct.error):
        # Only float32 gets here: a finite double beyond +/-3.4028235e38.
        raise ValueError(f"{value!r} is out of range for {data_type.value}") from None
    return _to_registers(packed, order)


def apply_scale(raw: Value, scale: float, offset: float) -> Value:
    """Engineering value = raw * scale + offset; booleans and unscaled values pass through unchanged.

    The result is rounded to 15 significant digits, which removes the binary noise of the multiplication
    (234 * 0.1 is 23.400000000000002, published as 23.4) without losing any digit a 64-bit float carries.
    """
    if isinstance(raw, bool) or (scale == 1 and offset == 0):
        return raw
    value = raw * scale + offset
    return float(f"{value:.15g}") if math.isfinite(value) else value


def unapply_scale(value: float, scale: float, offset: float) -> float:
    """The raw value for an engineering value: (value - offset) / scale, the inverse of `apply_scale`."""
    if scale == 0:
        raise ValueError("scale 0 cannot be inverted")
    return (value - offset) / scale

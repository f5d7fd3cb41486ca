"""Sparkplug B (`spBv1.0/…`, Sparkplug 3.0) beside the v1 contract: topics, payloads, values, quality and mapping.

Sparkplug topics are built and parsed only here (v1 topics only in core/contract.py). Everything is pure: bytes in,
protobuf messages or ContractError out; the host application's state (births, aliases, sequence numbers) lives in
ingestor/sparkplug.py. Payloads are the official `sparkplug_b.proto` (vendored next to this file) compiled for the
`protobuf` package (`make sparkplug-proto`).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import orjson
from google.protobuf.message import DecodeError

from core.contract import CODE_PATTERN, MAX_PAYLOAD_BYTES, TAG_PATTERN, ContractError, Quality, QualityLevel
from core.sparkplug_b_pb2 import DataType, Payload

NAMESPACE = "spBv1.0"
SPARKPLUG_FILTER = f"{NAMESPACE}/#"
STATE_SEGMENT = "STATE"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
# Metrics the edge node uses to talk to its host, not values of the machine.
CONTROL_PREFIXES = ("Node Control/",)
# The Ignition convention for a metric property `Quality` (OPC DA quality): the two top bits of the low byte.
QUALITY_PROPERTY = "Quality"
SEQ_MODULO = 256
# Tahu's clients mark a compressed payload so; its `body` holds the real payload, its `algorithm` metric says how.
COMPRESSED_UUID = "SPBV1.0_COMPRESSED"

_CODE = re.compile(f"^{CODE_PATTERN}$")
_TAG = re.compile(f"^{TAG_PATTERN}$")

NUMERIC_TYPES = frozenset(
    {
        DataType.Int8,
        DataType.Int16,
        DataType.Int32,
        DataType.Int64,
        DataType.UInt8,
        DataType.UInt16,
        DataType.UInt32,
        DataType.UInt64,
        DataType.Float,
        DataType.Double,
        DataType.Boolean,
    }
)
TEXT_TYPES = frozenset({DataType.String, DataType.Text})
_SIGNED_BITS = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}


class MessageType(StrEnum):
    """The Sparkplug B message types (the verb of a topic)."""

    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


NODE_TYPES = frozenset({MessageType.NBIRTH, MessageType.NDATA, MessageType.NDEATH, MessageType.NCMD})
DEVICE_TYPES = frozenset({MessageType.DBIRTH, MessageType.DDATA, MessageType.DDEATH, MessageType.DCMD})


@dataclass(frozen=True)
class SparkplugTopic:
    """What a Sparkplug topic names: `spBv1.0/{group}/{type}/{edge_node}[/{device}]`, or a host's
    `spBv1.0/STATE/{host_id}` (then `group` and `edge_node` are empty and `host_id` is set)."""

    kind: MessageType
    group: str
    edge_node: str
    device: str | None = None
    host_id: str | None = None


def parse_sparkplug_topic(topic: str) -> SparkplugTopic:
    """The parts of a Sparkplug topic; ContractError for any other shape."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == STATE_SEGMENT and parts[2]:
        return SparkplugTopic(MessageType.STATE, "", "", host_id=parts[2])
    if len(parts) in (4, 5) and parts[0] == NAMESPACE and all(parts[1:]):
        try:
            kind = MessageType(parts[2])
        except ValueError:
            raise ContractError(f"unknown Sparkplug message type {parts[2][:40]!r}") from None
        if kind is MessageType.STATE:  # the 2.x form `spBv1.0/{group}/STATE/...` is not a 3.0 topic
            raise ContractError(f"unknown Sparkplug topic shape {topic[:200]!r}")
        if (kind in DEVICE_TYPES) != (len(parts) == 5):
            raise ContractError(f"{kind} topic needs {'a device' if kind in DEVICE_TYPES else 'no device'} level")
        return SparkplugTopic(kind, parts[1], parts[3], parts[4] if len(parts) == 5 else None)
    raise ContractError(f"unknown Sparkplug topic shape {topic[:200]!r}")


def group_filter(group: str | None = None) -> str:
    """What a host subscribes to: one group's messages, or every group's and every host's STATE."""
    return f"{NAMESPACE}/{group}/#" if group else SPARKPLUG_FILTER


def ncmd_topic(group: str, edge_node: str) -> str:
    """Where a host sends an edge node its commands (the Rebirth request)."""
    return f"{NAMESPACE}/{group}/{MessageType.NCMD}/{edge_node}"


def state_topic(host_id: str) -> str:
    """A host application's retained STATE topic (Sparkplug 3.0)."""
    return f"{NAMESPACE}/{STATE_SEGMENT}/{host_id}"


def state_payload(*, online: bool, timestamp_ms: int) -> bytes:
    """A host's STATE payload, `{"online": …, "timestamp": ms}`: the birth and its will carry the same timestamp."""
    return orjson.dumps({"online": online, "timestamp": timestamp_ms})


def read_state(payload: bytes) -> bool | None:
    """Whether a STATE payload says online; None when it is not one."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    online = body.get("online") if isinstance(body, dict) else None
    return online if isinstance(online, bool) else None


def rebirth_payload(*, timestamp_ms: int) -> bytes:
    """The NCMD that asks an edge node to publish its births again (`Node Control/Rebirth` = true)."""
    payload = Payload(timestamp=timestamp_ms)
    payload.metrics.add(name=REBIRTH_METRIC, timestamp=timestamp_ms, datatype=DataType.Boolean, boolean_value=True)
    return payload.SerializeToString()


def decode_payload(payload: bytes) -> Payload:
    """A Sparkplug B protobuf payload (a compressed one unpacked); ContractError when it is too big or not one."""
    message = _parse(payload)
    if message.uuid != COMPRESSED_UUID:
        return message
    algorithm = next((m.string_value for m in message.metrics if m.name == "algorithm"), "DEFLATE").upper()
    if algorithm not in ("DEFLATE", "GZIP"):
        raise ContractError(f"compressed with {algorithm[:40]!r}: only DEFLATE and GZIP are known")
    # zlib's header (DEFLATE as Tahu's clients write it) or gzip's; at most MAX_PAYLOAD_BYTES + 1 out, so a small
    # bomb cannot take the ingestor's memory.
    unpacker = zlib.decompressobj(zlib.MAX_WBITS | (16 if algorithm == "GZIP" else 0))
    try:
        inner = unpacker.decompress(message.body, MAX_PAYLOAD_BYTES + 1)
    except zlib.error as error:
        raise ContractError(f"compressed payload does not unpack: {error}") from None
    if len(inner) > MAX_PAYLOAD_BYTES or unpacker.unconsumed_tail:
        raise ContractError(f"compressed payload unpacks to over the {MAX_PAYLOAD_BYTES}-byte limit")
    unpacked = _parse(inner)
    if unpacked.uuid == COMPRESSED_UUID:
        raise ContractError("compressed payload holds another compressed payload")
    return unpacked


def _parse(payload: bytes) -> Payload:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    message = Payload()
    try:
        message.ParseFromString(payload)
    except DecodeError as error:
        raise ContractError(f"not a Sparkplug B payload: {error}") from None
    return message


class UnsupportedMetric(ValueError):
    """A metric of a type Shopfloor does not store (datasets, templates, arrays, bytes, …)."""


def datatype_name(datatype: int) -> str:
    """The proto's name of a data type (`Double`), or its number when unknown."""
    try:
        return DataType.Name(datatype)
    except ValueError:
        return str(datatype)


def metric_value(metric: Payload.Metric, datatype: int) -> float | str | None:
    """A metric's value as Shopfloor stores it: a number (booleans 1.0 / 0.0), text (String, Text), or None when it
    is null. UnsupportedMetric for the other types; ContractError when the value does not match its type."""
    if metric.is_null:
        return None
    if datatype in TEXT_TYPES:
        if metric.WhichOneof("value") != "string_value":
            raise ContractError(f"{datatype_name(datatype)} metric without a string value")
        return metric.string_value
    if datatype not in NUMERIC_TYPES:
        raise UnsupportedMetric(datatype_name(datatype))
    which = metric.WhichOneof("value")
    if datatype == DataType.Boolean:
        if which != "boolean_value":
            raise ContractError("Boolean metric without a boolean value")
        return 1.0 if metric.boolean_value else 0.0
    if datatype in (DataType.Float, DataType.Double):
        if which not in ("float_value", "double_value"):
            raise ContractError(f"{datatype_name(datatype)} metric without a floating-point value")
        number = float(metric.float_value if which == "float_value" else metric.double_value)
        if not math.isfinite(number):
            raise ContractError(f"{datatype_name(datatype)} metric is not a finite number")
        return number
    if which not in ("int_value", "long_value"):
        raise ContractError(f"{datatype_name(datatype)} metric without an integer value")
    raw = metric.int_value if which == "int_value" else metric.long_value
    bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]  # a DataType is an int
    if bits is not None:
        # Signed types travel as unsigned two's complement: 32 bits in int_value (whatever the width; some clients
        # use the type's own width), 64 in long_value.
        width = 64 if which == "long_value" else 32
        if raw >= 2 ** (width - 1):
            raw -= 2**width
        elif raw >= 2 ** (bits - 1) and bits < width:
            raw -= 2**bits
    return float(raw)


def metric_quality(metric: Payload.Metric) -> Quality | None:
    """The quality a metric declares: `is_null` is bad; a `Quality` property (Ignition's OPC-style code: 192 good,
    64 uncertain, 0 bad) gives the level by its two top bits and keeps the code. None: good."""
    code: int | None = None
    properties = metric.properties
    for key, value in zip(properties.keys, properties.values, strict=False):
        if key == QUALITY_PROPERTY and not value.is_null and value.WhichOneof("value") in ("int_value", "long_value"):
            code = value.int_value if value.WhichOneof("value") == "int_value" else value.long_value
    if code is None:
        return Quality(QualityLevel.BAD, None, "is_null") if metric.is_null else None
    level = {0xC0: QualityLevel.GOOD, 0x40: QualityLevel.UNCERTAIN}.get(code & 0xC0, QualityLevel.BAD)
    if metric.is_null:
        level = QualityLevel.BAD
    if level is QualityLevel.GOOD:
        return None
    return Quality(level, code, "is_null" if metric.is_null else f"sparkplug quality {code}")


def default_code(name: str) -> str:
    """A Sparkplug name (group, edge node, device) as a Shopfloor code: lower-cased (checked by `check_mapped_code`)."""
    return name.lower()


def default_tag(name: str) -> str:
    """A metric name as a tag: lower-cased, `/` to `.` and spaces to `_` (`Press/Barrel Temp` → `press.barrel_temp`)."""
    return name.lower().replace("/", ".").replace(" ", "_")


def is_code(value: str) -> bool:
    """Whether `value` is a contract code (`[a-z0-9][a-z0-9_-]{0,63}`)."""
    return bool(_CODE.match(value))


def is_tag(value: str) -> bool:
    """Whether `value` is a contract tag name."""
    return bool(_TAG.match(value))


@dataclass(frozen=True)
class SparkplugMapping:
    """From Sparkplug names to Shopfloor's: a group to a site, an edge node or device to a machine, a metric to a tag.

    `sites` maps a group; `machines` maps `group/edge_node` (the edge node's own metrics) or `group/edge_node/device`;
    `tags` maps a metric name. What is not mapped gets the default (site = group, machine = device or edge node,
    lower-cased; tag = `default_tag`), and a result that is not a valid code or tag is refused.
    """

    sites: Mapping[str, str] = field(default_factory=dict)
    machines: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def site(self, group: str) -> str:
        """The site of a group; ContractError when it is no code."""
        site = self.sites.get(group, default_code(group))
        if not is_code(site):
            raise ContractError(f"Sparkplug group {group[:80]!r} gives site {site[:80]!r}, not a code ({CODE_PATTERN})")
        return site

    def machine(self, group: str, edge_node: str, device: str | None) -> str:
        """The machine of an edge node (its own metrics) or of one of its devices; ContractError when it is no code."""
        key = f"{group}/{edge_node}" + (f"/{device}" if device is not None else "")
        machine = self.machines.get(key, default_code(device if device is not None else edge_node))
        if not is_code(machine):
            raise ContractError(f"Sparkplug {key[:160]!r} gives machine {machine[:80]!r}, not a code ({CODE_PATTERN})")
        return machine

    def tag(self, metric: str) -> str | None:
        """The tag of a metric; None when it gives no valid tag name."""
        tag = self.tags.get(metric, default_tag(metric))
        return tag if is_tag(tag) else None


def next_seq(seq: int) -> int:
    """The sequence number after `seq` (0-255, wrapping)."""
    return (seq + 1) % SEQ_MODULO

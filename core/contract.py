"""MQTT contract v1: topics, payloads and limits (`docs/mqtt_contract.md` is the copy for PLC programmers).

Topics are built and parsed only here. Decoding is pure: bytes in, readings out, or a ContractError whose
message becomes the dead-letter reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal, overload

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from core.clock import utcnow

PREFIX = "shopfloor/v1"
CODE_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
TAG_PATTERN = r"[a-z0-9_.-]{1,64}"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_SAMPLES = 1000
MAX_VALUES_PER_SAMPLE = 200
STATE_TAG = "state"
GATEWAY_SEGMENT = "_gateway"

_CODE = re.compile(f"^{CODE_PATTERN}$")
_TAG = re.compile(f"^{TAG_PATTERN}$")


class MachineState(StrEnum):
    """What a machine is doing; drives availability."""

    RUNNING = "running"
    IDLE = "idle"
    SETUP = "setup"
    ALARM = "alarm"
    OFF = "off"


class ContractError(ValueError):
    """A message that breaks the contract; the message is the dead-letter reason."""


class TopicKind(StrEnum):
    """The kinds of topic the contract defines."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    GATEWAY_STATUS = "gateway_status"


@dataclass(frozen=True)
class TopicInfo:
    """What a topic names."""

    kind: TopicKind
    site: str
    machine: str  # the gateway id for gateway status topics


def check_code(value: str, what: str) -> str:
    """A site, machine or gateway code: `[a-z0-9][a-z0-9_-]{0,63}`."""
    if not _CODE.match(value):
        raise ContractError(f"{what} {value!r} is not a valid code ([a-z0-9][a-z0-9_-]{{0,63}})")
    return value


def telemetry_topic(site: str, machine: str) -> str:
    """Where a machine's readings go (QoS 1, not retained)."""
    return f"{PREFIX}/{check_code(site, 'site')}/{check_code(machine, 'machine')}/telemetry"


def status_topic(site: str, machine: str) -> str:
    """Where a machine's online/offline status goes (retained)."""
    return f"{PREFIX}/{check_code(site, 'site')}/{check_code(machine, 'machine')}/status"


def gateway_status_topic(site: str, gateway_id: str) -> str:
    """A gateway's own status and will message (retained)."""
    return f"{PREFIX}/{check_code(site, 'site')}/{GATEWAY_SEGMENT}/{check_code(gateway_id, 'gateway')}/status"


TELEMETRY_FILTER = f"{PREFIX}/+/+/telemetry"
STATUS_FILTER = f"{PREFIX}/+/+/status"
GATEWAY_STATUS_FILTER = f"{PREFIX}/+/{GATEWAY_SEGMENT}/+/status"


def shared(group: str | None, topic_filter: str) -> str:
    """A shared subscription (`$share/group/filter`) so several ingestors split the load; plain without a group."""
    return f"$share/{check_code(group, 'group')}/{topic_filter}" if group else topic_filter


def parse_topic(topic: str) -> TopicInfo:
    """Which site and machine (or gateway) a topic is about; ContractError for any other shape."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:2]) == PREFIX and parts[4] in (TopicKind.TELEMETRY, TopicKind.STATUS):
        kind = TopicKind.TELEMETRY if parts[4] == TopicKind.TELEMETRY else TopicKind.STATUS
        return TopicInfo(kind, check_code(parts[2], "site"), check_code(parts[3], "machine"))
    if len(parts) == 6 and "/".join(parts[:2]) == PREFIX and parts[3] == GATEWAY_SEGMENT and parts[5] == "status":
        return TopicInfo(TopicKind.GATEWAY_STATUS, check_code(parts[2], "site"), check_code(parts[4], "gateway"))
    raise ContractError(f"unknown topic shape {topic[:200]!r}")


class QualityLevel(IntEnum):
    """How far a value can be trusted; stored as this small integer (`reading.quality`, NULL for good)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


@dataclass(frozen=True)
class Quality:
    """A value's quality: its level, and what the device said (an OPC-UA status code and its name, a Modbus
    exception code and its name, or the gateway's own reason such as `out_of_range`)."""

    level: QualityLevel
    code: int | None = None
    detail: str | None = None

    def encode(self) -> str | dict[str, Any]:
        """The contract's form: the level's name alone, or an object with the code and detail."""
        name = self.level.name.lower()
        if self.code is None and self.detail is None:
            return name
        body: dict[str, Any] = {"level": name}
        if self.code is not None:
            body["code"] = self.code
        if self.detail is not None:
            body["detail"] = self.detail
        return body


QualityName = Literal["good", "uncertain", "bad"]


def quality_name(level: int | None) -> QualityName:
    """The name of a stored quality (`reading.quality`: NULL is good)."""
    if level is None or level == QualityLevel.GOOD:
        return "good"
    return "uncertain" if level == QualityLevel.UNCERTAIN else "bad"


class QualityPayload(BaseModel):
    """A quality with what the device said: `{"level": "bad", "code": 2156658688, "detail": "BadSensorFailure"}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: QualityName
    code: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    detail: Annotated[str, Field(max_length=200)] | None = None


class SamplePayload(BaseModel):
    """One moment of one machine: source time, tag values, and (optionally) the quality of some of them.

    A tag missing from `quality` is good. A value may be null only when its quality is bad: the device could not
    give one (a failed read), and the tag is then known to be bad rather than silently absent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: AwareDatetime
    values: Annotated[dict[str, float | bool | str | None], Field(min_length=1, max_length=MAX_VALUES_PER_SAMPLE)]
    quality: Annotated[dict[str, QualityName | QualityPayload], Field(max_length=MAX_VALUES_PER_SAMPLE)] | None = None


class TelemetryPayload(BaseModel):
    """A batch of samples from one publisher; `seq` lets the ingestor count gaps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    samples: Annotated[list[SamplePayload], Field(min_length=1, max_length=MAX_SAMPLES)]


class GatewayBacklog(BaseModel):
    """What a gateway's disk buffer holds (on its retained status): messages and readings waiting, the oldest one's
    age, bytes used of the bound, and how long the bound lasts at the current rate (None: not growing)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    messages: Annotated[int, Field(ge=0, le=2**62)] | None = None
    readings: Annotated[int, Field(ge=0, le=2**62)] | None = None
    oldest_age_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    bytes: Annotated[int, Field(ge=0, le=2**62)] | None = None
    max_bytes: Annotated[int, Field(ge=0, le=2**62)] | None = None
    seconds_to_full: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


def _lenient_backlog(value: object, handler: ValidatorFunctionWrapHandler) -> GatewayBacklog | None:
    # A backlog the ingestor cannot read must not cost the gateway its online flag: it is left out instead.
    try:
        result: GatewayBacklog | None = handler(value)
    except ValidationError:
        return None
    return result


class StatusPayload(BaseModel):
    """Online or offline, retained on the status topic; a gateway's status may carry its buffer's backlog."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    online: bool
    ts: AwareDatetime | None = None
    backlog: Annotated[GatewayBacklog | None, WrapValidator(_lenient_backlog)] = None


@dataclass(frozen=True)
class TagReading:
    """One numeric value of one tag at one time (booleans become 1.0 / 0.0); a bad one may have no value."""

    ts: datetime
    tag: str
    value: float | None
    quality: Quality | None = None  # None: good


@dataclass(frozen=True)
class StateReport:
    """The machine reported this state at this time."""

    ts: datetime
    state: MachineState


@dataclass(frozen=True, slots=True)
class SampleValues:
    """One decoded sample as it came: its time, its numeric values by tag (a bad one may be None) and the
    non-good qualities by tag (None: all good)."""

    ts: datetime
    values: dict[str, float | None]
    qualities: dict[str, Quality] | None = None


class ReadingColumns(Sequence[TagReading]):
    """A message's readings kept one sample at a time (no object per value): the write path reads `samples`
    directly; a `TagReading` is made only when one is asked for (tests, SQLite, the HTTP path)."""

    __slots__ = ("_flat", "samples", "total")

    def __init__(self, samples: list[SampleValues]):
        self.samples = samples
        self.total = sum(len(sample.values) for sample in samples)
        self._flat: list[TagReading] | None = None

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[TagReading]:
        for sample in self.samples:
            qualities = sample.qualities or {}
            for tag, value in sample.values.items():
                yield TagReading(sample.ts, tag, value, qualities.get(tag))

    @overload
    def __getitem__(self, index: int) -> TagReading: ...
    @overload
    def __getitem__(self, index: slice) -> list[TagReading]: ...
    def __getitem__(self, index: int | slice) -> TagReading | list[TagReading]:
        if self._flat is None:
            self._flat = list(self)
        return self._flat[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence: like a list, not hashable

    def __repr__(self) -> str:
        return f"ReadingColumns({self.total} readings in {len(self.samples)} samples)"


@dataclass(frozen=True)
class Telemetry:
    """A decoded telemetry message."""

    site: str
    machine: str
    seq: int | None
    readings: Sequence[TagReading]
    states: list[StateReport]


@dataclass(frozen=True)
class TimeWindow:
    """How far from the receiving time a sample's source time may be."""

    max_past: timedelta
    max_future: timedelta


def _first_error(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in item["loc"]) or "payload"
    return f"schema: {location}: {item['msg']}"


def _parse(payload: bytes, model: type[TelemetryPayload] | type[StatusPayload]) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        # orjson refuses NaN and Infinity literals, which the contract forbids anyway.
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise ContractError(f"not JSON: {error}") from None
    if model is TelemetryPayload and isinstance(raw, dict) and "samples" not in raw and "ts" in raw:
        raw = {"samples": [raw]}  # the single-sample shorthand PLCs use
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise ContractError(_first_error(error)) from None


# Tags already checked against TAG_PATTERN: a plant has a few thousand, each checked once (bounded all the same).
_KNOWN_TAGS: set[str] = set()
_KNOWN_TAGS_MAX = 100_000
_FLOAT = {float}


def _check_tags(index: int, tags: Iterable[str]) -> None:
    for tag in tags:
        if tag not in _KNOWN_TAGS:
            if not _TAG.match(tag):
                raise ContractError(f"samples.{index}.values: tag {tag[:80]!r} is not {TAG_PATTERN}")
            if len(_KNOWN_TAGS) >= _KNOWN_TAGS_MAX:
                _KNOWN_TAGS.clear()
            _KNOWN_TAGS.add(tag)


def _all_finite_floats(values: dict[str, Any]) -> bool:
    """The common sample: every value a finite float (checked in C: the set of types, then one fsum)."""
    numbers = values.values()
    if set(map(type, numbers)) != _FLOAT:
        return False
    try:
        return math.isfinite(math.fsum(numbers))
    except OverflowError:  # finite values whose sum overflows: let the per-value path decide
        return False


def decode_telemetry(topic: str, payload: bytes, *, received_at: datetime, window: TimeWindow) -> Telemetry:
    """Check a telemetry message against the contract and split it into readings and state changes.

    One pass over the samples: a sample of finite floats without qualities (the usual one) is kept as its dict;
    only the others are looked at value by value.
    """
    info = parse_topic(topic)
    if info.kind is not TopicKind.TELEMETRY:
        raise ContractError(f"not a telemetry topic: {topic[:200]!r}")
    message: TelemetryPayload = _parse(payload, TelemetryPayload)
    earliest, latest = received_at - window.max_past, received_at + window.max_future
    samples: list[SampleValues] = []
    states: list[StateReport] = []
    for index, sample in enumerate(message.samples):
        if not earliest <= sample.ts <= latest:
            raise ContractError(
                f"samples.{index}.ts {sample.ts.isoformat()} is outside the accepted window "
                f"({earliest.isoformat()} .. {latest.isoformat()})"
            )
        raw = sample.values
        if not _KNOWN_TAGS.issuperset(raw):
            _check_tags(index, raw)
        if sample.quality is None and STATE_TAG not in raw and _all_finite_floats(raw):
            samples.append(SampleValues(sample.ts, raw))  # type: ignore[arg-type]  # checked: all floats
            continue
        qualities = _qualities(index, sample)
        values: dict[str, float | None] = {}
        for tag, value in raw.items():
            quality = qualities.get(tag)
            if value is None:
                if quality is None or quality.level is not QualityLevel.BAD:
                    raise ContractError(f"samples.{index}.values.{tag}: null is allowed only with quality bad")
                values[tag] = None
            elif tag == STATE_TAG:
                if not isinstance(value, str) or value not in MachineState.__members__.values():
                    raise ContractError(
                        f"samples.{index}.values.state must be one of {', '.join(s.value for s in MachineState)}"
                    )
                states.append(StateReport(sample.ts, MachineState(value)))
            elif isinstance(value, bool):
                values[tag] = 1.0 if value else 0.0
            elif isinstance(value, str):
                raise ContractError(f"samples.{index}.values.{tag}: text is allowed only for 'state'")
            elif not math.isfinite(value):
                raise ContractError(f"samples.{index}.values.{tag}: not a finite number")
            else:
                values[tag] = float(value)
        if values:
            samples.append(SampleValues(sample.ts, values, qualities or None))
    return Telemetry(info.site, info.machine, message.seq, ReadingColumns(samples), states)


def _qualities(index: int, sample: SamplePayload) -> dict[str, Quality]:
    """The sample's non-good qualities by tag; good ones are left out (good is what a missing entry means)."""
    found: dict[str, Quality] = {}
    for tag, given in (sample.quality or {}).items():
        if tag not in sample.values:
            raise ContractError(f"samples.{index}.quality.{tag[:80]}: no such tag in values")
        if tag == STATE_TAG:
            raise ContractError(f"samples.{index}.quality.state: a state has no quality (leave a doubtful one out)")
        quality = (
            Quality(QualityLevel[given.upper()])
            if isinstance(given, str)
            else Quality(QualityLevel[given.level.upper()], given.code, given.detail)
        )
        if quality.level is not QualityLevel.GOOD:
            found[tag] = quality
    return found


def decode_status(topic: str, payload: bytes) -> tuple[TopicInfo, StatusPayload]:
    """Check a status message (machine or gateway)."""
    info = parse_topic(topic)
    if info.kind is TopicKind.TELEMETRY:
        raise ContractError(f"not a status topic: {topic[:200]!r}")
    status: StatusPayload = _parse(payload, StatusPayload)
    return info, status


def encode_status(
    online: bool, *, will: bool = False, ts: datetime | None = None, backlog: Mapping[str, Any] | None = None
) -> bytes:
    """A status payload (retained): `{"online": …, "ts": …}`; a will message, written at connect, has no time.

    A gateway adds its disk buffer's `backlog` figures (see docs/mqtt_contract.md); readers ignore what they do
    not know (`StatusPayload` has extra="ignore").
    """
    if will:
        return orjson.dumps({"online": online})
    when = ts if ts is not None else utcnow()
    body: dict[str, Any] = {"online": online, "ts": when.isoformat()}
    if backlog is not None:
        body["backlog"] = dict(backlog)
    return orjson.dumps(body)


def encode_telemetry(samples: list[dict[str, Any]], *, seq: int | None = None) -> bytes:
    """The payload publishers send (used by the gateway, the simulators and the load generator)."""
    body: dict[str, Any] = {"samples": samples}
    if seq is not None:
        body["seq"] = seq
    return orjson.dumps(body)

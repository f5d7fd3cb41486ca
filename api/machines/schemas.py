"""What the machine endpoints accept and return."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from api.machines.history import MAX_TAGS, Agg, Readings
from api.planttime import PlantDateTime
from api.schemas import InputModel
from core.contract import CODE_PATTERN, TAG_PATTERN, MachineState, QualityName

Code = Annotated[str, StringConstraints(pattern=f"^{CODE_PATTERN}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
CycleTime = Annotated[float, Field(gt=0, le=86_400, description="Ideal cycle time in seconds (for OEE performance)")]


class MachineCreate(InputModel):
    """A machine on a site; `site` and `code` are the ones in its MQTT topics."""

    site: Code
    code: Code
    name: Name
    machine_type: ShortText | None = None
    location: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    ideal_cycle_time_s: CycleTime | None = None
    send_job_data_on_start: bool = Field(
        default=False, description="When a stage starts on it, send its job data (commands; see writable tags)"
    )


class MachineUpdate(InputModel):
    """Change a machine's description; its site and code stay (they are its topic)."""

    name: Name | None = None
    machine_type: ShortText | None = None
    location: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    ideal_cycle_time_s: CycleTime | None = None
    send_job_data_on_start: bool | None = None


class MachineRead(BaseModel):
    """A machine with what the broker last said of it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    site: str
    code: str
    name: str
    machine_type: str | None
    location: str | None
    ideal_cycle_time_s: float | None
    auto_registered: bool
    online: bool | None
    status_changed_at: datetime | None
    last_seen_at: datetime | None
    archived_at: datetime | None
    created_at: datetime
    send_job_data_on_start: bool = False
    state: str | None = Field(default=None, description="The last state the machine reported")
    state_since: datetime | None = Field(default=None, description="When it entered that state")
    running_stage_id: int | None = Field(
        default=None, description="The stage in progress (or paused) on it; for a worker only their own"
    )


class ApiKeyCreate(InputModel):
    """A new key; by default every earlier key of the machine is revoked (rotation)."""

    revoke_others: bool = True


class ApiKeyRead(BaseModel):
    """A key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """A new key: `key` is shown this once and stored only as a hash."""

    key: str


class StreamTicketRead(BaseModel):
    """A single-use ticket for one live stream: open `url` (the stream with `?ticket=`) within `expires_in` seconds."""

    ticket: str
    expires_in: int
    url: str


class IngestResultRead(BaseModel):
    """What a posted batch changed."""

    readings_offered: int
    readings_inserted: int
    duplicates: int
    states_inserted: int
    conflicts: int = Field(default=0, description="Readings for a stored time with another value: the first stays")
    not_good: int = Field(default=0, description="Readings stored with quality uncertain or bad")
    out_of_range: int = Field(default=0, description="Good values outside the tag's range, stored as bad")


class TagRangeIn(InputModel):
    """A tag's engineering range: values outside [low, high] are stored with quality bad and counted."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)


class TagRangeRead(BaseModel):
    """A tag's engineering range on a machine."""

    model_config = ConfigDict(from_attributes=True)

    tag: str
    low: float
    high: float


# Machine history. Query values are parsed here; rules that depend on the range live in api/machines/history.py.

HISTORY_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
HISTORY_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
_TAG = re.compile(f"^{TAG_PATTERN}$")


def _in_history_range(value: datetime) -> datetime:
    # Far-off years would overflow when converted to UTC or widened to whole buckets.
    if not HISTORY_EARLIEST <= value < HISTORY_LATEST:
        raise ValueError("must be from 1970-01-01T00:00:00Z and before 9999-01-01T00:00:00Z")
    return value.astimezone(UTC)


def _comma_items(value: object) -> list[str]:
    # A query parameter arrives as a list of its occurrences: `tags=a,b` and `tags=a&tags=b` mean the same.
    parts: list[str] = []
    for item in value if isinstance(value, list | tuple) else [value]:
        if not isinstance(item, str):
            raise ValueError("must be text")
        parts.extend(item.split(","))
    return parts


def _tag_list(value: object) -> list[str]:
    tags = list(dict.fromkeys(_comma_items(value)))
    for tag in tags:
        if not _TAG.match(tag):
            raise ValueError(f"{tag[:80]!r} is not a tag name ({TAG_PATTERN})")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    return tags


def _agg_list(value: object) -> list[Agg]:
    names = list(dict.fromkeys(_comma_items(value)))
    known = {agg.value for agg in Agg}
    for name in names:
        if name not in known:
            raise ValueError(f"{name[:80]!r} is not one of {', '.join(agg.value for agg in Agg)}")
    return [Agg(name) for name in names]


Moment = Annotated[PlantDateTime, AfterValidator(_in_history_range)]
TagList = Annotated[tuple[str, ...], BeforeValidator(_tag_list)]
AggList = Annotated[tuple[Agg, ...], BeforeValidator(_agg_list)]


class LatestValueRead(BaseModel):
    """The newest value of one tag and its source time."""

    model_config = ConfigDict(from_attributes=True)

    tag: str
    ts: datetime
    value: float | None = Field(description="None only when the quality is bad: the device gave no value")
    quality: QualityName = Field(default="good", description="good, uncertain or bad, as the device or gateway said")


class CurrentStateRead(BaseModel):
    """The state the machine is in and since when."""

    model_config = ConfigDict(from_attributes=True)

    state: MachineState
    since: datetime


class LatestRead(BaseModel):
    """A machine's latest value of each tag (sorted by tag) and its current state (null before any state)."""

    model_config = ConfigDict(from_attributes=True)

    machine_id: int
    values: list[LatestValueRead]
    state: CurrentStateRead | None


class PointRead(BaseModel):
    """A bucket (`t` is its start; only the asked aggregates appear, computed over good values, and `not_good`, how
    many uncertain or bad readings the bucket also held) or a raw reading (`t`, `value`, and `quality` when it is not
    good; a bad reading's value may be null)."""

    model_config = ConfigDict(from_attributes=True)

    t: datetime
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    last: float | None = None
    count: int | None = None
    not_good: int | None = None
    value: float | None = None
    quality: Literal["uncertain", "bad"] | None = None


class SeriesRead(BaseModel):
    """The points of one tag, oldest first (empty when the tag has no readings in the range)."""

    model_config = ConfigDict(from_attributes=True)

    tag: str
    points: list[PointRead]


class ReadingsRead(BaseModel):
    """Series per tag; `bucket` is the size used (what `auto` chose) and `from` / `to` the range answered."""

    model_config = ConfigDict(from_attributes=True)

    machine_id: int
    bucket: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    series: list[SeriesRead]


def readings_json(readings: Readings) -> bytes:
    """The body of `ReadingsRead` (the documented shape, byte for byte what pydantic writes), in one orjson pass.

    The points are the service's plain dicts: validating a model per point cost more than the query itself.
    """
    return orjson.dumps(
        {
            "machine_id": readings.machine_id,
            "bucket": readings.bucket.value,
            "from": readings.start,
            "to": readings.end,
            "series": [{"tag": series.tag, "points": series.points} for series in readings.series],
        },
        option=orjson.OPT_UTC_Z,
    )


def readings_csv(readings: Readings) -> str:
    """The series as CSV: a header `tag,t,<columns>`, one row per point, times as in the JSON."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["tag", "t", *readings.columns])
    for series in readings.series:
        for point in series.points:
            # A good raw reading has no `quality` key (the JSON leaves it out): the CSV says good.
            row = [point.get(column, "good" if column == "quality" else None) for column in readings.columns]
            writer.writerow([series.tag, _json_time(point["t"]), *row])
    return out.getvalue()


def _json_time(moment: datetime) -> str:
    # As orjson (and pydantic) write it: ISO 8601, microseconds only when there are some, UTC as `Z`.
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class IntervalRead(BaseModel):
    """A state held over [start, end)."""

    model_config = ConfigDict(from_attributes=True)

    state: MachineState
    start: datetime
    end: datetime
    duration_s: float


class TimelineRead(BaseModel):
    """The states over the window (the last interval ends at `to` or now, whichever is first) and seconds per state."""

    model_config = ConfigDict(from_attributes=True)

    machine_id: int
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    timeline: list[IntervalRead]
    totals: dict[str, float]

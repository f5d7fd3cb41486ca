"""Report by exception: send a tag's value only when it changed enough, or when its periodic refresh is due.

Pure code: no clock (the caller passes `now`), no I/O. Grouping turns the accepted values into contract samples,
chunked so every chunk is one valid MQTT telemetry message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from core.contract import MAX_PAYLOAD_BYTES, MAX_SAMPLES, MAX_VALUES_PER_SAMPLE, Quality, QualityLevel
from gateway.sources.base import TagValue

# Room kept in every chunk for `{"samples":[...]}` and a `"seq"` of up to 19 digits around the samples.
_ENVELOPE_BYTES = 64


@dataclass
class _Sent:
    value: float | bool | str | None
    at: float
    quality: Quality | None


class ChangeFilter:
    """Remembers the last value SENT per tag and lets through only what must be reported.

    A value passes when it is the first for its tag; when it differs from the last sent value by more than the
    tag's deadband (numbers; a None or 0 deadband, or a tag without an entry, means any change); when a bool or
    a text changes (or the value changes type); or when the tag's last send is at least `full_refresh_s` old.
    Comparing with the last *sent* value, not the last seen one, means a slow drift is still reported once it
    has crossed the deadband. NaN and infinities are dropped (the contract forbids them) and counted. A change of
    quality is a change: a value turning bad (or good again) is always reported.
    """

    def __init__(self, full_refresh_s: float, deadbands: dict[str, float | None]) -> None:
        if not full_refresh_s > 0:
            raise ValueError(f"full_refresh_s must be > 0, not {full_refresh_s!r}")
        negative = sorted(tag for tag, band in deadbands.items() if band is not None and not band >= 0)
        if negative:
            raise ValueError(f"deadbands must be >= 0: {', '.join(negative)}")
        self.full_refresh_s = full_refresh_s
        self.deadbands = dict(deadbands)
        self.dropped_non_finite = 0
        self._sent: dict[str, _Sent] = {}

    def accept(self, values: Sequence[TagValue], now: float) -> list[TagValue]:
        """The values to send, in input order; `now` is seconds on a monotonic clock."""
        accepted: list[TagValue] = []
        for item in values:
            value = item.value
            if isinstance(value, float | int) and not isinstance(value, bool) and not math.isfinite(value):
                self.dropped_non_finite += 1
                continue
            last = self._sent.get(item.tag)
            if (
                last is None
                or now - last.at >= self.full_refresh_s
                or last.quality != item.quality
                or self._changed(item.tag, last.value, value)
            ):
                self._sent[item.tag] = _Sent(value, now, item.quality)
                accepted.append(item)
        return accepted

    def _changed(self, tag: str, last: float | bool | str | None, value: float | bool | str | None) -> bool:
        # bool is an int in Python: a bool or a text is compared as such, and a change of kind is a change.
        if value is None or last is None or isinstance(value, bool | str) or isinstance(last, bool | str):
            return type(value) is not type(last) or value != last
        deadband = self.deadbands.get(tag)
        if not deadband:
            return value != last
        return abs(value - last) > deadband


def format_ts(ts: datetime) -> str:
    """ISO 8601 in UTC with a `Z`: milliseconds, or microseconds when the source has them (never rounded)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no timezone; the contract requires one")
    spec = "milliseconds" if ts.microsecond % 1000 == 0 else "microseconds"
    return ts.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def group_samples(
    values: Sequence[TagValue], max_samples: int, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> list[list[dict[str, Any]]]:
    """Contract samples `{"ts", "values"[, "quality"]}` in time order, one per source time, chunked into messages.

    Tags of the same ts share a sample (the last value wins if a tag repeats within one ts). A chunk holds at most
    `max_samples` samples and stays under `max_payload_bytes` once encoded; a ts with more than the contract's
    MAX_VALUES_PER_SAMPLE tags becomes several samples with that ts. Each chunk is one MQTT message.
    """
    if not 1 <= max_samples <= MAX_SAMPLES:
        raise ValueError(f"max_samples must be within 1..{MAX_SAMPLES}, not {max_samples!r}")
    by_ts: dict[datetime, dict[str, TagValue]] = {}
    for item in values:
        value = item.value
        if isinstance(value, float | int) and not isinstance(value, bool) and not math.isfinite(value):
            raise ValueError(f"{item.tag}: {item.value!r} is not a finite number (filter values first)")
        if value is None and (item.quality is None or item.quality.level is not QualityLevel.BAD):
            raise ValueError(f"{item.tag}: a value may be missing only when its quality is bad")
        format_ts(item.ts)  # refuses a naive datetime before it is used as a key next to aware ones
        by_ts.setdefault(item.ts, {})[item.tag] = item

    samples: list[dict[str, Any]] = []
    for ts in sorted(by_ts):
        text = format_ts(ts)
        tags = list(by_ts[ts].values())
        for start in range(0, len(tags), MAX_VALUES_PER_SAMPLE):
            part = tags[start : start + MAX_VALUES_PER_SAMPLE]
            sample: dict[str, Any] = {"ts": text, "values": {item.tag: item.value for item in part}}
            quality = {
                item.tag: item.quality.encode()
                for item in part
                if item.quality is not None and item.quality.level is not QualityLevel.GOOD
            }
            if quality:
                sample["quality"] = quality
            samples.append(sample)

    chunks: list[list[dict[str, Any]]] = []
    chunk: list[dict[str, Any]] = []
    chunk_bytes = _ENVELOPE_BYTES
    for sample in samples:
        size = len(orjson.dumps(sample)) + 1  # and its comma
        if chunk and (len(chunk) >= max_samples or chunk_bytes + size > max_payload_bytes):
            chunks.append(chunk)
            chunk, chunk_bytes = [], _ENVELOPE_BYTES
        chunk.append(sample)
        chunk_bytes += size
    if chunk:
        chunks.append(chunk)
    return chunks

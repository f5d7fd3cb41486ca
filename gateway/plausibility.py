"""Plausibility of tag values: engineering ranges, and how a gateway flag joins the quality a device gave.

Pure code shared by every source. The gateway applies the configured ranges to every batch once, before report by
exception, so a value that leaves its range is reported even when it moved less than its deadband.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from core.contract import Quality, QualityLevel
from gateway.sources.base import TagValue

# A number outside its tag's configured range: kept, but marked as not to be trusted.
OUT_OF_RANGE = Quality(QualityLevel.BAD, None, "out_of_range")
# A device or server clock too far from the gateway's: the value carries the gateway's read time instead.
CLOCK_SKEW = Quality(QualityLevel.UNCERTAIN, None, "clock_skew")


def flagged(current: Quality | None, flag: Quality) -> Quality:
    """`flag`, unless the value already has a quality at least as bad (the device's own reason is kept then)."""
    if current is not None and current.level >= flag.level:
        return current
    return flag


def check_ranges(
    values: Sequence[TagValue], ranges: Mapping[str, tuple[float, float]]
) -> tuple[list[TagValue], list[TagValue]]:
    """All values, every number outside its tag's inclusive range flagged bad "out_of_range" (its value kept);
    and the flagged ones. Booleans, texts (the state) and missing values have no range."""
    if not ranges:
        return list(values), []
    checked: list[TagValue] = []
    outside: list[TagValue] = []
    for item in values:
        bounds = ranges.get(item.tag)
        value = item.value
        if (
            bounds is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and not bounds[0] <= value <= bounds[1]
        ):
            item = replace(item, quality=flagged(item.quality, OUT_OF_RANGE))
            outside.append(item)
        checked.append(item)
    return checked, outside

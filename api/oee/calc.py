"""OEE arithmetic, pure: availability, performance and quality of one machine over a window (see docs/metrics.md).

No database, no clock: the caller passes the window, the state changes, the counter readings and the ideal cycle
time. Durations are exact here; the API rounds what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

from core.contract import MachineState

UNKNOWN = "unknown"
DOWNTIME_STATES = (MachineState.ALARM, MachineState.SETUP, MachineState.IDLE)
_ZERO = timedelta(0)


@dataclass(frozen=True)
class StatePoint:
    """The machine entered `state` at `ts`; it holds until the next change."""

    ts: datetime
    state: MachineState


@dataclass(frozen=True)
class CounterPoint:
    """One reading of a counter tag."""

    ts: datetime
    value: float


@dataclass(frozen=True)
class Counter:
    """A counter tag and its readings (any order; readings outside the window are ignored as the rules say)."""

    tag: str
    readings: Sequence[CounterPoint] = ()


@dataclass(frozen=True)
class Increase:
    """How much a counter rose over a window, and how often it was reset on the way."""

    count: float
    resets: int


@dataclass(frozen=True)
class Oee:
    """OEE of a machine over [start, end): time per state, counts, the three factors and why any is null."""

    start: datetime
    end: datetime
    planned_production: timedelta
    running: timedelta
    downtime: dict[str, timedelta]
    off: timedelta
    ideal_cycle_time_s: float | None
    total_count: int | None
    good_count: int | None
    scrap_count: int | None
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def window(self) -> timedelta:
        """The length of the window."""
        return self.end - self.start


def counter_increase(readings: Sequence[CounterPoint], *, start: datetime, end: datetime) -> Increase | None:
    """The rise of a counter over [start, end), summed over its monotonic runs; None without any usable reading.

    The last reading before `start` is the value at `start`; the readings in [start, end) follow. So every rise is
    counted in the window where its reading lands, and adjacent windows add up. A drop is a reset (a restarted PLC):
    counting goes on from the new value, as if from 0. Never negative.
    """
    ordered = sorted(readings, key=lambda sample: sample.ts)
    baseline = [sample for sample in ordered if sample.ts < start][-1:]
    values = [sample.value for sample in baseline + [s for s in ordered if start <= s.ts < end]]
    if not values:
        return None
    count, resets = 0.0, 0
    for previous, value in pairwise(values):
        if value >= previous:
            count += value - previous
        else:
            count += max(value, 0.0)
            resets += 1
    return Increase(count=count, resets=resets)


def _merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(intervals):
        if high <= low:
            continue
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def state_durations(
    changes: Sequence[StatePoint],
    *,
    start: datetime,
    end: datetime,
    heard: Sequence[datetime] = (),
    max_silence: timedelta = _ZERO,
) -> dict[str, timedelta]:
    """Time in each state over [start, end), plus `unknown`: the time no state was known.

    A state is known from its change until the next one. With `max_silence` > 0 it is known only while the machine
    is heard from: each state change and each moment in `heard` vouches for the following `max_silence`; the rest of
    a longer silence is unknown. Before the first change everything is unknown.
    """
    totals = {state.value: _ZERO for state in MachineState} | {UNKNOWN: _ZERO}
    if end <= start:
        return totals
    ordered = sorted(changes, key=lambda change: change.ts)
    bounds = [change.ts for change in ordered[1:]] + [end] if ordered else []
    held = [
        (max(change.ts, start), min(until, end), change.state)
        for change, until in zip(ordered, bounds, strict=True)
        if until > start and change.ts < end
    ]
    if max_silence > _ZERO:
        moments = [*heard, *(change.ts for change in ordered)]
        covered = _merge((max(moment, start), min(moment + max_silence, end)) for moment in moments)
    else:
        covered = [(start, end)]
    known = _ZERO
    index = 0
    for low, high, state in held:  # both lists are sorted and disjoint: one pass
        while index < len(covered) and covered[index][1] <= low:
            index += 1
        probe = index
        while probe < len(covered) and covered[probe][0] < high:
            overlap = min(high, covered[probe][1]) - max(low, covered[probe][0])
            if overlap > _ZERO:
                totals[state.value] += overlap
                known += overlap
            probe += 1
    totals[UNKNOWN] = (end - start) - known
    return totals


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _counts(
    total: Counter, good: Counter, scrap: Counter, *, start: datetime, end: datetime, notes: list[str]
) -> tuple[int | None, int | None, int | None]:
    """Total, good and scrap parts; a missing counter is derived from the other two where it can be."""
    rises = {counter.tag: counter_increase(counter.readings, start=start, end=end) for counter in (total, good, scrap)}
    for tag, rise in rises.items():
        if rise is not None and rise.resets:
            notes.append(f"{tag} was reset {rise.resets} time(s) in the window; counted on from the value after each")
    made, fine, scrapped = (rises[counter.tag] for counter in (total, good, scrap))
    total_n = round(made.count) if made is not None else None
    good_n = round(fine.count) if fine is not None else None
    scrap_n = round(scrapped.count) if scrapped is not None else None
    if total_n is None and good_n is not None and scrap_n is not None:
        total_n = good_n + scrap_n
        notes.append(f"no {total.tag} readings: total count = {good.tag} + {scrap.tag}")
    if good_n is None and total_n is not None and scrap_n is not None:
        good_n = max(total_n - scrap_n, 0)
        notes.append(f"no {good.tag} readings: good count = total - {scrap.tag}")
    if scrap_n is None and total_n is not None and good_n is not None:
        scrap_n = max(total_n - good_n, 0)
        notes.append(f"no {scrap.tag} readings: scrap count = total - {good.tag}")
    return total_n, good_n, scrap_n


def compute_oee(
    *,
    start: datetime,
    end: datetime,
    changes: Sequence[StatePoint],
    total: Counter,
    good: Counter,
    scrap: Counter,
    ideal_cycle_time_s: float | None,
    max_silence: timedelta = _ZERO,
    subject: str = "the machine",
) -> Oee:
    """Availability * performance * quality over [start, end); every null factor gets a note saying why.

    availability = running / planned production time (the window less off and unknown time);
    performance = ideal cycle time * total count / running time (may exceed 1: reported as is);
    quality = good / total.
    """
    notes: list[str] = []
    heard = [sample.ts for counter in (total, good, scrap) for sample in counter.readings]
    seconds = state_durations(changes, start=start, end=end, heard=heard, max_silence=max_silence)
    running = seconds[MachineState.RUNNING.value]
    downtime = {state.value: seconds[state.value] for state in DOWNTIME_STATES} | {UNKNOWN: seconds[UNKNOWN]}
    planned = running + sum((seconds[state.value] for state in DOWNTIME_STATES), _ZERO)
    if seconds[UNKNOWN] > _ZERO:
        rule = f", or silent for more than {max_silence.total_seconds():g} s" if max_silence > _ZERO else ""
        notes.append(
            f"{seconds[UNKNOWN].total_seconds():g} s with no known state (before the first state change{rule}): "
            "not planned production time"
        )
    total_n, good_n, scrap_n = _counts(total, good, scrap, start=start, end=end, notes=notes)

    availability = _ratio(running.total_seconds(), planned.total_seconds())
    if availability is None:
        notes.append(f"no planned production time ({subject} off or its state unknown all along): availability is null")

    performance = None
    if ideal_cycle_time_s is None:
        notes.append(f"no ideal cycle time set for {subject}: performance is null")
    elif running <= _ZERO:
        notes.append("no running time in the window: performance is null")
    elif total_n is None:
        notes.append(f"no {total.tag} readings, and no {good.tag} and {scrap.tag} to add up: performance is null")
    else:
        performance = ideal_cycle_time_s * total_n / running.total_seconds()
        if performance > 1:
            notes.append(
                f"performance is above 1 ({performance:.4g}): more parts than the ideal cycle time allows; "
                f"check the ideal cycle time of {subject}"
            )

    quality = None
    if total_n is None or good_n is None:
        notes.append(f"no {good.tag} readings, and no {total.tag} and {scrap.tag} to derive it from: quality is null")
    elif total_n == 0:
        notes.append("no parts counted in the window: quality is null")
    else:
        quality = good_n / total_n
        if quality > 1:
            notes.append(f"{good.tag} rose more than the total count: quality is above 1; check the counter tags")

    oee = None
    if availability is not None and performance is not None and quality is not None:
        oee = availability * performance * quality
    return Oee(
        start=start,
        end=end,
        planned_production=planned,
        running=running,
        downtime=downtime,
        off=seconds[MachineState.OFF.value],
        ideal_cycle_time_s=ideal_cycle_time_s,
        total_count=total_n,
        good_count=good_n,
        scrap_count=scrap_n,
        availability=availability,
        performance=performance,
        quality=quality,
        oee=oee,
        notes=notes,
    )

"""Stops of a machine from its state changes, and the reasons they can be given (pure: no I/O, no clock).

A **stop** runs from the moment a machine leaves `running` for `idle`, `setup` or `alarm` until it runs again (a
machine going through several of those states in a row has one stop). `off` ends a stop without being one: a machine
switched off is not producing, but whether that was planned is the calendar's business, not the state tag's.
A stop longer than the micro-stop threshold (`MICRO_STOP_S`, default 120 s) is a **downtime event** that someone
classifies with a reason; a shorter one is a **minor stop**, counted as a performance loss and never asked about.

A machine that reports no state at all is judged by its cycle counter instead (`states_from_counter`): it runs
while the counter rises, and a **stall** (the counter not rising for longer than twice the ideal cycle time, or
`DEFAULT_STALL` without one, and never less than twice the usual time between readings) is an `idle` stop from
when the next part was due (the last rise plus one ideal cycle) until the parts of the next rise began (the
reading that shows it, less the ideal time its parts beyond the first took).

Data gaps stay unknown, never `running` and never stopped: with `max_silence`, a state is known only while the
machine is heard from (each change or reading vouches for the following `max_silence`), so a stop whose machine
falls silent ends where the silence begins, marked `cut_by_silence`.

The reasons follow the six big losses. Each reason belongs to one category: a planned stop is excluded from planned
production time (a break, no order, planned maintenance); availability, performance and quality losses lower their
factor of the OEE.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.contract import MachineState

ZERO = timedelta(0)
STOP_STATES = frozenset({MachineState.IDLE, MachineState.SETUP, MachineState.ALARM})
DEFAULT_MICRO_STOP = timedelta(seconds=120)
# Without an ideal cycle time, a counter that does not rise for this long has stalled.
DEFAULT_STALL = timedelta(seconds=120)


@dataclass(frozen=True)
class StateChange:
    """The machine entered `state` at `ts`; it holds until the next change."""

    ts: datetime
    state: MachineState


@dataclass(frozen=True)
class Stop:
    """A run of stop states; `end` is None while it lasts (open at the time asked about)."""

    start: datetime
    end: datetime | None
    states: tuple[MachineState, ...]
    cut_by_silence: bool = False

    def duration(self, now: datetime) -> timedelta:
        """How long it lasted, or has lasted until `now` while open."""
        return (self.end or now) - self.start


@dataclass(frozen=True)
class Stops:
    """What the state changes up to a moment show: downtime events, minor stops, and a stop too young to say."""

    events: list[Stop]
    minor: list[Stop]
    pending: Stop | None


def detect_stops(
    changes: Sequence[StateChange],
    *,
    now: datetime,
    micro_stop: timedelta = DEFAULT_MICRO_STOP,
    heard: Sequence[datetime] = (),
    max_silence: timedelta = ZERO,
) -> Stops:
    """Split the stops in `changes` (up to `now`) into downtime events (longer than `micro_stop`) and minor stops.

    A stop still running at `now` is an open event once it is longer than `micro_stop`, else `pending`.
    """
    if micro_stop < ZERO:
        raise ValueError("micro_stop cannot be negative")
    ordered = sorted((change for change in changes if change.ts <= now), key=lambda change: change.ts)
    moments = sorted({*(moment for moment in heard if moment <= now), *(change.ts for change in ordered)})
    stops: list[Stop] = []
    start: datetime | None = None
    states: list[MachineState] = []
    for change in ordered:
        if start is not None:
            silence = _silence_between(moments, start, change.ts, max_silence)
            if silence is not None:  # the machine fell silent while stopped: the stop ends there
                stops.append(Stop(start, silence, tuple(states), cut_by_silence=True))
                start, states = None, []
        if change.state in STOP_STATES:
            if start is None:
                start, states = change.ts, []
            if not states or states[-1] is not change.state:
                states.append(change.state)
        elif start is not None:
            stops.append(Stop(start, change.ts, tuple(states)))
            start, states = None, []
    pending: Stop | None = None
    if start is not None:
        silence = _silence_between(moments, start, now, max_silence)
        if silence is not None:
            stops.append(Stop(start, silence, tuple(states), cut_by_silence=True))
        else:
            pending = Stop(start, None, tuple(states))
    events = [stop for stop in stops if stop.duration(now) > micro_stop]
    minor = [stop for stop in stops if stop.duration(now) <= micro_stop]
    if pending is not None and pending.duration(now) > micro_stop:
        events.append(pending)
        pending = None
    return Stops(events=events, minor=minor, pending=pending)


def states_from_counter(
    readings: Sequence[tuple[datetime, float]], *, now: datetime, ideal_cycle: timedelta | None = None
) -> list[StateChange]:
    """The state changes a cycle counter implies for a machine without a state tag (see the module's rules).

    `readings` are (time, value) of the counter; a value below the one before is a counter reset, which counts as a
    rise of one. The machine is taken as running from its first reading. Between two rises, the time the parts of
    the second rise needed at the ideal cycle is running time; what is left beyond the stall threshold is a stop,
    from when the next part was due. The threshold is never below twice the usual time between readings, so a
    counter read less often than the machine makes parts is not a string of stops. A stall still going on at `now`
    is an open stop.
    """
    ordered = sorted((reading for reading in readings if reading[0] <= now), key=lambda reading: reading[0])
    if not ordered:
        return []
    cycle = ideal_cycle if ideal_cycle is not None and ideal_cycle > ZERO else None
    gaps = sorted(later[0] - earlier[0] for earlier, later in itertools.pairwise(ordered))
    usual_read = gaps[len(gaps) // 2] if gaps else ZERO
    stall = max(2 * cycle if cycle is not None else DEFAULT_STALL, 2 * usual_read)
    due = cycle or ZERO
    changes = [StateChange(ordered[0][0], MachineState.RUNNING)]
    last_rise, last_value = ordered[0]
    for ts, value in ordered[1:]:
        if value == last_value:
            continue
        parts = value - last_value if value > last_value else 1.0
        # The parts of this rise beyond the first took their ideal time before `ts`: that is running, not a stall.
        earlier_parts = due * (parts - 1) if cycle is not None else ZERO
        if ts - last_rise - earlier_parts > stall:
            changes.append(StateChange(last_rise + due, MachineState.IDLE))
            changes.append(StateChange(ts - earlier_parts, MachineState.RUNNING))
        last_rise, last_value = ts, value
    if now - last_rise > stall:
        changes.append(StateChange(last_rise + due, MachineState.IDLE))
    return changes


def _silence_between(moments: Sequence[datetime], start: datetime, end: datetime, limit: timedelta) -> datetime | None:
    """Where the first silence longer than `limit` begins in [start, end] (moments vouch for `limit` each)."""
    if limit <= ZERO:
        return None
    last = max((moment for moment in moments if moment <= start), default=start)
    for moment in moments:
        if moment <= start:
            continue
        if moment > end:
            break
        if moment - last > limit:
            return last + limit
        last = moment
    return last + limit if end - last > limit else None


class LossCategory(StrEnum):
    """The six big losses grouped by the OEE factor they lower, and the planned stops that are no loss."""

    PLANNED_STOP = "planned_stop"  # excluded from planned production time
    AVAILABILITY = "availability"  # breakdowns, setup and changeover, material shortage
    PERFORMANCE = "performance"  # minor stops, reduced speed
    QUALITY = "quality"  # start-up rejects, production rejects


@dataclass(frozen=True)
class Reason:
    """A downtime or scrap reason: a code, its category, and what it is called in Turkish and English."""

    code: str
    category: LossCategory
    label_tr: str
    label_en: str


# A sensible default for injection moulding and assembly; a plant replaces or extends it.
DEFAULT_REASONS: tuple[Reason, ...] = (
    Reason("break", LossCategory.PLANNED_STOP, "Mola", "Break"),
    Reason("no_order", LossCategory.PLANNED_STOP, "İş emri yok", "No order"),
    Reason("planned_maintenance", LossCategory.PLANNED_STOP, "Planlı bakım", "Planned maintenance"),
    Reason("breakdown", LossCategory.AVAILABILITY, "Arıza", "Breakdown"),
    Reason("mould_change", LossCategory.AVAILABILITY, "Kalıp değişimi", "Mould change"),
    Reason("setup", LossCategory.AVAILABILITY, "Ayar / hazırlık", "Setup / changeover"),
    Reason("material_shortage", LossCategory.AVAILABILITY, "Malzeme eksik", "Material shortage"),
    Reason("waiting_operator", LossCategory.AVAILABILITY, "Operatör bekleniyor", "Waiting for operator"),
    Reason("minor_stop", LossCategory.PERFORMANCE, "Kısa duruş", "Minor stop"),
    Reason("reduced_speed", LossCategory.PERFORMANCE, "Düşük hız", "Reduced speed"),
    Reason("startup_rejects", LossCategory.QUALITY, "Başlangıç hurdası", "Start-up rejects"),
    Reason("production_rejects", LossCategory.QUALITY, "Üretim hurdası", "Production rejects"),
    # Scrap reasons a worker picks on `done`: injection moulding, then assembly.
    Reason("short_shot", LossCategory.QUALITY, "Eksik baskı", "Short shot"),
    Reason("flash", LossCategory.QUALITY, "Çapak", "Flash"),
    Reason("sink_marks", LossCategory.QUALITY, "Çöküntü", "Sink marks"),
    Reason("burn_marks", LossCategory.QUALITY, "Yanık izi", "Burn marks"),
    Reason("missing_part", LossCategory.QUALITY, "Eksik parça", "Missing part"),
    Reason("torque_fault", LossCategory.QUALITY, "Tork hatası", "Torque fault"),
)


def reason_tree(reasons: Sequence[Reason] = DEFAULT_REASONS) -> dict[LossCategory, list[Reason]]:
    """Reasons by category, in the order the worker's two taps show them (category, then reason)."""
    codes = [reason.code for reason in reasons]
    if len(set(codes)) != len(codes):
        raise ValueError("reason codes must be unique")
    return {category: [reason for reason in reasons if reason.category is category] for category in LossCategory}


def unknown_spans(
    *, first_known: datetime | None, heard: Sequence[datetime], start: datetime, end: datetime, max_silence: timedelta
) -> list[tuple[datetime, datetime]]:
    """Where no state is known in [start, end): before the first state change, and (with `max_silence` > 0) in every
    silence longer than `max_silence` after the last moment heard (each moment vouches for `max_silence`)."""
    if end <= start:
        return []
    if first_known is None or first_known >= end:
        return [(start, end)]
    spans: list[tuple[datetime, datetime]] = []
    if first_known > start:
        spans.append((start, first_known))
    if max_silence <= ZERO:
        return spans
    moments = sorted({moment for moment in heard if moment < end} | {first_known})
    for moment, following in zip(moments, [*moments[1:], end], strict=True):
        silent_from = max(moment + max_silence, start)
        if following > silent_from:
            spans.append((silent_from, following))
    return spans

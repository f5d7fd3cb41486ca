"""Stops from state changes (core.downtime): downtime events, minor stops, open stops and data gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.contract import MachineState
from core.downtime import (
    DEFAULT_REASONS,
    LossCategory,
    Reason,
    StateChange,
    Stop,
    detect_stops,
    reason_tree,
    states_from_counter,
    unknown_spans,
)

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
S = timedelta(seconds=1)
RUN, IDLE, SETUP, ALARM, OFF = (
    MachineState.RUNNING,
    MachineState.IDLE,
    MachineState.SETUP,
    MachineState.ALARM,
    MachineState.OFF,
)


def timeline(*steps: tuple[int, MachineState]) -> list[StateChange]:
    """State changes at T0 + seconds."""
    return [StateChange(T0 + seconds * S, state) for seconds, state in steps]


def test_a_90_second_stop_is_minor_and_a_20_minute_stop_is_downtime() -> None:
    changes = timeline((0, RUN), (600, IDLE), (690, RUN), (1800, ALARM), (3000, RUN))
    stops = detect_stops(changes, now=T0 + 4000 * S)
    assert stops.minor == [Stop(T0 + 600 * S, T0 + 690 * S, (IDLE,))]
    assert stops.events == [Stop(T0 + 1800 * S, T0 + 3000 * S, (ALARM,))]
    assert stops.pending is None


def test_the_threshold_itself_is_still_a_minor_stop() -> None:
    stops = detect_stops(timeline((0, RUN), (10, IDLE), (130, RUN)), now=T0 + 200 * S)
    assert (len(stops.minor), len(stops.events)) == (1, 0)
    longer = detect_stops(timeline((0, RUN), (10, IDLE), (131, RUN)), now=T0 + 200 * S)
    assert (len(longer.minor), len(longer.events)) == (0, 1)


def test_stop_states_in_a_row_are_one_stop() -> None:
    changes = timeline((0, RUN), (100, ALARM), (400, SETUP), (700, IDLE), (900, RUN))
    [stop] = detect_stops(changes, now=T0 + 1000 * S).events
    assert (stop.start, stop.end, stop.states) == (T0 + 100 * S, T0 + 900 * S, (ALARM, SETUP, IDLE))


def test_a_stop_that_lasts_is_open_once_past_the_threshold_and_pending_before() -> None:
    changes = timeline((0, RUN), (100, ALARM))
    young = detect_stops(changes, now=T0 + 160 * S)
    assert (young.events, young.pending) == ([], Stop(T0 + 100 * S, None, (ALARM,)))
    old = detect_stops(changes, now=T0 + 700 * S)
    assert old.events == [Stop(T0 + 100 * S, None, (ALARM,))]
    assert old.events[0].duration(T0 + 700 * S) == 600 * S
    assert old.pending is None


def test_off_ends_a_stop_without_being_one() -> None:
    changes = timeline((0, RUN), (100, ALARM), (400, OFF), (4000, RUN), (4100, OFF))
    stops = detect_stops(changes, now=T0 + 5000 * S)
    assert stops.events == [Stop(T0 + 100 * S, T0 + 400 * S, (ALARM,))]
    assert (stops.minor, stops.pending) == ([], None)


def test_a_machine_that_starts_stopped_has_a_stop_from_its_first_change() -> None:
    [stop] = detect_stops(timeline((50, SETUP), (500, RUN)), now=T0 + 600 * S).events
    assert (stop.start, stop.end) == (T0 + 50 * S, T0 + 500 * S)


def test_a_data_gap_ends_the_stop_where_the_silence_begins() -> None:
    changes = timeline((0, RUN), (100, ALARM))
    heard = [T0 + seconds * S for seconds in range(100, 281, 10)]  # readings every 10 s until 280 s, then nothing
    stops = detect_stops(changes, now=T0 + 1300 * S, heard=heard, max_silence=30 * S)
    assert stops.events == [Stop(T0 + 100 * S, T0 + 310 * S, (ALARM,), cut_by_silence=True)]
    assert stops.pending is None
    # Heard again later, still in alarm: a new stop starts with the next change; the gap is never "running".
    again = [T0 + seconds * S for seconds in range(2000, 2301, 10)]
    later = detect_stops(
        [*changes, StateChange(T0 + 2000 * S, ALARM)], now=T0 + 2300 * S, heard=heard + again, max_silence=30 * S
    )
    assert [(stop.start, stop.end) for stop in later.events] == [(T0 + 100 * S, T0 + 310 * S), (T0 + 2000 * S, None)]


def test_changes_after_now_are_not_seen_yet() -> None:
    stops = detect_stops(timeline((0, RUN), (100, ALARM), (900, RUN)), now=T0 + 500 * S)
    assert stops.events == [Stop(T0 + 100 * S, None, (ALARM,))]


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="micro_stop"):
        detect_stops([], now=T0, micro_stop=-S)


def test_the_default_reasons_cover_the_six_big_losses_and_planned_stops() -> None:
    tree = reason_tree()
    assert list(tree) == list(LossCategory)
    assert all(tree[category] for category in LossCategory)
    codes = {reason.code for reason in DEFAULT_REASONS}
    assert {"breakdown", "setup", "minor_stop", "reduced_speed", "startup_rejects", "production_rejects"} <= codes
    assert {reason.code for reason in tree[LossCategory.PLANNED_STOP]} == {"break", "no_order", "planned_maintenance"}
    assert all(reason.label_tr and reason.label_en for reason in DEFAULT_REASONS)


def test_duplicate_reason_codes_are_refused() -> None:
    twice = (*DEFAULT_REASONS, Reason("setup", LossCategory.AVAILABILITY, "Ayar", "Setup"))
    with pytest.raises(ValueError, match="unique"):
        reason_tree(twice)


def test_unknown_spans_are_before_the_first_state_and_in_long_silences() -> None:
    heard = [T0 + seconds * S for seconds in (100, 110, 400)]
    spans = unknown_spans(first_known=T0 + 100 * S, heard=heard, start=T0, end=T0 + 1000 * S, max_silence=60 * S)
    assert spans == [(T0, T0 + 100 * S), (T0 + 170 * S, T0 + 400 * S), (T0 + 460 * S, T0 + 1000 * S)]
    assert unknown_spans(first_known=None, heard=[], start=T0, end=T0 + S, max_silence=S) == [(T0, T0 + S)]
    # Without a silence limit a state holds until the next one.
    assert unknown_spans(first_known=T0 - S, heard=[], start=T0, end=T0 + 1000 * S, max_silence=0 * S) == []


# --- machines without a state tag: the cycle counter -----------------------------------------------------------


def counter(*steps: tuple[int, float]) -> list[tuple[datetime, float]]:
    """Counter readings at T0 + seconds."""
    return [(T0 + seconds * S, value) for seconds, value in steps]


def test_a_counter_that_stops_rising_is_a_stop_from_when_the_next_part_was_due() -> None:
    # A part every 60 s, then nothing from 120 s until the reading at 1,500 s shows the next part.
    readings = counter((0, 10), (60, 11), (120, 12), (600, 12), (1200, 12), (1500, 13), (1560, 14))
    changes = states_from_counter(readings, now=T0 + 1600 * S, ideal_cycle=60 * S)
    assert changes == timeline((0, RUN), (180, IDLE), (1500, RUN))
    stops = detect_stops(changes, now=T0 + 1600 * S)
    assert stops.events == [Stop(T0 + 180 * S, T0 + 1500 * S, (IDLE,))]


def test_a_counter_slower_than_twice_its_cycle_only_then_stalls() -> None:
    # Read every 10 s. Rises 110 s apart with a 60 s cycle are slow running (a performance loss), not stops; 130 s
    # apart is a stall.
    rises = {0: 1.0, 110: 2.0, 220: 3.0, 350: 4.0}
    readings = counter(*((second, max(v for r, v in rises.items() if r <= second)) for second in range(0, 351, 10)))
    assert states_from_counter(readings, now=T0 + 360 * S, ideal_cycle=60 * S) == timeline(
        (0, RUN), (280, IDLE), (350, RUN)
    )


def test_a_stall_that_lasts_is_an_open_stop_and_a_reset_is_a_rise() -> None:
    readings = counter((0, 500), (30, 501), (60, 0), (90, 0))
    changes = states_from_counter(readings, now=T0 + 1000 * S, ideal_cycle=30 * S)
    assert changes == timeline((0, RUN), (90, IDLE))
    assert detect_stops(changes, now=T0 + 1000 * S).events == [Stop(T0 + 90 * S, None, (IDLE,))]


def test_without_an_ideal_cycle_a_counter_stalls_after_two_minutes() -> None:
    # Read every 20 s: a part at 0, 20, 40, then none until 180 (140 s after the last: a stall), then 200.
    values = {0: 1, 20: 2, 40: 3, **dict.fromkeys(range(60, 180, 20), 3), 180: 4, 200: 5}
    readings = counter(*values.items())
    assert states_from_counter(readings, now=T0 + 200 * S) == timeline((0, RUN), (40, IDLE), (180, RUN))
    assert states_from_counter([], now=T0) == []


def test_a_counter_read_less_often_than_parts_are_made_is_not_a_string_of_stops() -> None:
    # A 2 s cycle read every 5 s: the counter rises by 2 or 3 per read. Running all along.
    readings = counter(*((5 * index, float(index * 5 // 2)) for index in range(60)))
    assert states_from_counter(readings, now=T0 + 300 * S, ideal_cycle=2 * S) == timeline((0, RUN))
    # The same reads with a real stop: the counter reaches 50 at 100 s and stands until the read at 160 s shows 62.
    # The next part was due at 102 s; the 11 parts after the first of the 12 took 22 s before 160 s: the machine
    # stood from 102 s to 138 s.
    stopped = [(ts, value) for ts, value in readings if ts < T0 + 100 * S]
    stopped += [(T0 + second * S, 50.0) for second in range(100, 160, 5)] + [(T0 + 160 * S, 62.0)]
    assert states_from_counter(stopped, now=T0 + 160 * S, ideal_cycle=2 * S) == timeline(
        (0, RUN), (102, IDLE), (138, RUN)
    )

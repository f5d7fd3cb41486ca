"""OEE arithmetic against numbers computed by hand (docs/metrics.md, "OEE"), and properties that always hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.oee.calc import (
    UNKNOWN,
    Counter,
    CounterPoint,
    Increase,
    Oee,
    StatePoint,
    compute_oee,
    counter_increase,
    state_durations,
)
from core.contract import MachineState
from simulators.injection import InjectionMachine

RUNNING, IDLE, SETUP, ALARM, OFF = (
    MachineState.RUNNING,
    MachineState.IDLE,
    MachineState.SETUP,
    MachineState.ALARM,
    MachineState.OFF,
)
DAY = datetime(2026, 11, 26, tzinfo=UTC)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def changes(*items: tuple[datetime, MachineState]) -> list[StatePoint]:
    return [StatePoint(ts, state) for ts, state in items]


def linear(tag: str, start: datetime, end: datetime, first: float, last: float, steps: int) -> Counter:
    """A counter rising evenly from `first` at `start` to `last` at `end` in `steps` readings after the first."""
    step = (end - start) / steps
    return Counter(tag, [CounterPoint(start + step * i, first + (last - first) * i / steps) for i in range(steps + 1)])


def oee(
    *,
    start: datetime,
    end: datetime,
    states: list[StatePoint],
    total: Counter | None = None,
    good: Counter | None = None,
    scrap: Counter | None = None,
    ideal: float | None = 30.0,
    silence: float = 0,
) -> Oee:
    return compute_oee(
        start=start,
        end=end,
        changes=states,
        total=total or Counter("cycle_count"),
        good=good or Counter("good_count"),
        scrap=scrap or Counter("scrap_count"),
        ideal_cycle_time_s=ideal,
        max_silence=timedelta(seconds=silence),
        subject="machine 3",
    )


def seconds(result: Oee) -> dict[str, float]:
    return {
        "planned": result.planned_production.total_seconds(),
        "running": result.running.total_seconds(),
        "off": result.off.total_seconds(),
        **{key: value.total_seconds() for key, value in result.downtime.items()},
    }


def test_plain_shift_running_throughout() -> None:
    # 06:00-14:00, running since 05:50; 960 cycles (950 good, 10 scrap); ideal 27 s.
    result = oee(
        start=at(6),
        end=at(14),
        states=changes((at(5, 50), RUNNING)),
        total=linear("cycle_count", at(5, 59, 30), at(13, 59, 30), 1000, 1960, 960),
        good=linear("good_count", at(5, 59, 30), at(13, 59, 30), 500, 1450, 950),
        scrap=linear("scrap_count", at(5, 59, 30), at(13, 59, 30), 20, 30, 10),
        ideal=27.0,
    )
    assert seconds(result) == {
        "planned": 28800,
        "running": 28800,
        "off": 0,
        "alarm": 0,
        "setup": 0,
        "idle": 0,
        "unknown": 0,
    }
    assert (result.total_count, result.good_count, result.scrap_count) == (960, 950, 10)
    assert result.availability == 1.0
    assert result.performance == pytest.approx(27 * 960 / 28800)  # 0.9
    assert result.quality == pytest.approx(950 / 960)
    assert result.oee == pytest.approx(0.9 * 950 / 960)  # 0.890625
    assert result.notes == []


def shift_with_stops() -> Oee:
    """The worked example of docs/metrics.md (and of tests/api/test_oee.py)."""
    return oee(
        start=at(6),
        end=at(14),
        states=changes(
            (at(6), RUNNING),
            (at(8), ALARM),
            (at(8, 30), RUNNING),
            (at(10), SETUP),
            (at(10, 45), RUNNING),
            (at(12), IDLE),
            (at(12, 15), RUNNING),
            (at(13, 30), OFF),
        ),
        total=linear("cycle_count", at(6), at(13, 30), 0, 600, 600),
        good=linear("good_count", at(6), at(13, 30), 0, 570, 570),
        scrap=linear("scrap_count", at(6), at(13, 30), 0, 30, 30),
        ideal=32.4,
    )


def test_shift_with_alarm_setup_idle_and_off() -> None:
    result = shift_with_stops()
    # running 2 h + 1.5 h + 1.25 h + 1.25 h = 6 h; planned = 8 h - 30 min off.
    assert seconds(result) == {
        "planned": 27000,
        "running": 21600,
        "off": 1800,
        "alarm": 1800,
        "setup": 2700,
        "idle": 900,
        "unknown": 0,
    }
    assert result.availability == pytest.approx(0.8)
    assert result.performance == pytest.approx(0.9)  # 32.4 s x 600 / 21600 s
    assert result.quality == pytest.approx(0.95)  # 570 / 600
    assert result.oee == pytest.approx(0.684)


def test_counter_reset_in_the_middle_counts_on_from_the_new_value() -> None:
    readings = [
        CounterPoint(at(5, 59), 100),  # the value at 06:00
        CounterPoint(at(6, 10), 150),
        CounterPoint(at(6, 20), 200),
        CounterPoint(at(6, 30), 3),  # the PLC restarted: 3 cycles since
        CounterPoint(at(6, 40), 40),
        CounterPoint(at(6, 50), 90),
    ]
    assert counter_increase(readings, start=at(6), end=at(7)) == Increase(count=50 + 50 + 3 + 37 + 50, resets=1)
    result = oee(
        start=at(6),
        end=at(7),
        states=changes((at(6), RUNNING)),
        total=Counter("cycle_count", readings),
        good=Counter("good_count", [CounterPoint(s.ts, s.value * 0.5) for s in readings]),
        ideal=None,
    )
    assert result.total_count == 190
    assert result.good_count == 95
    assert result.scrap_count == 95  # no scrap readings: total - good
    assert "cycle_count was reset 1 time(s) in the window; counted on from the value after each" in result.notes
    assert "no scrap_count readings: scrap count = total - good_count" in result.notes


def test_the_window_takes_the_last_reading_before_it_and_none_after_it() -> None:
    readings = [
        CounterPoint(at(5), 10),
        CounterPoint(at(5, 50), 20),
        CounterPoint(at(6, 30), 25),
        CounterPoint(at(7), 99),
    ]
    assert counter_increase(readings, start=at(6), end=at(7)) == Increase(count=5, resets=0)
    assert counter_increase(readings, start=at(7), end=at(8)) == Increase(count=74, resets=0)
    assert counter_increase([CounterPoint(at(6, 30), 7)], start=at(6), end=at(7)) == Increase(count=0, resets=0)
    assert counter_increase(readings, start=at(3), end=at(4)) is None
    assert counter_increase([CounterPoint(at(6), 5), CounterPoint(at(6, 1), -3)], start=at(6), end=at(7)) == Increase(
        0, 1
    )


def test_scrap_counts_and_a_total_made_of_good_plus_scrap() -> None:
    result = oee(
        start=at(6),
        end=at(7),
        states=changes((at(6), RUNNING)),
        good=linear("good_count", at(6), at(6, 59), 0, 80, 80),
        scrap=linear("scrap_count", at(6), at(6, 59), 0, 20, 20),
        ideal=36.0,
    )
    assert (result.total_count, result.good_count, result.scrap_count) == (100, 80, 20)
    assert result.quality == pytest.approx(0.8)
    assert result.performance == pytest.approx(1.0)  # 36 s x 100 / 3600 s
    assert "no cycle_count readings: total count = good_count + scrap_count" in result.notes


def test_a_data_gap_is_unknown_time_outside_planned_production() -> None:
    # Running since 06:00; counters every minute 06:00-07:00, silence, then every minute 08:00-08:59.
    # With 5 minutes of grace: known 06:00-07:05 and 08:00-09:00 (125 min); 07:05-08:00 unknown (55 min).
    first = linear("cycle_count", at(6), at(7), 0, 60, 60)
    second = linear("cycle_count", at(8), at(8, 59), 60, 119, 59)
    total = Counter("cycle_count", [*first.readings, *second.readings])
    result = oee(start=at(6), end=at(9), states=changes((at(6), RUNNING)), total=total, silence=300)
    assert seconds(result)["unknown"] == 3300
    assert seconds(result)["running"] == 7500
    assert seconds(result)["planned"] == 7500
    assert result.availability == 1.0
    assert result.total_count == 119
    assert result.performance == pytest.approx(30 * 119 / 7500)
    assert result.notes[0] == (
        "3300 s with no known state (before the first state change, or silent for more than 300 s): "
        "not planned production time"
    )
    # Without the silence rule the state holds until the next change.
    assert seconds(oee(start=at(6), end=at(9), states=changes((at(6), RUNNING)), total=total))["running"] == 10800


def test_a_state_change_is_a_sign_of_life_too() -> None:
    states = changes((at(6), RUNNING), (at(6, 20), IDLE), (at(6, 21), RUNNING))
    durations = state_durations(states, start=at(6), end=at(7), max_silence=timedelta(minutes=5))
    assert durations[RUNNING.value] == timedelta(minutes=5 + 5)  # 06:00-06:05 and 06:21-06:26
    assert durations[IDLE.value] == timedelta(minutes=1)
    assert durations[UNKNOWN] == timedelta(minutes=49)


def test_window_starting_mid_state() -> None:
    result = oee(
        start=at(6),
        end=at(7),
        states=changes((at(5, 30), ALARM), (at(6, 20), RUNNING)),
        total=linear("cycle_count", at(6, 20), at(6, 59), 0, 60, 60),
        good=linear("good_count", at(6, 20), at(6, 59), 0, 60, 60),
    )
    assert seconds(result)["alarm"] == 1200
    assert seconds(result)["running"] == 2400
    assert result.availability == pytest.approx(2 / 3)
    assert result.performance == pytest.approx(30 * 60 / 2400)
    assert result.quality == 1.0
    assert result.scrap_count == 0


def test_time_before_the_first_state_is_unknown() -> None:
    result = oee(start=at(6), end=at(7), states=changes((at(6, 30), RUNNING)))
    assert seconds(result)["unknown"] == 1800
    assert seconds(result)["planned"] == 1800
    assert result.availability == 1.0


def test_no_ideal_cycle_time_leaves_performance_and_oee_null_with_a_note() -> None:
    result = oee(
        start=at(6),
        end=at(7),
        states=changes((at(6), RUNNING)),
        total=linear("cycle_count", at(6), at(6, 59), 0, 100, 100),
        good=linear("good_count", at(6), at(6, 59), 0, 90, 90),
        scrap=linear("scrap_count", at(6), at(6, 59), 0, 10, 10),
        ideal=None,
    )
    assert result.availability == 1.0
    assert result.quality == pytest.approx(0.9)
    assert result.performance is None
    assert result.oee is None
    assert result.notes == ["no ideal cycle time set for machine 3: performance is null"]


def test_zero_running_time() -> None:
    result = oee(
        start=at(6),
        end=at(7),
        states=changes((at(5), IDLE), (at(6, 30), SETUP)),
        total=Counter("cycle_count", [CounterPoint(at(5), 40), CounterPoint(at(6, 30), 40)]),
        good=Counter("good_count", [CounterPoint(at(5), 40), CounterPoint(at(6, 30), 40)]),
        scrap=Counter("scrap_count", [CounterPoint(at(5), 0)]),
    )
    assert result.availability == 0.0
    assert result.performance is None
    assert result.quality is None
    assert result.oee is None
    assert result.total_count == 0
    assert result.notes == [
        "no running time in the window: performance is null",
        "no parts counted in the window: quality is null",
    ]


def test_no_state_and_no_counters_at_all() -> None:
    result = oee(start=at(6), end=at(7), states=[])
    assert seconds(result)["unknown"] == 3600
    assert (result.availability, result.performance, result.quality, result.oee) == (None, None, None, None)
    assert (result.total_count, result.good_count, result.scrap_count) == (None, None, None)
    assert any("availability is null" in note for note in result.notes)


def test_performance_above_one_is_reported_as_is() -> None:
    result = oee(
        start=at(6),
        end=at(7),
        states=changes((at(6), RUNNING)),
        total=linear("cycle_count", at(6), at(6, 59), 0, 150, 150),
        good=linear("good_count", at(6), at(6, 59), 0, 150, 150),
    )
    assert result.performance == pytest.approx(1.25)  # 30 s x 150 / 3600 s
    assert result.oee == pytest.approx(1.25)
    assert any(note.startswith("performance is above 1 (1.25)") for note in result.notes)


def test_an_off_machine_has_no_planned_production_time() -> None:
    result = oee(start=at(6), end=at(7), states=changes((at(5), OFF)))
    assert seconds(result)["off"] == 3600
    assert seconds(result)["planned"] == 0
    assert result.availability is None


# -- properties ----------------------------------------------------------------------------------------------

STATES = st.sampled_from(list(MachineState))


@st.composite
def machine_history(draw: st.DrawFn) -> tuple[list[StatePoint], Counter, Counter, Counter]:
    """State changes and three counters from one simulated process (cycles are good or scrap; resets hit all)."""
    offsets = sorted(draw(st.sets(st.integers(-600, 7200), max_size=12)))
    states = [StatePoint(at(6) + timedelta(seconds=offset), draw(STATES)) for offset in offsets]
    total, good, scrap = [], [], []
    made = fine = 0
    for offset in sorted(draw(st.sets(st.integers(-600, 7200), max_size=40))):
        ts = at(6) + timedelta(seconds=offset)
        if draw(st.integers(0, 19)) == 0:
            # A reset shows as 0, so every counter either drops or stayed at 0 (a reset is seen where it matters).
            made = fine = 0
        else:
            cycles = draw(st.integers(0, 5))
            made, fine = made + cycles, fine + draw(st.integers(0, cycles))
        total.append(CounterPoint(ts, made))
        good.append(CounterPoint(ts, fine))
        scrap.append(CounterPoint(ts, made - fine))
    return states, Counter("cycle_count", total), Counter("good_count", good), Counter("scrap_count", scrap)


@settings(max_examples=200, deadline=None)
@given(
    history=machine_history(),
    ideal=st.one_of(st.none(), st.floats(0.5, 120)),
    silence=st.sampled_from([0, 60, 300]),
    length=st.integers(1, 7200),
)
def test_factors_stay_in_bounds_and_oee_is_their_product(
    history: tuple[list[StatePoint], Counter, Counter, Counter], ideal: float | None, silence: int, length: int
) -> None:
    states, total, good, scrap = history
    start, end = at(6), at(6) + timedelta(seconds=length)
    result = compute_oee(
        start=start,
        end=end,
        changes=states,
        total=total,
        good=good,
        scrap=scrap,
        ideal_cycle_time_s=ideal,
        max_silence=timedelta(seconds=silence),
    )
    parts = [result.running, result.off, *result.downtime.values()]
    assert sum(parts, timedelta(0)) == end - start
    assert all(part >= timedelta(0) for part in parts)
    assert result.planned_production == end - start - result.off - result.downtime[UNKNOWN]
    if result.availability is not None:
        assert 0 <= result.availability <= 1
    if result.quality is not None:
        assert 0 <= result.quality <= 1
    if result.performance is not None:
        assert result.performance >= 0
    for count in (result.total_count, result.good_count, result.scrap_count):
        assert count is None or count >= 0
    if result.total_count is not None and result.good_count is not None and result.scrap_count is not None:
        assert result.total_count == result.good_count + result.scrap_count
    factors = (result.availability, result.performance, result.quality)
    if None in factors:
        assert result.oee is None
        assert result.notes
    else:
        assert result.oee == pytest.approx(factors[0] * factors[1] * factors[2])  # type: ignore[operator]  # no None here


@settings(max_examples=200, deadline=None)
@given(history=machine_history(), cut=st.integers(1, 7199), silence=st.sampled_from([0, 300]))
def test_adjacent_windows_add_up(
    history: tuple[list[StatePoint], Counter, Counter, Counter], cut: int, silence: int
) -> None:
    states, total, good, scrap = history
    start, middle, end = at(6), at(6) + timedelta(seconds=cut), at(8)

    def over(low: datetime, high: datetime) -> Oee:
        return compute_oee(
            start=low,
            end=high,
            changes=states,
            total=total,
            good=good,
            scrap=scrap,
            ideal_cycle_time_s=30.0,
            max_silence=timedelta(seconds=silence),
        )

    whole, first, second = over(start, end), over(start, middle), over(middle, end)
    assert whole.running == first.running + second.running
    assert whole.off == first.off + second.off
    for key, value in whole.downtime.items():
        assert value == first.downtime[key] + second.downtime[key]
    if first.total_count is not None and second.total_count is not None:
        assert whole.total_count == first.total_count + second.total_count


def test_a_simulated_shift_of_the_injection_machine_adds_up() -> None:
    """The injection simulator's own tallies against OEE from what it reports, sampled every 5 s as a gateway would."""
    machine = InjectionMachine(seed=11)
    start, period, samples = at(6), 5, 8 * 3600 // 5
    states: list[StatePoint] = []
    readings: dict[str, list[CounterPoint]] = {"cycle_count": [], "good_count": [], "scrap_count": []}
    for k in range(samples):
        machine.step(k * period)
        ts = start + timedelta(seconds=k * period)
        if not states or states[-1].state is not machine.state:
            states.append(StatePoint(ts, machine.state))
        values = machine.values()
        for tag, series in readings.items():
            series.append(CounterPoint(ts, float(values[tag])))
    end = start + timedelta(seconds=samples * period)
    machine.step(samples * period)
    result = compute_oee(
        start=start,
        end=end,
        changes=states,
        total=Counter("cycle_count", readings["cycle_count"]),
        good=Counter("good_count", readings["good_count"]),
        scrap=Counter("scrap_count", readings["scrap_count"]),
        ideal_cycle_time_s=machine.params.ideal_cycle_time_s,
        max_silence=timedelta(seconds=300),
    )
    # A state is seen at the first sample after it began: each change may be off by up to one period.
    slack = period * len(states)
    truth = machine.state_seconds
    assert len(states) > 5
    for state in MachineState:
        reported = result.running if state is RUNNING else result.off if state is OFF else result.downtime[state.value]
        assert abs(reported.total_seconds() - truth[state]) <= slack, state
    assert result.downtime[UNKNOWN] == timedelta(0)
    last = readings["cycle_count"][-1].value
    assert result.total_count == last > 0
    assert result.good_count == readings["good_count"][-1].value
    assert result.scrap_count == readings["scrap_count"][-1].value
    # Real cycles take 12.2 s on average against an ideal 12 s.
    assert result.performance is not None
    assert 0.95 < result.performance <= 1.0

"""The simulated injection-moulding machine: deterministic, plausible, and interrupted at the configured rates."""

from __future__ import annotations

import itertools

import pytest

from core.contract import MachineState
from simulators.injection import InjectionMachine, InjectionParams

HOUR = 3600.0
STATE_NAMES = {state.value for state in MachineState}


Values = dict[str, float | int | str]


def num(values: Values, key: str) -> float:
    """A numeric value (the model's dict also holds the state name)."""
    value = values[key]
    assert isinstance(value, int | float), key
    return float(value)


def run(machine: InjectionMachine, until_s: float, every_s: float) -> list[Values]:
    """Step the machine to `until_s` in steps of `every_s`, collecting the values after each step."""
    seen = []
    t = machine.now_s
    while t < until_s:
        t = min(until_s, t + every_s)
        machine.step(t)
        seen.append(machine.values())
    return seen


def test_same_seed_same_history_other_seed_other_history() -> None:
    first = run(InjectionMachine(seed=42), 4 * HOUR, 5.0)
    again = run(InjectionMachine(seed=42), 4 * HOUR, 5.0)
    other = run(InjectionMachine(seed=43), 4 * HOUR, 5.0)
    assert first == again
    assert first != other


def test_events_do_not_depend_on_how_often_the_machine_is_stepped() -> None:
    fine, coarse = InjectionMachine(seed=5), InjectionMachine(seed=5)
    run(fine, 6 * HOUR, 1.0)
    run(coarse, 6 * HOUR, 97.0)
    counters = ("state", "cycle_count", "good_count", "scrap_count", "cycle_time_s")
    assert {key: fine.values()[key] for key in counters} == {key: coarse.values()[key] for key in counters}
    assert fine.state_entries == coarse.state_entries


def test_values_have_the_documented_names_and_types() -> None:
    machine = InjectionMachine(seed=1)
    for step in range(1, 240):
        machine.step(step * 30.0)
        values = machine.values()
        assert set(values) == {
            "state",
            "cycle_count",
            "good_count",
            "scrap_count",
            "barrel_temp_c",
            "mold_temp_c",
            "injection_pressure_bar",
            "cycle_time_s",
        }
        assert values["state"] in STATE_NAMES
        assert values["state"] == machine.state.value
        for key in ("cycle_count", "good_count", "scrap_count"):
            assert isinstance(values[key], int)
        for key in ("barrel_temp_c", "mold_temp_c", "injection_pressure_bar", "cycle_time_s"):
            assert isinstance(values[key], float)


def test_counters_only_grow_and_good_plus_scrap_is_cycles() -> None:
    history = run(InjectionMachine(seed=9), 48 * HOUR, 60.0)
    for before, after in itertools.pairwise(history):
        for key in ("cycle_count", "good_count", "scrap_count"):
            assert num(after, key) >= num(before, key), key
    for values in history:
        assert num(values, "good_count") + num(values, "scrap_count") == num(values, "cycle_count")
    assert num(history[-1], "cycle_count") > 10_000


def test_scrap_rate_and_cycle_time_follow_the_parameters() -> None:
    params = InjectionParams(ideal_cycle_time_s=20.0, scrap_rate=0.1)
    machine = InjectionMachine(seed=3, params=params)
    history = run(machine, 100 * HOUR, 30.0)
    final = history[-1]
    assert num(final, "scrap_count") / num(final, "cycle_count") == pytest.approx(0.1, abs=0.01)
    # Each reported cycle time is one real cycle: a little over the ideal, never far from it.
    cycle_times = [num(values, "cycle_time_s") for values in history if values["cycle_count"]]
    assert all(19.0 <= ct <= 21.5 for ct in cycle_times)
    mean = sum(cycle_times) / len(cycle_times)
    assert mean == pytest.approx(20.2, abs=0.1)
    # The cycle count matches the running time divided by the mean cycle time.
    assert num(final, "cycle_count") == pytest.approx(machine.state_seconds[MachineState.RUNNING] / mean, rel=0.02)


def test_temperatures_settle_near_their_setpoints_after_warm_up() -> None:
    params = InjectionParams(off_rate_per_h=0.0, barrel_setpoint_c=240.0, mold_setpoint_c=60.0)
    machine = InjectionMachine(seed=11, params=params)
    assert machine.values()["barrel_temp_c"] == pytest.approx(params.ambient_c, abs=3)
    machine.step(1.0)
    assert machine.state is MachineState.IDLE  # heating, not producing yet
    history = run(machine, 12 * HOUR, 60.0)
    settled = history[len(history) // 6 :]  # after 2 h (warm-up takes about 25 min)
    barrel = [num(values, "barrel_temp_c") for values in settled]
    mold = [num(values, "mold_temp_c") for values in settled]
    assert all(abs(t - 240.0) < 3.0 for t in barrel)
    assert all(abs(t - 60.0) < 3.0 for t in mold)
    assert sum(barrel) / len(barrel) == pytest.approx(240.0, abs=0.3)
    assert len(set(barrel)) > 10  # noisy, as a real sensor


def test_machine_warms_up_before_producing_and_cools_down_when_off() -> None:
    params = InjectionParams(off_rate_per_h=2.0, mean_off_s=4 * HOUR)
    machine = InjectionMachine(seed=2, params=params)
    history = run(machine, 30 * HOUR, 10.0)
    first_running = next(i for i, values in enumerate(history) if values["state"] == "running")
    assert num(history[first_running], "barrel_temp_c") > params.barrel_setpoint_c - params.ready_band_c - 2
    assert history[first_running - 1]["cycle_count"] == 0
    off_samples = [values for values in history if values["state"] == "off"]
    assert off_samples, "an off period was expected at this rate"
    assert min(num(values, "barrel_temp_c") for values in off_samples) < 100.0
    # After every off period the machine is idle (heating) before it runs again.
    for before, after in itertools.pairwise(history):
        if before["state"] == "off" and after["state"] != "off":
            assert after["state"] in ("idle", "running")
            if num(after, "barrel_temp_c") < params.barrel_setpoint_c - params.ready_band_c - 2:
                assert after["state"] == "idle"


def test_injection_pressure_peaks_only_while_running() -> None:
    machine = InjectionMachine(seed=4, params=InjectionParams(peak_pressure_bar=1500.0, hold_pressure_bar=500.0))
    history = run(machine, 6 * HOUR, 0.5)
    running = [num(values, "injection_pressure_bar") for values in history if values["state"] == "running"]
    others = [num(values, "injection_pressure_bar") for values in history if values["state"] != "running"]
    assert max(running) > 1300.0
    assert any(450.0 < p < 550.0 for p in running)  # holding
    assert sum(1 for p in running if p == 0.0) > len(running) / 3  # cooling and ejection
    assert all(p == 0.0 for p in others)


@pytest.mark.parametrize(
    ("state", "rate_field", "rate"),
    [(MachineState.ALARM, "alarm_rate_per_h", 1.5), (MachineState.SETUP, "setup_rate_per_h", 0.4)],
)
def test_interruptions_happen_at_the_configured_rate(state: MachineState, rate_field: str, rate: float) -> None:
    params = InjectionParams(**{rate_field: rate})
    machine = InjectionMachine(seed=8, params=params)
    run(machine, 1000 * HOUR, 600.0)
    running_hours = machine.state_seconds[MachineState.RUNNING] / HOUR
    assert running_hours > 500
    # Poisson: with a few hundred events the count is within ~10 % of its mean; 20 % leaves room.
    assert machine.state_entries[state] / running_hours == pytest.approx(rate, rel=0.2)


def test_alarm_durations_follow_the_configured_mean() -> None:
    params = InjectionParams(alarm_rate_per_h=2.0, mean_alarm_s=600.0)
    machine = InjectionMachine(seed=6, params=params)
    run(machine, 500 * HOUR, 600.0)
    mean_alarm = machine.state_seconds[MachineState.ALARM] / machine.state_entries[MachineState.ALARM]
    assert mean_alarm == pytest.approx(600.0, rel=0.2)


def test_no_interruptions_when_every_rate_is_zero() -> None:
    params = InjectionParams(alarm_rate_per_h=0, setup_rate_per_h=0, idle_rate_per_h=0, off_rate_per_h=0)
    machine = InjectionMachine(seed=1, params=params)
    states = {values["state"] for values in run(machine, 24 * HOUR, 60.0)}
    assert states == {"idle", "running"}
    assert machine.state is MachineState.RUNNING


def test_time_only_runs_forward() -> None:
    machine = InjectionMachine(seed=1)
    machine.step(100.0)
    machine.step(100.0)  # the same time is fine
    with pytest.raises(ValueError, match="forward"):
        machine.step(99.0)


@pytest.mark.parametrize(
    "bad",
    [{"scrap_rate": 1.5}, {"ideal_cycle_time_s": 0.0}, {"alarm_rate_per_h": -1.0}, {"barrel_setpoint_c": 20.0}],
)
def test_impossible_parameters_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        InjectionParams(**bad)

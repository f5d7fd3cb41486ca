"""The dynamics of an injection-moulding machine, pure and deterministic: no I/O, no wall clock.

`InjectionMachine(seed=…)` starts powered on and cold at simulated second 0; `step(now_s)` advances it to the
simulated second `now_s`; `values()` reads it the way a PLC would expose it. The machine heats up (idle) until the
barrel is near its setpoint, then cycles (running). While running it is interrupted now and then by an alarm, a
mould/material setup, an idle spell (no material, no operator) or a power-off, each a Poisson process over running
time with its own rate, and each lasting an exponentially distributed time.

Two random generators keep the model honest: one drives events (cycle times, scrap, interruptions), the other only
the measurement noise. So cycles, counters and states depend on the seed and the simulated time alone, never on how
often `step()` is called; only the noise on the analogue values depends on the sampling.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from enum import Enum

from core.contract import MachineState


@dataclass(frozen=True)
class InjectionParams:
    """What the simulated machine is like; defaults are a mid-size press making a 12-second part."""

    ideal_cycle_time_s: float = 12.0
    # Real cycles run a little slower than the ideal one, with some spread.
    cycle_time_extra_s: float = 0.2
    cycle_time_noise_s: float = 0.15
    scrap_rate: float = 0.02
    barrel_setpoint_c: float = 230.0
    mold_setpoint_c: float = 45.0
    ambient_c: float = 22.0
    barrel_tau_s: float = 900.0
    mold_tau_s: float = 300.0
    temp_noise_c: float = 0.4
    # Production starts once the barrel is this close to its setpoint.
    ready_band_c: float = 10.0
    peak_pressure_bar: float = 1400.0
    hold_pressure_bar: float = 600.0
    pressure_noise_bar: float = 12.0
    # Interruptions, per hour of running, and their mean durations.
    alarm_rate_per_h: float = 0.5
    mean_alarm_s: float = 240.0
    setup_rate_per_h: float = 0.1
    mean_setup_s: float = 1800.0
    idle_rate_per_h: float = 0.3
    mean_idle_s: float = 300.0
    off_rate_per_h: float = 0.02
    mean_off_s: float = 3600.0

    def __post_init__(self) -> None:
        positive: tuple[str, ...] = ("ideal_cycle_time_s", "barrel_tau_s", "mold_tau_s", "ready_band_c")
        positive += ("mean_alarm_s", "mean_setup_s", "mean_idle_s", "mean_off_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        rates = ("alarm_rate_per_h", "setup_rate_per_h", "idle_rate_per_h", "off_rate_per_h")
        noises = ("cycle_time_noise_s", "temp_noise_c", "pressure_noise_bar", "cycle_time_extra_s")
        for name in rates + noises:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.scrap_rate <= 1:
            raise ValueError("scrap_rate must be between 0 and 1")
        if not self.barrel_setpoint_c - self.ready_band_c > self.ambient_c:
            raise ValueError("barrel_setpoint_c - ready_band_c must be above ambient_c")


class _Phase(Enum):
    WARMING = "warming"  # reported as idle: heaters on, waiting for the barrel temperature
    RUNNING = "running"
    ALARM = "alarm"
    SETUP = "setup"
    IDLE = "idle"
    OFF = "off"


_REPORTED = {
    _Phase.WARMING: MachineState.IDLE,
    _Phase.RUNNING: MachineState.RUNNING,
    _Phase.ALARM: MachineState.ALARM,
    _Phase.SETUP: MachineState.SETUP,
    _Phase.IDLE: MachineState.IDLE,
    _Phase.OFF: MachineState.OFF,
}

# Fractions of a cycle: injection (pressure climbs to its peak), then hold, then cooling and ejection.
_INJECTION_END = 0.12
_HOLD_END = 0.35


class InjectionMachine:
    """One simulated injection-moulding machine, advanced by `step(now_s)` in simulated seconds."""

    def __init__(self, *, seed: int, params: InjectionParams | None = None) -> None:
        self.params = params or InjectionParams()
        self._events = random.Random(seed)  # noqa: S311 -- simulation, not crypto
        self._noise = random.Random(f"injection-noise-{seed}")  # noqa: S311 -- simulation, not crypto
        self._t = 0.0
        self._barrel = self.params.ambient_c
        self._mold = self.params.ambient_c
        self.cycle_count = 0
        self.good_count = 0
        self.scrap_count = 0
        self.cycle_time_s = 0.0
        self._phase = _Phase.WARMING
        self._phase_ends_at = math.inf
        self._cycle_started_at = 0.0
        self._cycle_ends_at = math.inf
        self._interrupt_at = math.inf
        self._interrupt: _Phase | None = None
        self._state_seconds = dict.fromkeys(MachineState, 0.0)
        self._state_entries = dict.fromkeys(MachineState, 0)
        self._state_entries[MachineState.IDLE] = 1
        self._measured = {"barrel": self._barrel, "mold": self._mold, "pressure": 0.0}
        self._phase_ends_at = self._ready_at()

    @property
    def now_s(self) -> float:
        """The simulated second the machine has been advanced to."""
        return self._t

    @property
    def state(self) -> MachineState:
        """What the machine reports it is doing."""
        return _REPORTED[self._phase]

    @property
    def state_seconds(self) -> dict[MachineState, float]:
        """Simulated seconds spent in each reported state so far."""
        return dict(self._state_seconds)

    @property
    def state_entries(self) -> dict[MachineState, int]:
        """How often each reported state was entered (the initial idle counts once)."""
        return dict(self._state_entries)

    def set_ideal_cycle_time(self, seconds: float) -> None:
        """A new cycle time setpoint (job data from the plant): the cycles started from now on follow it."""
        self.params = replace(self.params, ideal_cycle_time_s=seconds)

    def step(self, now_s: float) -> None:
        """Advance to simulated second `now_s` (never backwards), handling every event up to it."""
        if now_s < self._t:
            raise ValueError(f"time runs forward only: at {self._t}, asked for {now_s}")
        while True:
            event_at = min(self._phase_ends_at, self._cycle_ends_at)
            if event_at > now_s:
                break
            self._advance(event_at)
            if event_at == self._cycle_ends_at:
                self._finish_cycle()
            else:
                self._end_phase()
        self._advance(now_s)
        self._sample()

    def values(self) -> dict[str, float | int | str]:
        """The machine as its controller exposes it: the state name, counters and measured values."""
        return {
            "state": self.state.value,
            "cycle_count": self.cycle_count,
            "good_count": self.good_count,
            "scrap_count": self.scrap_count,
            "barrel_temp_c": round(self._measured["barrel"], 1),
            "mold_temp_c": round(self._measured["mold"], 1),
            "injection_pressure_bar": round(self._measured["pressure"], 1),
            "cycle_time_s": round(self.cycle_time_s, 2),
        }

    # -- dynamics ---------------------------------------------------------------------------------------------

    def _targets(self) -> tuple[float, float]:
        if self._phase is _Phase.OFF:
            return self.params.ambient_c, self.params.ambient_c
        return self.params.barrel_setpoint_c, self.params.mold_setpoint_c

    def _advance(self, t: float) -> None:
        dt = t - self._t
        if dt <= 0:
            return
        barrel_target, mold_target = self._targets()
        self._barrel = barrel_target + (self._barrel - barrel_target) * math.exp(-dt / self.params.barrel_tau_s)
        self._mold = mold_target + (self._mold - mold_target) * math.exp(-dt / self.params.mold_tau_s)
        self._state_seconds[self.state] += dt
        self._t = t

    def _ready_at(self) -> float:
        """When a warming barrel gets within the ready band of its setpoint (first-order lag, solved)."""
        setpoint, threshold = self.params.barrel_setpoint_c, self.params.barrel_setpoint_c - self.params.ready_band_c
        if self._barrel >= threshold:
            return self._t
        return self._t + self.params.barrel_tau_s * math.log((setpoint - self._barrel) / (setpoint - threshold))

    def _enter(self, phase: _Phase, ends_at: float) -> None:
        if _REPORTED[phase] is not self.state:
            self._state_entries[_REPORTED[phase]] += 1
        self._phase = phase
        self._phase_ends_at = ends_at
        self._cycle_ends_at = math.inf

    def _start_running(self) -> None:
        self._enter(_Phase.RUNNING, math.inf)
        self._draw_interrupt()
        self._start_cycle()

    def _draw_interrupt(self) -> None:
        p = self.params
        self._interrupt_at, self._interrupt = math.inf, None
        for phase, rate in (
            (_Phase.ALARM, p.alarm_rate_per_h),
            (_Phase.SETUP, p.setup_rate_per_h),
            (_Phase.IDLE, p.idle_rate_per_h),
            (_Phase.OFF, p.off_rate_per_h),
        ):
            if rate <= 0:
                continue
            at = self._t + self._events.expovariate(rate / 3600.0)
            if at < self._interrupt_at:
                self._interrupt_at, self._interrupt = at, phase

    def _start_cycle(self) -> None:
        p = self.params
        duration = self._events.gauss(p.ideal_cycle_time_s + p.cycle_time_extra_s, p.cycle_time_noise_s)
        self._cycle_started_at = self._t
        self._cycle_ends_at = self._t + max(duration, 0.95 * p.ideal_cycle_time_s)

    def _finish_cycle(self) -> None:
        self.cycle_time_s = self._t - self._cycle_started_at
        self.cycle_count += 1
        if self._events.random() < self.params.scrap_rate:
            self.scrap_count += 1
        else:
            self.good_count += 1
        # Interruptions take effect between cycles, as an operator or a controller would do it.
        if self._interrupt is not None and self._t >= self._interrupt_at:
            mean = {
                _Phase.ALARM: self.params.mean_alarm_s,
                _Phase.SETUP: self.params.mean_setup_s,
                _Phase.IDLE: self.params.mean_idle_s,
                _Phase.OFF: self.params.mean_off_s,
            }[self._interrupt]
            self._enter(self._interrupt, self._t + self._events.expovariate(1.0 / mean))
            return
        self._start_cycle()

    def _end_phase(self) -> None:
        warm = self._barrel >= self.params.barrel_setpoint_c - self.params.ready_band_c
        # A warming phase ends exactly at the solved ready time, where rounding may leave the barrel a hair short.
        if self._phase is _Phase.WARMING or warm:
            self._start_running()
            return
        self._enter(_Phase.WARMING, math.inf)
        self._phase_ends_at = self._ready_at()

    def _sample(self) -> None:
        p = self.params
        self._measured["barrel"] = self._barrel + self._noise.gauss(0.0, p.temp_noise_c)
        self._measured["mold"] = self._mold + self._noise.gauss(0.0, p.temp_noise_c)
        self._measured["pressure"] = self._pressure()

    def _pressure(self) -> float:
        if self._phase is not _Phase.RUNNING or self._cycle_ends_at == math.inf:
            return 0.0
        p = self.params
        fraction = (self._t - self._cycle_started_at) / (self._cycle_ends_at - self._cycle_started_at)
        if fraction < _INJECTION_END:
            nominal = p.peak_pressure_bar * (fraction / _INJECTION_END) ** 2
        elif fraction < _HOLD_END:
            nominal = p.hold_pressure_bar
        else:
            nominal = 0.0
        if nominal == 0.0:
            return 0.0
        return max(0.0, nominal + self._noise.gauss(0.0, p.pressure_noise_bar))

"""A Modbus TCP assembly station ("Montaj"): a pymodbus server whose registers follow a believable machine.

The station screws parts together in cycles of about `ideal_cycle_s` seconds (default 8 s). Now and then a cycle
is slow, a part is scrapped, an alarm stops the station (e-stop, torque fault, part missing) or the operator sets
it up for another variant. Everything is drawn from one `random.Random(seed)` on a simulated clock, so a seed
always gives the same sequence of values; `speed` only maps the simulated clock to wall time (speed 60 runs an
hour in a minute).

Register map (protocol addresses, 0-based; unit id 1 by default; over TCP any other unit id answers exception 2,
on an RTU line it stays silent, as a missing device on a real line does):

    address  table     type     tag                    unit   meaning
    0        holding   uint16   state                  -      0 off, 1 idle, 2 running, 3 setup, 4 alarm
    1        holding   uint16   target_qty             -      setpoint: parts to make in the current job
    2-3      holding   uint32   cycle_count            -      cycles completed since start
    4-5      holding   uint32   good_count             -      good parts since start
    6-7      holding   uint32   scrap_count            -      scrapped parts since start
    8-9      holding   float32  cycle_time_setpoint_s  s      setpoint: the ideal cycle time the station works to
    10-11    holding   float32  torque_nm              Nm     final screw torque of the last cycle
    12-13    holding   float32  air_pressure_bar       bar    supply air pressure
    14-31    holding   -        (reserved)             -      reads 0
    0        input     int16    temp_c                 °C     cabinet temperature, raw in 0.1 °C (scale 0.1)
    0        coil      bool     estop                  -      emergency stop pressed
    1        coil      bool     torque_fault           -      screwdriver torque out of tolerance
    2        coil      bool     part_missing           -      part feeder empty
    0        discrete  bool     part_present           -      a part sits in the fixture (sensor)

The 32-bit values (counters and floats) use the station's `order` (ABCD, CDAB, BADC or DCBA); the 16-bit
registers are plain big-endian words as the protocol defines them. Every register is written through
`core.registers.encode`, the codec the gateway decodes with. The two setpoints (`SETPOINTS`) are what a plant writes
as job data: the station keeps what a client writes there (`setpoints()` shows it; they are not in `current()` nor
`record`, and `station_tags()` lists them, with their command limits, only when asked with `setpoints=True`), and
its cycles follow `cycle_time_setpoint_s` from the next cycle on. mbpoll numbers references from 1: holding address
10 is `mbpoll -t 4:float -r 11`, and only `-B` reads ABCD floats (mbpoll's default is CDAB).

In-process (tests):

    async with ModbusStation("127.0.0.1", 0, seed=1, speed=20, order=Order.CDAB) as station:
        station.port, station.current(), station.record

Standalone: `python -m simulators.modbus --port 5020 --seed 1 --speed 1 --order ABCD` prints
`READY modbus <host>:<port>` once listening and exits cleanly on SIGTERM or SIGINT. `--warmup 3600` runs an hour
of simulated shift at once before serving, so counters start far from zero; `--port 0` picks a free port.

Modbus RTU: `--transport rtu --serial-port /dev/ttyUSB0` (with `--baudrate`, `--parity`, `--stopbits`,
`--bytesize`; defaults 9600 8E1, the spec's) serves RTU frames on a serial device and prints
`READY modbus rtu <serial port>`; `--transport rtu_over_tcp` serves RTU frames over TCP, as a serial device server
passes them on. `--unit-id` may be given several times: every unit id shows the same station (one state, mirrored),
the way several identical stations on one RS-485 line would look. A pseudo-terminal pair made by
`socat -d -d pty,raw,echo=0,link=/tmp/sim pty,raw,echo=0,link=/tmp/gw` stands in for a cable; Linux ptys refuse
parity and 7 data bits, so use `--parity N` there. `--fail input:0` makes that range answer exception 2
(illegal data address), for testing how a client handles one failing block; in-process, `station.fail(...)` and
`station.heal()` do the same at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import math
import random
import sys
import termios
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from core.clock import utcnow
from core.contract import MachineState
from core.lifecycle import add_ready_file_option, readiness, stop_on_signals
from core.registers import (
    REGISTER_COUNT,
    DataType,
    Order,
    RegisterType,
    Value,
    apply_scale,
    decode,
    encode,
    unapply_scale,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5020  # 502 needs root
DEFAULT_UNIT_ID = 1

STATE_CODES: dict[MachineState, int] = {
    MachineState.OFF: 0,
    MachineState.IDLE: 1,
    MachineState.RUNNING: 2,
    MachineState.SETUP: 3,
    MachineState.ALARM: 4,
}
STATE_MAP: dict[int, MachineState] = {code: state for state, code in STATE_CODES.items()}

# Registers (or bits) of each table that exist; addresses in the map's gaps read as zero.
TABLE_SIZE = {RegisterType.COIL: 16, RegisterType.DISCRETE: 16, RegisterType.HOLDING: 32, RegisterType.INPUT: 16}
# Function codes pymodbus's datastore uses to pick a table when the simulator writes its own values.
_WRITE_CODE = {RegisterType.COIL: 5, RegisterType.DISCRETE: 2, RegisterType.HOLDING: 16, RegisterType.INPUT: 4}
# The table a read function code reads.
_READ_TABLE = {1: RegisterType.COIL, 2: RegisterType.DISCRETE, 3: RegisterType.HOLDING, 4: RegisterType.INPUT}
Transport = Literal["tcp", "rtu", "rtu_over_tcp"]


@dataclass(frozen=True)
class StationTag:
    """One entry of the register map."""

    name: str
    register: RegisterType
    address: int
    data_type: DataType
    unit: str
    meaning: str
    scale: float = 1.0
    # A setpoint's command limits (WriteLimits fields); None: the station sets it, clients only read it.
    writable: dict[str, Any] | None = None

    @property
    def uses_order(self) -> bool:
        """32-bit values follow the station's byte/word order; 16-bit registers and bits do not."""
        return self.data_type in (DataType.UINT32, DataType.FLOAT32)

    @property
    def span(self) -> int:
        """Registers it takes."""
        return REGISTER_COUNT[self.data_type]


REGISTER_MAP: tuple[StationTag, ...] = (
    StationTag("state", RegisterType.HOLDING, 0, DataType.UINT16, "", "0 off, 1 idle, 2 running, 3 setup, 4 alarm"),
    StationTag("cycle_count", RegisterType.HOLDING, 2, DataType.UINT32, "", "cycles completed since start"),
    StationTag("good_count", RegisterType.HOLDING, 4, DataType.UINT32, "", "good parts since start"),
    StationTag("scrap_count", RegisterType.HOLDING, 6, DataType.UINT32, "", "scrapped parts since start"),
    StationTag("torque_nm", RegisterType.HOLDING, 10, DataType.FLOAT32, "Nm", "final screw torque of the last cycle"),
    StationTag("air_pressure_bar", RegisterType.HOLDING, 12, DataType.FLOAT32, "bar", "supply air pressure"),
    StationTag("temp_c", RegisterType.INPUT, 0, DataType.INT16, "°C", "cabinet temperature, raw 0.1 °C", 0.1),
    StationTag("estop", RegisterType.COIL, 0, DataType.BOOL, "", "emergency stop pressed"),
    StationTag("torque_fault", RegisterType.COIL, 1, DataType.BOOL, "", "screwdriver torque out of tolerance"),
    StationTag("part_missing", RegisterType.COIL, 2, DataType.BOOL, "", "part feeder empty"),
    StationTag("part_present", RegisterType.DISCRETE, 0, DataType.BOOL, "", "a part sits in the fixture"),
)
# What a plant writes as job data, in two of the map's reserved gaps (so a gateway reading them still reads the
# holding registers in one request); with their command limits.
SETPOINTS: tuple[StationTag, ...] = (
    StationTag(
        "target_qty",
        RegisterType.HOLDING,
        1,
        DataType.UINT16,
        "",
        "parts to make in the current job",
        writable={"type": "int", "min": 0, "max": 10_000},
    ),
    StationTag(
        "cycle_time_setpoint_s",
        RegisterType.HOLDING,
        8,
        DataType.FLOAT32,
        "s",
        "ideal cycle time the station works to",
        writable={"type": "float", "min": 2.0, "max": 60.0},
    ),
)
_BY_NAME = {tag.name: tag for tag in REGISTER_MAP}
ALARM_COILS = ("estop", "torque_fault", "part_missing")
# Function codes of client writes: Write Single Register, Write Multiple Registers.
_REGISTER_WRITES = (6, 16)


def station_tags(order: Order = Order.ABCD, *, setpoints: bool = False) -> list[dict[str, Any]]:
    """The station's tags as a gateway YAML `tags:` list would write them (ModbusTag fields); `setpoints` adds the
    writable setpoints with their command limits."""
    tags: list[dict[str, Any]] = []
    for tag in REGISTER_MAP + (SETPOINTS if setpoints else ()):
        entry: dict[str, Any] = {
            "name": tag.name,
            "register": tag.register.value,
            "address": tag.address,
            "data_type": tag.data_type.value,
        }
        if tag.uses_order:
            entry["order"] = Order(order).value
        if tag.scale != 1.0:
            entry["scale"] = tag.scale
        if tag.writable is not None:
            entry["writable"] = dict(tag.writable)
        tags.append(entry)
    return tags


def station_device(
    machine: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, order: Order = Order.ABCD
) -> dict[str, Any]:
    """A whole gateway YAML device entry for the station (`devices:` list item)."""
    return {
        "machine": machine,
        "protocol": "modbus",
        "host": host,
        "port": port,
        "unit_id": DEFAULT_UNIT_ID,
        "state_tag": "state",
        "state_map": {code: state.value for code, state in STATE_MAP.items()},
        "tags": station_tags(order),
    }


# ---- the machine, on a simulated clock (pure and deterministic) ------------------------------------------------


@dataclass(frozen=True)
class StationParams:
    """How the simulated station behaves."""

    ideal_cycle_s: float = 8.0
    scrap_rate: float = 0.03  # parts scrapped for defects, on top of torque rejects
    alarm_rate: float = 0.01  # per cycle
    setup_rate: float = 0.004  # per cycle
    off_rate: float = 0.001  # per cycle: switched off for a break
    torque_setpoint_nm: float = 12.0
    torque_sigma_nm: float = 0.25
    torque_tolerance_nm: float = 0.75  # a cycle further off is scrapped
    pressure_bar: float = 6.2


class StationModel:
    """The station's values over simulated time: `events()` yields (seconds, {tag: new value}) in time order.

    Values are engineering values (state as a MachineState); the station quantises them to what its registers
    can hold.
    """

    def __init__(self, seed: int, params: StationParams | None = None) -> None:
        self.params = params or StationParams()
        self._rng = random.Random(seed)  # noqa: S311 -- a simulation, not cryptography
        self._queue: list[tuple[float, int, str]] = []
        self._seq = 0
        self.values: dict[str, Value | MachineState] = {
            "state": MachineState.IDLE,
            "cycle_count": 0,
            "good_count": 0,
            "scrap_count": 0,
            "torque_nm": 0.0,
            "air_pressure_bar": self.params.pressure_bar,
            "temp_c": 28.0,
            "estop": False,
            "torque_fault": False,
            "part_missing": False,
            "part_present": False,
        }

    def _at(self, when: float, what: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, what))

    def events(self) -> Iterator[tuple[float, dict[str, Value | MachineState]]]:
        """The initial values at 0 s, then every change, forever."""
        yield 0.0, dict(self.values)
        self._at(3.0, "cycle_start")
        self._at(2.0, "pressure")
        self._at(10.0, "temperature")
        while True:
            now, _seq, what = heapq.heappop(self._queue)
            changes = {
                name: value for name, value in getattr(self, f"_{what}")(now).items() if self.values[name] != value
            }
            self.values.update(changes)
            if changes:
                yield now, changes

    # Each handler schedules what follows and returns the values it sets.

    def _cycle_start(self, now: float) -> dict[str, Value | MachineState]:
        p, rng = self.params, self._rng
        duration = p.ideal_cycle_s * (1 + abs(rng.gauss(0, 0.04)))
        if rng.random() < 0.05:  # a short stop: a stuck part, the operator fetching screws
            duration += rng.expovariate(1 / 15)
        self._at(now + 0.15 * p.ideal_cycle_s, "part_loaded")
        self._at(now + duration, "cycle_end")
        return {"state": MachineState.RUNNING}

    def _part_loaded(self, now: float) -> dict[str, Value | MachineState]:
        return {"part_present": True}

    def _cycle_end(self, now: float) -> dict[str, Value | MachineState]:
        p, rng = self.params, self._rng
        torque = round(rng.gauss(p.torque_setpoint_nm, p.torque_sigma_nm), 2)
        reject = abs(torque - p.torque_setpoint_nm) > p.torque_tolerance_nm or rng.random() < p.scrap_rate
        changes: dict[str, Value | MachineState] = {
            "torque_nm": torque,
            "part_present": False,
            "cycle_count": int(self.values["cycle_count"]) + 1,
        }
        if reject:
            changes["scrap_count"] = int(self.values["scrap_count"]) + 1
        else:
            changes["good_count"] = int(self.values["good_count"]) + 1
        draw = rng.random()
        if abs(torque - p.torque_setpoint_nm) > 3 * p.torque_sigma_nm and draw < 0.3:
            changes.update(self._alarm(now, "torque_fault"))
        elif draw < p.alarm_rate:
            changes.update(self._alarm(now, rng.choices(ALARM_COILS, weights=(1, 3, 5))[0]))
        elif draw < p.alarm_rate + p.setup_rate:
            self._at(now + 120 + rng.expovariate(1 / 180), "back_to_idle")
            changes["state"] = MachineState.SETUP
        elif draw < p.alarm_rate + p.setup_rate + p.off_rate:
            self._at(now + 300 + rng.expovariate(1 / 300), "back_to_idle")
            changes["state"] = MachineState.OFF
        else:
            self._at(now + rng.uniform(0.2, 0.8), "cycle_start")
        return changes

    def _alarm(self, now: float, coil: str) -> dict[str, Value | MachineState]:
        self._at(now + 20 + self._rng.expovariate(1 / 60), "back_to_idle")
        return {"state": MachineState.ALARM, coil: True}

    def _back_to_idle(self, now: float) -> dict[str, Value | MachineState]:
        self._at(now + self._rng.uniform(3, 12), "cycle_start")
        return {"state": MachineState.IDLE, **dict.fromkeys(ALARM_COILS, False)}

    def _pressure(self, now: float) -> dict[str, Value | MachineState]:
        self._at(now + 2.0, "pressure")
        drift = 0.08 * math.sin(2 * math.pi * now / 3600)  # the compressor's slow swing
        draw = 0.15 if self.values["state"] is MachineState.RUNNING else 0.0
        return {"air_pressure_bar": round(self.params.pressure_bar + drift - draw + self._rng.gauss(0, 0.02), 3)}

    def _temperature(self, now: float) -> dict[str, Value | MachineState]:
        self._at(now + 10.0, "temperature")
        target = 34.0 if self.values["state"] is MachineState.RUNNING else 27.0
        current = float(self.values["temp_c"])
        return {"temp_c": round(current + 0.05 * (target - current) + self._rng.gauss(0, 0.1), 1)}


# ---- the Modbus server -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SerialSettings:
    """The serial line of an RTU station (the Modbus serial line spec's default: 9600 baud, 8E1)."""

    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "E"
    stopbits: int = 1
    bytesize: int = 8


@dataclass(frozen=True)
class FailingRange:
    """Reads touching `count` registers (or bits) of `register` from `address` answer exception `code`."""

    register: RegisterType
    address: int
    count: int
    code: int = int(ExcCodes.ILLEGAL_ADDRESS)

    def hit(self, register: RegisterType, address: int, count: int) -> bool:
        """Whether a read of `count` from `address` in `register` touches the range."""
        return register is self.register and address < self.address + self.count and self.address < address + count


class ModbusStation:
    """The assembly station served over Modbus TCP, RTU on a serial line, or RTU framed over TCP, in-process
    (`async with`) or standalone (`main`)."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        seed: int = 1,
        speed: float = 1.0,
        order: Order | str = Order.ABCD,
        unit_id: int = DEFAULT_UNIT_ID,
        params: StationParams | None = None,
        warmup_s: float = 0.0,
        keep_record: bool = True,
        transport: Transport = "tcp",
        serial: SerialSettings | None = None,
        unit_ids: tuple[int, ...] = (),
        failing: tuple[FailingRange, ...] = (),
    ) -> None:
        if speed <= 0 or warmup_s < 0:
            raise ValueError("speed must be > 0 and warmup_s >= 0")
        if (transport == "rtu") != (serial is not None):
            raise ValueError("transport rtu needs serial settings, and only it uses them")
        self.host, self.port = host, port
        self.speed = speed
        self.order = Order(order)
        self.transport: Transport = transport
        self.serial = serial
        # Every unit id shows the same station; the first is `unit_id`.
        self.unit_ids = unit_ids or (unit_id,)
        self.unit_id = self.unit_ids[0]
        self.failing: list[FailingRange] = list(failing)
        self.model = StationModel(seed, params)
        # Simulated seconds run at once before serving: the station starts mid-shift, counters already counting.
        self.warmup_s = warmup_s
        # (wall time, tag, value) of every value the registers exposed, in order; the state as its name.
        self.record: list[tuple[datetime, str, Value | str]] = []
        self._keep_record = keep_record
        self._current: dict[str, Value | str] = {}
        self._setpoints: dict[str, Value] = {"target_qty": 0, "cycle_time_setpoint_s": self.model.params.ideal_cycle_s}
        self._server: ModbusBaseServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """Where it serves: `host:port`, or the serial port."""
        return self.serial.port if self.serial is not None else f"{self.host}:{self.port}"

    def fail(
        self, register: RegisterType, address: int, count: int = 1, code: int = int(ExcCodes.ILLEGAL_ADDRESS)
    ) -> None:
        """From now on, reads touching this range answer exception `code` (2: illegal data address)."""
        self.failing.append(FailingRange(register, address, count, code))

    def heal(self) -> None:
        """Every range reads normally again."""
        self.failing.clear()

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # Called by pymodbus for every access; the station's own writes (set_values) always go through.
        if set_values is not None and function_code in _REGISTER_WRITES:
            self._take_setpoints(start_address, address, registers, [int(value) for value in set_values])
        table = _READ_TABLE.get(function_code)
        if set_values is not None or table is None:
            return None
        for failing in self.failing:
            if failing.hit(table, address, max(count, 1)):
                return ExcCodes(failing.code)
        return None

    def _take_setpoints(self, start_address: int, address: int, registers: list[int], written: list[int]) -> None:
        """Holding registers are written: the setpoints they touch take their new value (the registers change right
        after this returns, so the new words are laid over the old ones here)."""
        for tag in SETPOINTS:
            if not (address < tag.address + tag.span and tag.address < address + len(written)):
                continue
            words = list(registers[tag.address - start_address : tag.address - start_address + tag.span])
            for index, word in enumerate(written):
                if 0 <= address + index - tag.address < tag.span:
                    words[address + index - tag.address] = word
            value = decode(words, tag.data_type, self.order if tag.uses_order else Order.ABCD)
            self._setpoints[tag.name] = value
            if tag.name == "cycle_time_setpoint_s" and math.isfinite(value) and value > 0:
                self.model.params = replace(self.model.params, ideal_cycle_s=float(value))

    def _silence_other_units(self, sending: bool, packet: bytes) -> bytes:
        # On an RTU line a unit id nobody has gets no answer at all (pymodbus would answer for device 0).
        if sending and packet and packet[0] not in self.unit_ids:
            return b""
        return packet

    def setpoints(self) -> dict[str, Value]:
        """The setpoints as the registers hold them (what a client wrote last, or the initial values)."""
        return dict(self._setpoints)

    def current(self) -> dict[str, Value | str]:
        """What a correct client decodes from the registers right now (state as its name)."""
        return dict(self._current)

    def _device(self) -> list[SimDevice]:
        def bits(size: int) -> list[SimData]:
            return [SimData(0, count=size, values=False, datatype=SimType.BITS)]

        def words(size: int) -> list[SimData]:
            return [SimData(0, count=size, values=0, datatype=SimType.REGISTERS)]

        stations = [
            SimDevice(
                id=unit,
                simdata=(
                    bits(TABLE_SIZE[RegisterType.COIL]),
                    bits(TABLE_SIZE[RegisterType.DISCRETE]),
                    words(TABLE_SIZE[RegisterType.HOLDING]),
                    words(TABLE_SIZE[RegisterType.INPUT]),
                ),
                action=self._action,
            )
            for unit in self.unit_ids
        ]
        if 0 in self.unit_ids:  # device 0 answers every unit id
            return stations
        # pymodbus sends every other unit id to device 0; without one it fails with a logged KeyError.
        nobody = SimDevice(id=0, simdata=[SimData(0, count=1, datatype=SimType.INVALID)])
        return [*stations, nobody]

    def _make_server(self) -> ModbusBaseServer:
        if self.serial is not None:
            return ModbusSerialServer(
                self._device(),
                framer=FramerType.RTU,
                port=self.serial.port,
                baudrate=self.serial.baudrate,
                parity=self.serial.parity,
                stopbits=self.serial.stopbits,
                bytesize=self.serial.bytesize,
                trace_packet=self._silence_other_units,
            )
        if self.transport == "rtu_over_tcp":
            return ModbusTcpServer(
                self._device(),
                address=(self.host, self.port),
                framer=FramerType.RTU,
                trace_packet=self._silence_other_units,
            )
        return ModbusTcpServer(self._device(), address=(self.host, self.port))

    async def __aenter__(self) -> ModbusStation:
        """Listen, expose the initial values, start the machine."""
        server = self._make_server()
        try:
            await server.serve_forever(background=True)  # RuntimeError when the port cannot be bound (or opened)
        except termios.error as error:  # pyserial setting up a serial device that refuses a setting (a pty, parity)
            raise RuntimeError(f"{self.where}: the serial device refuses these line settings ({error})") from error
        self._server = server
        sockets = getattr(server.transport, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        events = self.model.events()
        initial: dict[str, Value | MachineState] = {}
        for at, changes in events:
            if at > self.warmup_s:
                events = itertools.chain([(at, changes)], events)
                break
            initial.update(changes)
        await self._expose(initial)
        for tag in SETPOINTS:
            registers = encode(self._setpoints[tag.name], tag.data_type, self.order if tag.uses_order else Order.ABCD)
            for unit in self.unit_ids:
                await server.async_setValues(unit, _WRITE_CODE[tag.register], tag.address, registers)
        self._task = asyncio.create_task(self._run(events), name=f"sim:modbus:{self.where}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the machine and the server."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # unlike `await task`, never swallows a cancellation of our own
            if not task.cancelled() and task.exception() is not None:
                raise RuntimeError("the station's machine task failed") from task.exception()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus 3.16.1 leaves it unannotated
            self._server = None

    async def _run(self, events: Iterator[tuple[float, dict[str, Value | MachineState]]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for at, changes in events:
            delay = started + (at - self.warmup_s) / self.speed - loop.time()
            # Yield even when late, so a very high speed does not starve the server's connections.
            await asyncio.sleep(max(delay, 0))
            await self._expose(changes)

    async def _expose(self, changes: dict[str, Value | MachineState]) -> None:
        """Write changed values to the registers; the record gets what a client decodes from them.

        pymodbus's datastore writes without suspending, so one event's changes are seen by clients all at once.
        """
        server = self._server
        if server is None:
            raise RuntimeError("the station is not serving")
        ts = utcnow()
        for name, value in changes.items():
            tag = _BY_NAME[name]
            if isinstance(value, MachineState):
                registers = encode(STATE_CODES[value], tag.data_type, Order.ABCD)
                exposed: Value | str = STATE_MAP[int(decode(registers, tag.data_type, Order.ABCD))].value
            elif tag.register in (RegisterType.COIL, RegisterType.DISCRETE):
                for unit in self.unit_ids:
                    await server.async_setValues(unit, _WRITE_CODE[tag.register], tag.address, [bool(value)])
                self._note(ts, name, bool(value))
                continue
            else:
                order = self.order if tag.uses_order else Order.ABCD
                raw = unapply_scale(value, tag.scale, 0.0) if tag.scale != 1.0 else value
                registers = encode(raw, tag.data_type, order)
                exposed = apply_scale(decode(registers, tag.data_type, order), tag.scale, 0.0)
            for unit in self.unit_ids:
                await server.async_setValues(unit, _WRITE_CODE[tag.register], tag.address, registers)
            self._note(ts, name, exposed)

    def _note(self, ts: datetime, name: str, value: Value | str) -> None:
        self._current[name] = value
        if self._keep_record:
            self.record.append((ts, name, value))


# ---- standalone --------------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.modbus", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed on READY)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second")
    parser.add_argument("--warmup", type=float, default=0.0, help="simulated seconds run at once before serving")
    parser.add_argument("--order", choices=[order.value for order in Order], default=Order.ABCD.value)
    parser.add_argument(
        "--unit-id", type=int, action="append", help=f"repeat for several units on one line (default {DEFAULT_UNIT_ID})"
    )
    parser.add_argument("--cycle-time", type=float, default=StationParams.ideal_cycle_s, help="ideal cycle, s")
    parser.add_argument("--scrap-rate", type=float, default=StationParams.scrap_rate)
    parser.add_argument("--transport", choices=["tcp", "rtu", "rtu_over_tcp"], default="tcp")
    parser.add_argument("--serial-port", help="the serial device of --transport rtu")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="E")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="TABLE:ADDRESS[:COUNT[:CODE]]",
        help="reads touching this range answer a Modbus exception (default code 2), e.g. input:0 or holding:10:2:4",
    )
    add_ready_file_option(parser)
    args = parser.parse_args(argv)
    if (args.transport == "rtu") != (args.serial_port is not None):
        parser.error("--serial-port goes with --transport rtu, and --transport rtu needs it")
    try:
        args.fail = tuple(_failing_range(text) for text in args.fail)
    except ValueError as error:
        parser.error(f"--fail: {error}")
    return args


def _failing_range(text: str) -> FailingRange:
    """`holding:40:4:2` (table, address, count, exception code; count 1 and code 2 when left out)."""
    table, *numbers = text.split(":")
    if not 1 <= len(numbers) <= 3:
        raise ValueError(f"{text!r} is not TABLE:ADDRESS[:COUNT[:CODE]]")
    given = [int(number) for number in numbers]
    address, count, code = given + [1, int(ExcCodes.ILLEGAL_ADDRESS)][len(given) - 1 :]
    return FailingRange(RegisterType(table), address, count, code)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT."""
    params = StationParams(ideal_cycle_s=args.cycle_time, scrap_rate=args.scrap_rate)
    station = ModbusStation(
        args.host,
        args.port,
        seed=args.seed,
        speed=args.speed,
        order=args.order,
        unit_ids=tuple(args.unit_id or (DEFAULT_UNIT_ID,)),
        params=params,
        warmup_s=args.warmup,
        keep_record=False,
        transport=args.transport,
        serial=SerialSettings(args.serial_port, args.baudrate, args.parity, args.stopbits, args.bytesize)
        if args.serial_port is not None
        else None,
        failing=args.fail,
    )
    with stop_on_signals() as stop:
        async with station, readiness(args.ready_file) as ready:
            if station.serial is not None:
                ready.ready(serial_port=station.serial.port, unit_ids=list(station.unit_ids))
                print(f"READY modbus rtu {station.serial.port}", flush=True)
            else:
                ready.ready(host=station.host, port=station.port, unit_ids=list(station.unit_ids))
                framing = "rtu_over_tcp " if station.transport == "rtu_over_tcp" else ""
                print(f"READY modbus {framing}{station.host}:{station.port}", flush=True)
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m simulators.modbus`."""
    args = _parse_args(argv)
    try:
        asyncio.run(serve(args))
    except RuntimeError as error:
        print(f"modbus simulator: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

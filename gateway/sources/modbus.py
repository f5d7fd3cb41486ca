"""Modbus source: polls one device over TCP, an RTU serial line, or RTU through a serial device server, with
pymodbus's async clients, and decodes with `core.registers`.

Each poll reads the device's tags in as few requests as `plan_reads` allows, stamps every value of the poll with
one gateway time taken right after the last read, decodes (codec + scale/offset) and maps the state tag's code
through `state_map`. Polls start every `poll_interval_s` counted from the start of the previous poll, so the
schedule does not drift; a poll that overruns its interval is followed by the next one at once (no burst of
catch-up polls) and counted in `overruns`.

A block answered with a Modbus exception (an illegal data address, a busy device) publishes its tags once as bad
(value None, the exception code and name as the quality), and nothing more for them until the block reads again;
the other blocks are published as usual. A device that does not answer (timeout, connection lost), that answers
only exceptions, or a gateway saying its target is unreachable (exception 10 or 11) raises SourceError: pymodbus's
own reconnect and retries are switched off, and the gateway's supervisor reconnects with its capped, jittered
backoff and marks the machine offline.

The devices of one serial line (`rtu`: one serial_port; `rtu_over_tcp`: one host:port) share one `SerialLine`: one
client, and one first-come-first-served lock taken for a whole poll of one device, so one request at a time is on
the wire, each with its device's own timeout and followed by its device's pause. A device waits at most one poll
of each other device of its line; a unit that does not answer costs the others one timeout per attempt, and its
failure ends only its own source, never the shared connection.

Writes (commands, see `gateway.commands`) go through the same connection and the same turns: a write reads the tag,
writes it and reads it back in one turn, encoded by `write_words` with the codec the polls decode with. Over tcp a
lock of the source's own plays the part of the line's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import termios
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from core.clock import utcnow
from core.commands import WriteValue
from core.contract import STATE_TAG, Quality, QualityLevel
from core.logging import get_logger
from core.registers import DataType, RegisterType, Value, apply_scale, decode, encode, unapply_scale
from gateway.config import ModbusDevice, ModbusTag
from gateway.sources.base import SourceError, TagValue, WriteFailed, WriteRefused, Written

log = get_logger("shopfloor.gateway.modbus")


class _DeviceTroubleIsAWarning(logging.Filter):
    """pymodbus logs a request that timed out or was answered badly at ERROR (with a hex dump) and raises it too;
    the gateway handles the exception (the tags go bad, or the device reconnects, logged once as `device_error` and
    counted). A device that misses a reply is a warning, not an alarm: its records are kept, at WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("pymodbus.logging").addFilter(_DeviceTroubleIsAWarning())

# Read Coils / Read Discrete Inputs carry at most 2000 bits (Modbus application protocol, 6.1 and 6.2).
MAX_BITS_PER_READ = 2000
BIT_TABLES = (RegisterType.COIL, RegisterType.DISCRETE)


@dataclass(frozen=True)
class ReadRequest:
    """One read: `count` registers (or bits) of one table from `address`, holding these tags."""

    register_type: RegisterType
    address: int
    count: int
    tags: tuple[ModbusTag, ...]


def plan_reads(
    tags: Sequence[ModbusTag], max_gap: int, max_registers: int, *, max_bits: int = MAX_BITS_PER_READ
) -> list[ReadRequest]:
    """The fewest reads that cover `tags`: one table per request, gaps of up to `max_gap` unused registers
    read through, never more than `max_registers` registers (or `max_bits` coils/inputs) in one request.

    Requests come table by table (holding, input, coil, discrete), by address within a table. A tag that alone
    is wider than the limit cannot be read and raises ValueError.
    """
    if max_gap < 0 or max_registers < 1 or max_bits < 1:
        raise ValueError("max_gap must be >= 0, max_registers and max_bits >= 1")
    requests: list[ReadRequest] = []
    for table in RegisterType:
        limit = max_bits if table in BIT_TABLES else max_registers
        members: list[ModbusTag] = []
        start = end = 0
        for tag in sorted((tag for tag in tags if tag.table is table), key=lambda tag: (tag.address, tag.name)):
            tag_end = tag.address + tag.count
            if tag.count > limit:
                raise ValueError(f"tag {tag.name!r} spans {tag.count} registers, over the limit of {limit} per request")
            if members and tag.address - end <= max_gap and max(end, tag_end) - start <= limit:
                members.append(tag)
                end = max(end, tag_end)
                continue
            if members:
                requests.append(ReadRequest(table, start, end - start, tuple(members)))
            members, start, end = [tag], tag.address, tag_end
        if members:
            requests.append(ReadRequest(table, start, end - start, tuple(members)))
    return requests


# Modbus exception codes (application protocol spec, section 7) by the names the spec gives them.
EXCEPTION_NAMES = {
    1: "IllegalFunction",
    2: "IllegalDataAddress",
    3: "IllegalDataValue",
    4: "ServerDeviceFailure",
    5: "Acknowledge",
    6: "ServerDeviceBusy",
    8: "MemoryParityError",
    10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}
# A Modbus gateway answering these says the device behind it cannot be reached: the device is down, not one block.
UNREACHABLE_CODES = frozenset({10, 11})
_INTEGER_TYPES = frozenset(DataType) - {DataType.FLOAT32, DataType.FLOAT64, DataType.BOOL}
# pymodbus's own response timeout, kept above any device's `timeout_s` (at most 120 s) so that the device's timeout,
# applied around each request, always comes first; pymodbus's would also close the connection after 4 timeouts
# in a row, which on a shared line would cut off the units that answer.
_LIBRARY_TIMEOUT_S = 3600.0

Data = Sequence[int] | Sequence[bool]


class BlockFailed(Exception):
    """One request was answered with a Modbus exception: the device is there, this block cannot be read (or written)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.quality = Quality(QualityLevel.BAD, code, EXCEPTION_NAMES.get(code, f"Exception{code}"))


class SerialLine:
    """One connection carrying RTU frames to several units (a serial port, or a serial device server), shared by
    the sources of those units: one request on the wire at a time.

    `open()` / `release()` count the sources using it: the first connects, the last disconnects. A request that is
    not answered within its device's timeout fails for that device only; the line stays open for the others.
    """

    def __init__(self, device: ModbusDevice) -> None:
        self.name = device.line
        self._first = device
        self._client: ModbusBaseClient | None = None
        self._lock = asyncio.Lock()
        self._users = 0
        self._quiet_until = 0.0

    def _new_client(self) -> ModbusBaseClient:
        device = self._first
        name = f"modbus:{self.name}"
        baudrate, parity, stopbits, bytesize = device.line_settings
        if device.serial_port is not None:
            if baudrate is None or parity is None or stopbits is None or bytesize is None:
                raise SourceError(f"line {self.name}: serial settings missing")  # the config fills them in
            return AsyncModbusSerialClient(
                device.serial_port,
                framer=FramerType.RTU,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=parity,
                stopbits=stopbits,
                name=name,
                timeout=_LIBRARY_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,
            )
        host, port = device.host or "", device.port or 0
        return AsyncModbusTcpClient(
            host,
            port=port,
            framer=FramerType.RTU,
            name=name,
            timeout=_LIBRARY_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
        )

    async def open(self, timeout_s: float) -> None:
        """Join the line, connecting it when it is not (first user, or the connection was lost); SourceError when
        it cannot be opened within `timeout_s`."""
        self._users += 1
        try:
            async with self._lock:
                if self._client is not None and self._client.connected:
                    return
                if self._client is not None:
                    self._client.close()
                client = self._new_client()
                try:
                    async with asyncio.timeout(timeout_s):
                        connected = await client.connect()
                except TimeoutError:
                    connected = False
                except termios.error as error:
                    # pyserial setting up a port that refuses a line setting (a pseudo-terminal refuses parity)
                    client.close()
                    raise SourceError(
                        f"line {self.name}: the serial port refuses the line settings ({error})"
                    ) from error
                if not connected:
                    client.close()
                    raise SourceError(f"line {self.name}: cannot open within {timeout_s} s")
                self._client = client
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Leave the line; the last user closes it."""
        self._users -= 1
        if self._users <= 0:
            if _LINES.get(self.name) is self:
                del _LINES[self.name]
            if self._client is not None:
                self._client.close()
                self._client = None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """The line for one poll of one device: its requests go out back to back, nobody else's in between.

        Turns are served in order of asking (asyncio.Lock is first come, first served), so a device waits at most
        one poll of every other device of the line, and a unit that does not answer costs the others one timeout
        per attempt however many blocks they read.
        """
        async with self._lock:
            yield

    async def execute(
        self, call: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]], *, timeout_s: float, pause_s: float
    ) -> ModbusPDU:
        """Send one request (within a `turn`) once the line is quiet; TimeoutError after `timeout_s` without an
        answer. The line then stays silent `pause_s` before the next request, whoever sends it."""
        if not self._lock.locked():
            raise RuntimeError("SerialLine.execute outside a turn")
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or not client.connected:
            raise SourceError(f"line {self.name}: not connected")
        quiet = self._quiet_until - loop.time()
        if quiet > 0:
            await asyncio.sleep(quiet)
        try:
            async with asyncio.timeout(timeout_s):
                return await call(client)
        finally:
            self._quiet_until = loop.time() + pause_s


# The open lines by `ModbusDevice.line`; sources of the same line find it here.
_LINES: dict[str, SerialLine] = {}


def shared_line(device: ModbusDevice) -> SerialLine:
    """The line a device's requests go over, made when no source of that line has it open."""
    line = _LINES.get(device.line)
    if line is None:
        line = _LINES[device.line] = SerialLine(device)
    return line


class ModbusSource:
    """A polled Modbus device (implements `gateway.sources.base.Source`)."""

    def __init__(self, device: ModbusDevice) -> None:
        self.device = device
        self.plan = plan_reads(device.tags, device.max_gap, device.max_registers_per_request)
        # State codes missing from state_map, counted per poll; such a poll publishes no state.
        self.unmapped_states = 0
        # Polls that took longer than poll_interval_s.
        self.overruns = 0
        # Blocks (indexes into `plan`) answering an exception: their tags were published bad once.
        self.failing: set[int] = set()
        self._client: AsyncModbusTcpClient | None = None
        self._line: SerialLine | None = None
        # Over tcp: one request at a time on this device's own connection, polls and writes alike.
        self._lock = asyncio.Lock()
        self._tags = {tag.name: tag for tag in device.tags}
        self._last_unmapped: Value | None = None

    @property
    def line(self) -> SerialLine | None:
        """The shared line this source uses while connected (rtu and rtu_over_tcp); None over tcp."""
        return self._line

    @property
    def _where(self) -> str:
        return f"{self.device.machine} ({self.device.line} unit {self.device.unit_id})"

    async def __aenter__(self) -> ModbusSource:
        """Connect (or join the shared serial line) within the device's timeout; SourceError when that fails."""
        if self.device.transport != "tcp":
            line = shared_line(self.device)
            await line.open(self.device.timeout_s)
            self._line = line
            return self
        client = AsyncModbusTcpClient(
            self.device.host or "",
            port=self.device.port or 502,
            name=f"modbus:{self.device.machine}",
            timeout=self.device.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        if not await client.connect():
            client.close()
            raise SourceError(f"{self._where}: cannot connect within {self.device.timeout_s} s")
        self._client = client
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Disconnect (leave the shared line: the last of its devices closes it)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._line is not None:
            self._line.release()
            self._line = None

    async def values(self) -> AsyncGenerator[list[TagValue], None]:
        """One list of values per poll, every `poll_interval_s` from the start of the previous poll."""
        loop = asyncio.get_running_loop()
        interval = self.device.poll_interval_s
        started = loop.time()
        while True:
            yield await self.poll()
            due = started + interval
            now = loop.time()
            if now < due:
                await asyncio.sleep(due - now)
                started = due
            else:
                self.overruns += 1
                started = now

    async def poll(self) -> list[TagValue]:
        """Read every planned request once and decode. A block answered with an exception gives its tags as bad
        the first time (nothing while it keeps failing); SourceError when the device does not answer, or answers
        nothing but exceptions."""
        results: list[tuple[int, ReadRequest, Data | BlockFailed]] = []
        async with self._turn():
            for index, request in enumerate(self.plan):
                if index and self.device.request_pause_s:
                    await asyncio.sleep(self.device.request_pause_s)
                try:
                    results.append((index, request, await self._read(request)))
                except BlockFailed as failure:
                    results.append((index, request, failure))
        failures = [result for _, _, result in results if isinstance(result, BlockFailed)]
        if len(failures) == len(results):
            raise SourceError(f"{self._where}: every read answered an exception, the last: {failures[-1]}")
        ts = utcnow()
        values: list[TagValue] = []
        for index, request, data in results:
            if isinstance(data, BlockFailed):
                if index not in self.failing:
                    self.failing.add(index)
                    log.warning("modbus_block_failed", machine=self.device.machine, error=str(data))
                    values.extend(self._bad(request, data.quality, ts))
                continue
            if index in self.failing:
                self.failing.discard(index)
                log.info("modbus_block_recovered", machine=self.device.machine, block=self._what(request))
            for tag in request.tags:
                value = self._value(tag, request, data, ts)
                if value is not None:
                    values.append(value)
        return values

    def _bad(self, request: ReadRequest, quality: Quality, ts: datetime) -> list[TagValue]:
        # The contract gives a state no quality: a state tag in a failed block is left out (the last state stands).
        return [TagValue(tag.name, None, ts, quality) for tag in request.tags if tag.name != self.device.state_tag]

    @staticmethod
    def _what(request: ReadRequest) -> str:
        return f"{request.count} {request.register_type.value} from {request.address}"

    async def _read(self, request: ReadRequest) -> Data:
        what = self._what(request)
        unit = self.device.unit_id

        async def call(client: ModbusBaseClient) -> ModbusPDU:
            match request.register_type:
                case RegisterType.HOLDING:
                    return await client.read_holding_registers(request.address, count=request.count, device_id=unit)
                case RegisterType.INPUT:
                    return await client.read_input_registers(request.address, count=request.count, device_id=unit)
                case RegisterType.COIL:
                    return await client.read_coils(request.address, count=request.count, device_id=unit)
                case RegisterType.DISCRETE:
                    return await client.read_discrete_inputs(request.address, count=request.count, device_id=unit)

        response = await self._send(call, f"reading {what}")
        if request.register_type in BIT_TABLES:
            # Bits come padded to a whole byte.
            bits = response.bits[: request.count]
            if len(bits) != request.count:
                raise SourceError(f"{self._where}: reading {what} returned {len(bits)} bits")
            return bits
        if len(response.registers) != request.count:
            raise SourceError(f"{self._where}: reading {what} returned {len(response.registers)} registers")
        return response.registers

    async def _send(self, call: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]], doing: str) -> ModbusPDU:
        """One request, within the caller's turn; BlockFailed for a Modbus exception answer, SourceError when the
        device does not answer or cannot be reached."""
        try:
            if self._line is not None:
                response = await self._line.execute(
                    call, timeout_s=self.device.timeout_s, pause_s=self.device.line_pause_s
                )
            else:
                client = self._client
                if client is None or not client.connected:
                    raise SourceError(f"{self._where}: not connected")
                response = await call(client)
        except TimeoutError as error:
            raise SourceError(f"{self._where}: {doing} failed: no answer within {self.device.timeout_s} s") from error
        except (ModbusException, OSError) as error:
            raise SourceError(f"{self._where}: {doing} failed: {error}") from error
        if response.isError():
            code = getattr(response, "exception_code", None)
            if not isinstance(code, int) or code in UNREACHABLE_CODES:
                raise SourceError(f"{self._where}: {doing} answered {response}")
            raise BlockFailed(code, f"{self._where}: {doing} answered exception {code}")
        return response

    # -- writes -------------------------------------------------------------------------------------------------

    def check_write(self, tag: str, value: WriteValue) -> None:
        """WriteRefused when the tag is not writable or its data type cannot hold `value` once un-scaled."""
        write_words(self._writable(tag), value)

    async def write(self, tag: str, value: WriteValue) -> Written:
        """Read the tag, write it (coil: Write Single Coil; one register: Write Single Register; wider: Write
        Multiple Registers) and read it back, all in one turn of the connection, so no poll comes in between."""
        spec = self._writable(tag)
        words = write_words(spec, value)
        request = ReadRequest(spec.table, spec.address, spec.count, (spec,))
        unit = self.device.unit_id

        async def call(client: ModbusBaseClient) -> ModbusPDU:
            if isinstance(words, bool):
                return await client.write_coil(spec.address, words, device_id=unit)
            if len(words) == 1:
                return await client.write_register(spec.address, words[0], device_id=unit)
            return await client.write_registers(spec.address, words, device_id=unit)

        async with self._turn():
            try:
                previous = self._engineering(spec, request, await self._read(request))
            except BlockFailed as failure:
                raise WriteFailed(str(failure)) from failure
            try:
                await self._send(call, f"writing {spec.table.value} {spec.address} ({tag})")
                read_back = self._engineering(spec, request, await self._read(request))
            except (BlockFailed, SourceError) as failure:
                raise WriteFailed(str(failure), previous=previous) from failure
        return Written(previous, read_back)

    def _writable(self, tag: str) -> ModbusTag:
        spec = self._tags.get(tag)
        if spec is None or spec.writable is None:
            raise WriteRefused(f"not a writable tag of {self.device.machine}")
        return spec

    def _turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The connection for one poll or one write: the shared line's turn, or this device's own lock."""
        return self._line.turn() if self._line is not None else self._lock

    @staticmethod
    def _engineering(tag: ModbusTag, request: ReadRequest, data: Data) -> Value:
        offset = tag.address - request.address
        if request.register_type in BIT_TABLES:
            return bool(data[offset])
        raw = decode([int(word) for word in data[offset : offset + tag.count]], tag.data_type, tag.order)
        return apply_scale(raw, tag.scale, tag.offset)

    def _value(self, tag: ModbusTag, request: ReadRequest, data: Data, ts: datetime) -> TagValue | None:
        if tag.name == self.device.state_tag:
            offset = tag.address - request.address
            words = [int(word) for word in data[offset : offset + tag.count]]
            raw = bool(data[offset]) if request.register_type in BIT_TABLES else decode(words, tag.data_type, tag.order)
            return self._state(tag, raw, ts)
        return TagValue(tag.name, self._engineering(tag, request, data), ts)

    def _state(self, tag: ModbusTag, raw: Value, ts: datetime) -> TagValue | None:
        code = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
        state = self.device.state_map.get(code) if code is not None else None
        if state is None:
            self.unmapped_states += 1
            if raw != self._last_unmapped:
                # Once per new code, not once per poll: a PLC stuck on an unknown code would flood the log.
                log.warning(
                    "unmapped_state",
                    machine=self.device.machine,
                    tag=tag.name,
                    code=raw,
                    unmapped_states=self.unmapped_states,
                )
            self._last_unmapped = raw
            return None
        self._last_unmapped = None
        # The contract's reserved key: the ingestor stores it as a machine-state change.
        return TagValue(STATE_TAG, state.value, ts)


def write_words(tag: ModbusTag, value: WriteValue) -> bool | list[int]:
    """What goes on the wire for an engineering value: a coil's bit, or the registers of the raw value
    (value - offset) / scale encoded with the tag's data type and order, the codec the polls decode with.
    WriteRefused when the tag's data type cannot hold it."""
    if tag.table is RegisterType.COIL:
        return bool(value)
    if tag.data_type is DataType.BOOL:
        return encode(bool(value), tag.data_type, tag.order)
    raw: float | int = value
    if tag.scale != 1 or tag.offset != 0:
        raw = unapply_scale(float(value), tag.scale, tag.offset)
    if tag.data_type in _INTEGER_TYPES:
        if not math.isfinite(raw):  # a huge value over a tiny scale
            raise WriteRefused(f"{value!r} is out of range for {tag.data_type.value} at scale {tag.scale:g}")
        whole = round(raw)
        # A value between two steps of the scale would be rounded by the register, and read back different.
        if not math.isclose(raw, whole, rel_tol=1e-9, abs_tol=1e-9):
            raise WriteRefused(
                f"{value!r} is not a whole step of scale {tag.scale:g} and offset {tag.offset:g} "
                f"(raw {raw:.10g} for {tag.data_type.value})"
            )
        raw = whole
    try:
        return encode(raw, tag.data_type, tag.order)
    except ValueError as error:
        raise WriteRefused(f"{value!r} does not fit the register: {error}") from None

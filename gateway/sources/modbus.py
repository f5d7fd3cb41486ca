"""Modbus TCP source: polls one device with pymodbus's AsyncModbusTcpClient and decodes with `core.registers`.

Each poll reads the device's tags in as few requests as `plan_reads` allows, stamps every value of the poll with
one gateway time taken right after the last read, decodes (codec + scale/offset) and maps the state tag's code
through `state_map`. Polls start every `poll_interval_s` counted from the start of the previous poll, so the
schedule does not drift; a poll that overruns its interval is followed by the next one at once (no burst of
catch-up polls) and counted in `overruns`.

pymodbus's own reconnect and retries are switched off: one failed request raises SourceError and the gateway's
supervisor reconnects with its capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from core.clock import utcnow
from core.contract import STATE_TAG
from core.logging import get_logger
from core.registers import RegisterType, Value, apply_scale, decode
from gateway.config import ModbusDevice, ModbusTag
from gateway.sources.base import SourceError, TagValue

log = get_logger("shopfloor.gateway.modbus")

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


class ModbusSource:
    """A polled Modbus TCP device (implements `gateway.sources.base.Source`)."""

    def __init__(self, device: ModbusDevice) -> None:
        self.device = device
        self.plan = plan_reads(device.tags, device.max_gap, device.max_registers_per_request)
        # State codes missing from state_map, counted per poll; such a poll publishes no state.
        self.unmapped_states = 0
        # Polls that took longer than poll_interval_s.
        self.overruns = 0
        self._client: AsyncModbusTcpClient | None = None
        self._last_unmapped: Value | None = None

    @property
    def _where(self) -> str:
        return f"{self.device.machine} ({self.device.host}:{self.device.port} unit {self.device.unit_id})"

    async def __aenter__(self) -> ModbusSource:
        """Connect within the device's timeout; SourceError when the device does not answer."""
        client = AsyncModbusTcpClient(
            self.device.host,
            port=self.device.port,
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
        """Disconnect."""
        if self._client is not None:
            self._client.close()
            self._client = None

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
        """Read every planned request once and decode; SourceError on any failed read."""
        results: list[tuple[ReadRequest, Sequence[int] | Sequence[bool]]] = []
        for index, request in enumerate(self.plan):
            if index and self.device.request_pause_s:
                await asyncio.sleep(self.device.request_pause_s)
            results.append((request, await self._read(request)))
        ts = utcnow()
        values: list[TagValue] = []
        for request, data in results:
            for tag in request.tags:
                value = self._value(tag, request, data, ts)
                if value is not None:
                    values.append(value)
        return values

    async def _read(self, request: ReadRequest) -> Sequence[int] | Sequence[bool]:
        client = self._client
        if client is None or not client.connected:
            raise SourceError(f"{self._where}: not connected")
        what = f"{request.count} {request.register_type.value} from {request.address}"
        unit = self.device.unit_id
        try:
            response: ModbusPDU
            match request.register_type:
                case RegisterType.HOLDING:
                    response = await client.read_holding_registers(request.address, count=request.count, device_id=unit)
                case RegisterType.INPUT:
                    response = await client.read_input_registers(request.address, count=request.count, device_id=unit)
                case RegisterType.COIL:
                    response = await client.read_coils(request.address, count=request.count, device_id=unit)
                case RegisterType.DISCRETE:
                    response = await client.read_discrete_inputs(request.address, count=request.count, device_id=unit)
        except (ModbusException, OSError) as error:
            raise SourceError(f"{self._where}: reading {what} failed: {error}") from error
        if response.isError():
            raise SourceError(f"{self._where}: reading {what} answered {response}")
        if request.register_type in BIT_TABLES:
            # Bits come padded to a whole byte.
            bits = response.bits[: request.count]
            if len(bits) != request.count:
                raise SourceError(f"{self._where}: reading {what} returned {len(bits)} bits")
            return bits
        if len(response.registers) != request.count:
            raise SourceError(f"{self._where}: reading {what} returned {len(response.registers)} registers")
        return response.registers

    def _value(
        self, tag: ModbusTag, request: ReadRequest, data: Sequence[int] | Sequence[bool], ts: datetime
    ) -> TagValue | None:
        offset = tag.address - request.address
        raw: Value
        if request.register_type in BIT_TABLES:
            raw = bool(data[offset])
        else:
            raw = decode([int(word) for word in data[offset : offset + tag.count]], tag.data_type, tag.order)
        if tag.name == self.device.state_tag:
            return self._state(tag, raw, ts)
        return TagValue(tag.name, apply_scale(raw, tag.scale, tag.offset), ts)

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

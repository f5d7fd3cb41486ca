"""Sequence gaps: which of a publisher's `seq` numbers never arrived, told apart from late and repeated ones.

A gateway numbers its messages 1, 2, 3 … per machine. Three things make a plain "next = last + 1" check wrong:
several ingestors in one shared group each see only part of a stream; a gateway replaying its buffer after an
outage sends its live messages first and the older ones after (live-first); and a gateway that restarts counts
from 1 again. So per publisher the state is the highest number below which everything is accounted for
(`contiguous`), the numbers seen above it (a bit set), and since when the missing ones are awaited. A number is
counted missing only when it is still missing `reorder` after a later one arrived and nothing before it moved. The
state lives in the database (`telemetry_seq`) and is updated in the transaction of the batch that holds the
messages, so every ingestor of a group adds to the same record, and a batch that rolls back changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.contract import Telemetry
from core.ingest import MachineKey
from core.lru import LruCache
from core.models import TelemetrySeq

# A drop larger than this is a publisher that restarted its counter, not a late or repeated message.
RESTART_DROP = 1000
# Numbers kept above `contiguous` (a bit each): a jump further ahead counts what falls out of the window as missing.
# 2**20 bits is 128 KiB at most, reached only while a gateway replays a backlog of a million messages.
WINDOW = 1 << 20
# Machines known to have a row already (so a batch does not insert one first); bounded like every cache.
KNOWN_ROWS = 10_000


@dataclass
class SeqState:
    """One publisher's sequence: everything up to `contiguous` is accounted for (seen or counted missing); bit i
    of `ahead` says whether `contiguous + 1 + i` was seen."""

    contiguous: int | None = None  # None: nothing seen yet
    ahead: int = 0
    stalled_since: datetime | None = None  # since when the numbers missing up to `stall_mark` are awaited
    stall_mark: int | None = None  # the highest number seen then: what is missing below it has waited long enough
    previous_high: int | None = None  # the highest number before a restart: its late messages are not gaps
    missing_total: int = 0

    def observe(self, numbers: Iterable[int], *, now: datetime, reorder: timedelta) -> int:
        """Take the numbers of one batch; how many numbers this makes missing for good."""
        before = self.contiguous
        missing = 0
        for number in sorted(numbers):
            missing += self._take(number)
        if self.ahead and self.stalled_since is not None and self.contiguous == before:
            if now - self.stalled_since >= reorder:
                missing += self._give_up_below_mark()
                self._stall(now)
        else:
            # No hole; or a new one; or the oldest one was filled, and what is missing now is awaited from now.
            self._stall(now)
        self.missing_total += missing
        return missing

    def _stall(self, now: datetime) -> None:
        if self.ahead:
            self.stalled_since, self.stall_mark = now, (self.contiguous or 0) + self.ahead.bit_length()
        else:
            self.stalled_since, self.stall_mark = None, None

    def _give_up_below_mark(self) -> int:
        """Count as missing what is still missing up to the mark (it has waited the reorder window); move past."""
        contiguous = self.contiguous or 0
        span = (self.stall_mark or contiguous) - contiguous
        if span <= 0:
            return 0
        missing = span - (self.ahead & ((1 << span) - 1)).bit_count()
        self.ahead >>= span
        self.contiguous = contiguous + span
        self._advance()
        return missing

    def _advance(self) -> None:
        run = (~self.ahead & (self.ahead + 1)).bit_length() - 1  # how many numbers in a row from contiguous + 1
        if run:
            self.contiguous = (self.contiguous or 0) + run
            self.ahead >>= run

    def _take(self, number: int) -> int:
        if self.contiguous is None:
            self.contiguous = number
            return 0
        if self.previous_high is not None:
            if self.contiguous >= self.previous_high - 2 * RESTART_DROP:
                self.previous_high = None  # the new count caught up: nothing can be told apart any more
            elif abs(number - self.previous_high) < abs(number - self.contiguous):
                self.previous_high = max(self.previous_high, number)
                return 0  # a late message from before the restart (a replayed buffer)
        offset = number - self.contiguous - 1
        if offset < 0:
            if -offset > RESTART_DROP:
                # The publisher restarted its count: start again there, remembering where the old count was.
                self.previous_high = self.contiguous + self.ahead.bit_length()
                self.contiguous, self.ahead, self.stalled_since, self.stall_mark = number, 0, None, None
            return 0  # seen already (a redelivery) or counted already
        missing = 0
        if offset >= WINDOW:
            shift = offset - WINDOW + 1
            missing = shift - (self.ahead & ((1 << shift) - 1)).bit_count()
            self.ahead >>= shift
            self.contiguous += shift
            offset -= shift
        self.ahead |= 1 << offset
        self._advance()
        return missing


def _bits(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "little")


@dataclass(frozen=True)
class Tracked:
    """What a batch did to the records: publishers with numbers now missing (and how many), machines recorded."""

    gaps: dict[MachineKey, int]
    machine_ids: list[int]


class SequenceTracker:
    """Gap counting in the batch's transaction (see the module docstring)."""

    def __init__(self, *, reorder: timedelta):
        self.reorder = reorder
        self.known: LruCache[int, bool] = LruCache(KNOWN_ROWS)

    async def track(
        self, conn: AsyncConnection, telemetry: Sequence[Telemetry], ids: dict[MachineKey, int], *, now: datetime
    ) -> Tracked:
        """Add the batch's numbers to each publisher's record; the publishers with numbers now missing, and how many.

        Rows are created and locked in machine-id order: concurrent batches of several ingestors wait for each
        other, never deadlock."""
        numbers: dict[int, list[int]] = {}
        keys: dict[int, MachineKey] = {}
        for message in telemetry:
            key = (message.site, message.machine)
            if message.seq is not None and key in ids:
                numbers.setdefault(ids[key], []).append(message.seq)
                keys[ids[key]] = key
        if not numbers:
            return Tracked({}, [])
        machine_ids = sorted(numbers)
        new = [machine_id for machine_id in machine_ids if self.known.get(machine_id) is None]
        if new:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(TelemetrySeq)
            await conn.execute(
                insert.values([{"machine_id": machine_id, "ahead": b""} for machine_id in new]).on_conflict_do_nothing()
            )
        rows = await conn.execute(
            select(
                TelemetrySeq.machine_id,
                TelemetrySeq.contiguous,
                TelemetrySeq.ahead,
                TelemetrySeq.stalled_since,
                TelemetrySeq.stall_mark,
                TelemetrySeq.previous_high,
                TelemetrySeq.missing_total,
            )
            .where(TelemetrySeq.machine_id.in_(machine_ids))
            .order_by(TelemetrySeq.machine_id)
            .with_for_update()
        )
        updates = []
        gaps: dict[MachineKey, int] = {}
        for machine_id, contiguous, ahead, stalled_since, stall_mark, previous_high, missing_total in rows:
            state = SeqState(
                contiguous, int.from_bytes(ahead, "little"), stalled_since, stall_mark, previous_high, missing_total
            )
            missing = state.observe(numbers[machine_id], now=now, reorder=self.reorder)
            if missing:
                gaps[keys[machine_id]] = missing
            updates.append(
                {
                    "id": machine_id,
                    "contiguous": state.contiguous,
                    "ahead": _bits(state.ahead),
                    "stalled_since": state.stalled_since,
                    "stall_mark": state.stall_mark,
                    "previous_high": state.previous_high,
                    "missing_total": state.missing_total,
                    "updated_at": now,
                }
            )
        await conn.execute(
            update(TelemetrySeq)
            .where(TelemetrySeq.machine_id == bindparam("id"))
            .values(
                contiguous=bindparam("contiguous"),
                ahead=bindparam("ahead"),
                stalled_since=bindparam("stalled_since"),
                stall_mark=bindparam("stall_mark"),
                previous_high=bindparam("previous_high"),
                missing_total=bindparam("missing_total"),
                updated_at=bindparam("updated_at"),
            ),
            updates,
        )
        return Tracked(gaps, machine_ids)

    def committed(self, tracked: Tracked) -> None:
        """After the commit: these machines have a record now."""
        for machine_id in tracked.machine_ids:
            self.known.put(machine_id, True)

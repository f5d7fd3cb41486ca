"""The gateway's store-and-forward queue: one SQLite file in WAL mode, bounded, dropping the oldest, counted.

Every outgoing message is appended here first and deleted only after the broker's PUBACK, so a broker outage or
a restart loses nothing: the file is the truth. Bounds (message count, bytes, age) drop the OLDEST messages and
count every drop by reason in the file itself, so the counters survive restarts too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 2
OVERFLOW: Final = "overflow"
EXPIRED: Final = "expired"

# AUTOINCREMENT: ids are never reused, even after the table empties, so the id of a message still in flight can
# never name a newer message when its PUBACK finally arrives (and FIFO by id holds across restarts).
# `size` and `readings` sit before `payload` so reading the accounting columns never touches a payload's overflow
# pages (a file made by schema 1 gets `readings` appended by ALTER TABLE, after `payload`: slower, still right).
# No index on created_at: expiry walks from the oldest id (see `_expire`), so an append writes one page less.
# The counters live in `meta` and are kept by triggers inside the same transaction as the row change, so the
# totals cannot drift from the table whatever writes it (even the sqlite3 shell during an incident).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_at REAL NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    readings INTEGER NOT NULL DEFAULT 0 CHECK (readings >= 0),
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value)
    VALUES ('messages', 0), ('bytes', 0), ('readings', 0), ('dropped_overflow', 0), ('dropped_expired', 0);
CREATE TRIGGER IF NOT EXISTS message_counted_in AFTER INSERT ON message BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'messages';
    UPDATE meta SET value = value + NEW.size WHERE key = 'bytes';
    UPDATE meta SET value = value + NEW.readings WHERE key = 'readings';
END;
CREATE TRIGGER IF NOT EXISTS message_counted_out AFTER DELETE ON message BEGIN
    UPDATE meta SET value = value - 1 WHERE key = 'messages';
    UPDATE meta SET value = value - OLD.size WHERE key = 'bytes';
    UPDATE meta SET value = value - OLD.readings WHERE key = 'readings';
END;
"""

# Schema 1 had no reading counts: its messages count 0 readings (the figure is a gauge, not an accounting).
_MIGRATE_FROM_1 = """
ALTER TABLE message ADD COLUMN readings INTEGER NOT NULL DEFAULT 0 CHECK (readings >= 0);
DROP TRIGGER IF EXISTS message_counted_in;
DROP TRIGGER IF EXISTS message_counted_out;
"""


class DiskBufferError(Exception):
    """The buffer file cannot be used (damaged, not WAL-capable, written by a newer schema, or closed)."""


class MessageTooLarge(ValueError):
    """One message is larger than the whole buffer's byte bound, so no drop of older messages can make room."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to queue with `append_many`."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    readings: int = 0  # tag values it carries, for the backlog figures


@dataclass(frozen=True)
class AppendResult:
    """The new message's id, and how many older messages were dropped to keep the bounds (expired + overflow)."""

    id: int
    dropped: int


@dataclass(frozen=True)
class BufferedMessage:
    """One queued MQTT message; `created_at` is the `now` given to `append` (seconds since the epoch)."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float


@dataclass(frozen=True)
class BufferStats:
    """What the buffer holds now: the backlog figures (gauges, the gateway's status message)."""

    messages: int
    readings: int
    bytes: int
    oldest_created_at: float | None  # None when empty
    last_id: int  # the newest id ever given (0 for a new file): messages above it are newer than this snapshot

    def oldest_age_s(self, now: float) -> float:
        """Seconds the oldest message has waited (0 when empty; never negative, even if the clock stepped back)."""
        return 0.0 if self.oldest_created_at is None else max(now - self.oldest_created_at, 0.0)


def message_size(topic: str, payload: bytes) -> int:
    """What a message counts against `max_bytes`: its UTF-8 topic plus its payload."""
    return len(topic.encode("utf-8")) + len(payload)


class DiskBuffer:
    """A bounded FIFO of MQTT messages in an SQLite file; synchronous, one connection, one thread.

    Use it from one thread only (the connection keeps sqlite3's same-thread check on); the event loop uses
    `AsyncDiskBuffer`, which gives it a dedicated thread.
    """

    def __init__(self, path: str | Path, *, max_messages: int, max_bytes: int, max_age_s: float) -> None:
        if max_messages < 1 or max_bytes < 1 or max_age_s <= 0:
            raise ValueError("max_messages and max_bytes must be >= 1 and max_age_s > 0")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below is one explicit BEGIN IMMEDIATE..COMMIT.
        self._db: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._configure(self._db)
        except sqlite3.DatabaseError as error:
            self._db.close()
            self._db = None
            # A damaged or foreign file: refuse to start rather than guess; the operator moves it aside.
            raise DiskBufferError(f"{self.path}: not a usable buffer file: {error}") from error
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout = 5000")
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise DiskBufferError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); use a local filesystem")
        # Durability choice: WAL + synchronous=NORMAL.
        # - Never corrupts: in WAL mode a power cut can only lose the newest commits, the file stays consistent.
        # - SIGKILL / a crash of this process loses nothing: each COMMIT has written the WAL to the OS before it
        #   returns; only the fsync is deferred to checkpoints.
        # - What a power cut can lose is the last moments of appends (and of deletes, whose messages are then
        #   sent again: the ingestor's unique (machine, tag, ts) makes that harmless). Nobody upstream was
        #   promised those readings (a PLC poll acknowledges nothing), and the same power cut stops the
        #   machines and the polling anyway. FULL would buy that window with an fsync per message, which on
        #   the SD cards and eMMC of edge boxes costs milliseconds each and wears the flash.
        db.execute("PRAGMA synchronous = NORMAL")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise DiskBufferError(f"{self.path}: buffer schema {version} is newer than this gateway's {SCHEMA_VERSION}")
        with self._transaction() as tx:
            if version == 1:
                for statement in _statements(_MIGRATE_FROM_1):
                    tx.execute(statement)
            for statement in _statements(_SCHEMA):
                tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DiskBufferError(f"{self.path}: the buffer is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn
        # IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock upgrade.
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def append(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, readings: int = 0, now: float
    ) -> AppendResult:
        """Queue one message; first drops expired messages, then the oldest until the bounds allow this one."""
        (result,) = self.append_many([OutgoingMessage(topic, payload, qos, retain, readings)], now=now)
        return result

    def append_many(self, messages: Sequence[OutgoingMessage], *, now: float) -> list[AppendResult]:
        """Queue several messages in one transaction (one commit), each exactly as `append` would; all or none."""
        for message in messages:
            if message.qos not in (0, 1, 2):
                raise ValueError(f"qos must be 0, 1 or 2, not {message.qos!r}")
            size = message_size(message.topic, message.payload)
            if size > self.max_bytes:
                raise MessageTooLarge(f"a {size}-byte message cannot fit a buffer of {self.max_bytes} bytes")
        results: list[AppendResult] = []
        with self._transaction() as tx:
            expired = self._expire(tx, now)
            # The write lock is held: nobody else changes the table until COMMIT, so the depth is tracked here
            # instead of read back for every message (the triggers keep `meta` right on their own).
            depth = _depth(tx)
            for message in messages:
                size = message_size(message.topic, message.payload)
                dropped, depth = self._make_room(tx, depth, size)
                cursor = tx.execute(
                    "INSERT INTO message (topic, qos, retain, created_at, size, readings, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (message.topic, message.qos, int(message.retain), now, size, message.readings, message.payload),
                )
                if cursor.lastrowid is None:  # pragma: no cover - sqlite3 always sets it after an INSERT
                    raise DiskBufferError("SQLite returned no id for the new message")
                depth = (depth[0] + 1, depth[1] + size)
                results.append(AppendResult(cursor.lastrowid, dropped + expired))
                expired = 0
        return results

    def _make_room(self, tx: sqlite3.Connection, depth: tuple[int, int], size: int) -> tuple[int, tuple[int, int]]:
        """Drop the oldest messages until one of `size` bytes fits; how many, and the depth left."""
        messages, total = depth
        need_count = messages + 1 - self.max_messages
        need_bytes = total + size - self.max_bytes
        if need_count <= 0 and need_bytes <= 0:
            return 0, depth
        freed_count = freed_bytes = 0
        last_id: int | None = None
        cursor = tx.execute("SELECT id, size FROM message ORDER BY id")
        try:
            for message_id, row_size in cursor:
                last_id = message_id
                freed_count += 1
                freed_bytes += row_size
                if freed_count >= need_count and freed_bytes >= need_bytes:
                    break
        finally:
            cursor.close()
        if last_id is None:
            return 0, depth
        tx.execute("DELETE FROM message WHERE id <= ?", (last_id,))
        _count_drops(tx, OVERFLOW, freed_count)
        return freed_count, (messages - freed_count, total - freed_bytes)

    def _expire(self, tx: sqlite3.Connection, now: float) -> int:
        # Expiry drops a prefix of the queue, oldest id first, and stops at the first message young enough: the
        # queue always stays a gapless run of what was appended. If the wall clock stepped back, messages
        # appended after the step wait behind older ones (at most the size of the step) instead of leaving holes.
        cutoff = now - self.max_age_s
        last_id: int | None = None
        cursor = tx.execute("SELECT id, created_at FROM message ORDER BY id")
        try:
            for message_id, created_at in cursor:
                if created_at >= cutoff:
                    break
                last_id = message_id
        finally:
            cursor.close()
        if last_id is None:
            return 0
        expired = tx.execute("DELETE FROM message WHERE id <= ?", (last_id,)).rowcount
        _count_drops(tx, EXPIRED, expired)
        return expired

    def expire(self, now: float) -> int:
        """Drop the messages older than max_age_s at `now`; how many were dropped."""
        with self._transaction() as tx:
            return self._expire(tx, now)

    def peek(self, limit: int) -> list[BufferedMessage]:
        """Up to `limit` of the oldest messages, oldest first; they stay queued until `delete`."""
        rows = self._conn.execute(
            "SELECT id, topic, payload, qos, retain, created_at FROM message ORDER BY id LIMIT ?", (max(limit, 0),)
        ).fetchall()
        return [_message(row) for row in rows]

    def peek_round(
        self, *, live_after: int, live_limit: int, backlog_limit: int, delete: Iterable[int] = ()
    ) -> tuple[list[BufferedMessage], list[BufferedMessage]]:
        """One publishing round: (up to `live_limit` of the NEWEST messages with an id above `live_after`, oldest
        first; up to `backlog_limit` of the OLDEST messages with an id up to `live_after`, oldest first).

        `delete`: the previous round's acknowledged ids, removed first (one call instead of two per round).
        """
        ids = list(delete)
        if ids:
            self.delete(ids)
        columns = "SELECT id, topic, payload, qos, retain, created_at FROM message"
        live = self._conn.execute(
            f"SELECT * FROM ({columns} WHERE id > ? ORDER BY id DESC LIMIT ?) ORDER BY id",  # noqa: S608 -- constant
            (live_after, max(live_limit, 0)),
        ).fetchall()
        backlog = self._conn.execute(
            f"{columns} WHERE id <= ? ORDER BY id LIMIT ?",
            (live_after, max(backlog_limit, 0)),
        ).fetchall()
        return [_message(row) for row in live], [_message(row) for row in backlog]

    def stats(self) -> BufferStats:
        """The backlog figures, read in one transaction (so they agree with each other)."""
        db = self._conn
        db.execute("BEGIN")
        try:
            meta = _meta(db)
            oldest = db.execute("SELECT created_at FROM message ORDER BY id LIMIT 1").fetchone()
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'message'").fetchone()
        finally:
            db.execute("COMMIT")
        return BufferStats(
            meta["messages"],
            meta["readings"],
            meta["bytes"],
            None if oldest is None else float(oldest[0]),
            0 if last is None else int(last[0]),
        )

    def delete(self, ids: Iterable[int]) -> int:
        """Remove acknowledged messages; ids already gone (dropped meanwhile) are ignored. How many were removed."""
        with self._transaction() as tx:
            return tx.executemany("DELETE FROM message WHERE id = ?", ((message_id,) for message_id in ids)).rowcount

    def depth(self) -> tuple[int, int]:
        """(messages, bytes) queued now."""
        return _depth(self._conn)

    def dropped_total(self) -> dict[str, int]:
        """Messages dropped since the file was made, by reason (`overflow`, `expired`)."""
        meta = _meta(self._conn)
        return {OVERFLOW: meta[f"dropped_{OVERFLOW}"], EXPIRED: meta[f"dropped_{EXPIRED}"]}

    def close(self) -> None:
        """Close the connection (the last connection to close checkpoints the WAL into the file); idempotent."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _statements(script: str) -> list[str]:
    # executescript() would commit on its own; statements one by one keep the schema inside one transaction.
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    return statements


def _message(row: tuple[int, str, bytes, int, int, float]) -> BufferedMessage:
    return BufferedMessage(row[0], row[1], bytes(row[2]), row[3], bool(row[4]), row[5])


def _meta(db: sqlite3.Connection) -> dict[str, int]:
    return {key: int(value) for key, value in db.execute("SELECT key, value FROM meta")}


def _depth(db: sqlite3.Connection) -> tuple[int, int]:
    meta = _meta(db)
    return meta["messages"], meta["bytes"]


def _count_drops(tx: sqlite3.Connection, reason: str, count: int) -> None:
    if count > 0:
        tx.execute("UPDATE meta SET value = value + ? WHERE key = ?", (count, f"dropped_{reason}"))


class AsyncDiskBuffer:
    """`DiskBuffer` for the event loop: every call runs on one dedicated thread that owns the SQLite connection.

    Why one dedicated thread rather than `asyncio.to_thread` plus a lock: the connection is opened, used and
    closed on the same thread, so sqlite3's same-thread check stays on as a tripwire; calls run in the order
    they were made, with no lock to forget; and a call waiting on the disk (or on SQLite's busy timeout) never
    holds one of the default executor's threads that the rest of the process shares. Cancelling an awaiting
    caller does not abort the call already running on the thread: an append that was started is committed.
    Constructing it does no I/O; the first call (or `open()`, or `async with`) opens the file.
    """

    def __init__(self, path: str | Path, *, max_messages: int, max_bytes: int, max_age_s: float) -> None:
        self._open = partial(DiskBuffer, path, max_messages=max_messages, max_bytes=max_bytes, max_age_s=max_age_s)
        # The thread starts with the first call; `_buffer` is read and written only on it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="disk-buffer")
        self._buffer: DiskBuffer | None = None
        self._closed = False

    def _opened(self) -> DiskBuffer:
        # Runs on the buffer's thread: the file is opened by the first call, whichever it is.
        if self._buffer is None:
            self._buffer = self._open()
        return self._buffer

    def _close_on_thread(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None

    async def _run(self, call: Callable[[DiskBuffer], _T]) -> _T:
        if self._closed:
            raise DiskBufferError("the buffer is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: call(self._opened()))

    async def open(self) -> None:
        """Open (or create) the file now, so a bad path fails at start-up; any first call would open it too."""
        await self._run(lambda _buffer: None)

    async def close(self) -> None:
        """Close the file after the calls already made, on its thread, and let the thread end; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_on_thread)
        finally:
            # The worker is idle once the close ran; it exits by itself, nothing to wait for on the loop.
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def append(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, readings: int = 0, now: float
    ) -> AppendResult:
        """See `DiskBuffer.append`."""
        return await self._run(
            lambda buffer: buffer.append(topic, payload, qos=qos, retain=retain, readings=readings, now=now)
        )

    async def append_many(self, messages: Sequence[OutgoingMessage], *, now: float) -> list[AppendResult]:
        """See `DiskBuffer.append_many`."""
        frozen = list(messages)  # never iterate the caller's collection on another thread
        return await self._run(lambda buffer: buffer.append_many(frozen, now=now))

    async def peek(self, limit: int) -> list[BufferedMessage]:
        """See `DiskBuffer.peek`."""
        return await self._run(lambda buffer: buffer.peek(limit))

    async def peek_round(
        self, *, live_after: int, live_limit: int, backlog_limit: int, delete: Iterable[int] = ()
    ) -> tuple[list[BufferedMessage], list[BufferedMessage]]:
        """See `DiskBuffer.peek_round`."""
        ids = list(delete)  # never iterate the caller's collection on another thread
        return await self._run(
            lambda buffer: buffer.peek_round(
                live_after=live_after, live_limit=live_limit, backlog_limit=backlog_limit, delete=ids
            )
        )

    async def stats(self) -> BufferStats:
        """See `DiskBuffer.stats`."""
        return await self._run(DiskBuffer.stats)

    async def delete(self, ids: Iterable[int]) -> int:
        """See `DiskBuffer.delete`."""
        frozen = list(ids)  # never iterate the caller's collection on another thread
        return await self._run(lambda buffer: buffer.delete(frozen))

    async def depth(self) -> tuple[int, int]:
        """See `DiskBuffer.depth`."""
        return await self._run(DiskBuffer.depth)

    async def expire(self, now: float) -> int:
        """See `DiskBuffer.expire`."""
        return await self._run(lambda buffer: buffer.expire(now))

    async def dropped_total(self) -> dict[str, int]:
        """See `DiskBuffer.dropped_total`."""
        return await self._run(DiskBuffer.dropped_total)

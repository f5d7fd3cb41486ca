"""Copy a development SQLite database into PostgreSQL (or TimescaleDB): `shopfloor import-sqlite`.

Both sides must be at the same Alembic revision, the newest this code knows: the target is made by
`shopfloor migrate` first (so TimescaleDB policies and continuous aggregates exist before any row arrives),
this module never creates tables. Every table is copied in foreign-key order with COPY inside ONE
transaction, ids kept; sequences are moved past the highest id; then every table is read back and its row
count and checksum compared with the source's before anything is committed. Any failure rolls the whole
import back, so the target is either untouched or complete.

The checksum is order-independent: each row is normalised to one canonical text (`normalise_row`), hashed
with BLAKE2b, and the 128-bit hashes are added modulo 2**128 (a sum, unlike XOR, also notices a row that
appears twice). Both sides are read through the same SQLAlchemy table definitions, so a timestamp, an enum
or a boolean compares by what it means, not by how each database stores it.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import json
import math
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as wall_time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, create_engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from cli.errors import EXIT_USAGE, CommandError
from core.db import is_sqlite, sync_url
from core.models import Base
from core.schema import SEEDED_TABLES, VERSION_TABLE, current_revisions, head_revisions
from core.settings import ToolSettings

SQLITE_MAGIC = b"SQLite format 3\x00"
CHECKSUM_MODULUS = 2**128
DEFAULT_BATCH_ROWS = 10_000


class TransferInputError(Exception):
    """The source or the target is not fit for an import; nothing was written. One line for the user."""


class TransferFailed(Exception):
    """The copy started and failed; the transaction was rolled back, the target is as it was."""


@dataclass(frozen=True)
class TableReport:
    """What happened to one table."""

    table: str
    rows: int
    checksum: str
    checksum_ok: bool
    seconds: float


@dataclass
class ImportReport:
    """What `import_sqlite` did."""

    revision: list[str]
    timescaledb: bool
    emptied_first: bool
    tables: list[TableReport] = field(default_factory=list)
    refreshed_views: list[str] = field(default_factory=list)
    skipped_source_tables: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Rows copied over all tables."""
        return sum(report.rows for report in self.tables)


# --- checksums --------------------------------------------------------------------------------------------


def normalise_value(value: Any) -> Any:
    """A JSON-ready canonical form of one column value, equal on SQLite and PostgreSQL for equal meaning.

    Type tags keep values of different types apart (the text "1" is not the integer 1 nor True).
    """
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return normalise_value(value.value)
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        # repr() is the shortest text that round-trips; -0.0 and 0.0 are one number in both databases.
        if math.isnan(value):
            return ["f", "nan"]
        return ["f", repr(value + 0.0)]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a row: every shopfloor timestamp is timezone-aware")
        return ["t", value.astimezone(UTC).isoformat(timespec="microseconds")]
    if isinstance(value, date):
        return ["d", value.isoformat()]
    if isinstance(value, wall_time):  # a local wall time (shifts, breaks): no zone by design
        return ["w", value.isoformat(timespec="microseconds")]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["x", bytes(value).hex()]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    if isinstance(value, list):  # a JSON column (a command's writes, allowed values)
        return ["l", [normalise_value(item) for item in value]]
    if isinstance(value, dict):
        return ["m", sorted((str(key), normalise_value(item)) for key, item in value.items())]
    raise TypeError(f"no checksum form for a value of type {type(value).__name__}")


def normalise_row(values: Sequence[Any]) -> bytes:
    """The canonical bytes of one row (columns in table order)."""
    return json.dumps([normalise_value(value) for value in values], ensure_ascii=False, separators=(",", ":")).encode()


def row_hash(values: Sequence[Any]) -> int:
    """The 128-bit hash of one normalised row."""
    return int.from_bytes(hashlib.blake2b(normalise_row(values), digest_size=16).digest(), "big")


@dataclass
class TableChecksum:
    """An order-independent checksum and count over the rows of one table."""

    rows: int = 0
    total: int = 0

    def add(self, values: Sequence[Any]) -> None:
        """Count one row."""
        self.rows += 1
        self.total = (self.total + row_hash(values)) % CHECKSUM_MODULUS

    @property
    def hexdigest(self) -> str:
        """The checksum as 32 hex digits."""
        return f"{self.total:032x}"


def table_checksum(rows: Iterable[Sequence[Any]]) -> TableChecksum:
    """The checksum of these rows, in any order."""
    checksum = TableChecksum()
    for row in rows:
        checksum.add(row)
    return checksum


# --- the import -------------------------------------------------------------------------------------------


def shopfloor_tables() -> list[Table]:
    """Every table the migrations make, parents before children."""
    return list(Base.metadata.sorted_tables)


def _copy_value(value: Any) -> Any:
    # psycopg dumps a Python Enum by its name; the columns hold the value. A JSON column's list or mapping would be
    # dumped as an array: it goes as JSON text.
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def _quoted(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _rows(connection: Connection, table: Table, batch_rows: int) -> Iterator[Sequence[Any]]:
    query = select(table).order_by(*table.primary_key.columns)
    # Streamed (a server-side cursor on PostgreSQL), so millions of readings never sit in memory at once.
    # Options on the statement: Connection.execution_options() would change the connection itself.
    options = {"stream_results": True, "yield_per": batch_rows}
    with connection.execute(query, execution_options=options) as result:
        for row in result:
            yield tuple(row)


def _source_engine(source: Path) -> Engine:
    if not source.is_file():
        raise TransferInputError(f"{source}: no such file")
    try:
        with source.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise TransferInputError(f"{source}: cannot read: {error.strerror}") from None
    if header != SQLITE_MAGIC:
        raise TransferInputError(f"{source}: not a SQLite database")
    # Read-only: the import never changes the source, and a typo cannot create an empty file.
    url = f"sqlite+pysqlite:///file:{source.resolve()}?mode=ro&uri=true"
    # No connection pragmas: switching to WAL would be a write, which mode=ro refuses.
    return create_engine(url, poolclass=NullPool)


def _check_source(connection: Connection, source: Path, heads: set[str]) -> list[str]:
    try:
        names = set(inspect(connection).get_table_names())
        revisions = current_revisions(connection) if VERSION_TABLE in names else set()
    except SQLAlchemyError as error:
        raise TransferInputError(f"{source}: cannot be read as SQLite: {first_line(error)}") from None
    if not revisions:
        raise TransferInputError(f"{source}: not a shopfloor database (no {VERSION_TABLE} revision)")
    if revisions != heads:
        raise TransferInputError(
            f"{source}: schema at revision {sorted(revisions)}, this shopfloor expects {sorted(heads)}: "
            f"run `DATABASE_URL=sqlite:///{source} shopfloor migrate` first"
        )
    missing = sorted(table.name for table in shopfloor_tables() if table.name not in names)
    if missing:
        raise TransferInputError(f"{source}: not a shopfloor database (missing tables: {', '.join(missing)})")
    known = {table.name for table in shopfloor_tables()} | {VERSION_TABLE}
    return sorted(name for name in names if name not in known and not name.startswith("sqlite_"))


def _target_engine(target_url: str) -> Engine:
    if is_sqlite(target_url):
        raise TransferInputError("the target must be PostgreSQL (postgresql://…), not SQLite")
    try:
        return create_engine(sync_url(target_url), poolclass=NullPool)
    except (SQLAlchemyError, ValueError) as error:
        raise TransferInputError(f"the target URL is not usable: {error}") from None


def check_target(connection: Connection, heads: set[str]) -> None:
    """Refuse (TransferInputError) a target that is not migrated to `heads`."""
    revisions = current_revisions(connection)
    if revisions != heads:
        found = sorted(revisions) or "no revision (an empty database)"
        raise TransferInputError(
            f"the target is at {found}, expected {sorted(heads)}: "
            "run `shopfloor migrate` with DATABASE_URL set to the target first"
        )


def _timescaledb(connection: Connection) -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return connection.execute(query).first() is not None


def _continuous_aggregates(connection: Connection) -> list[str]:
    query = text(
        "SELECT format('%I.%I', view_schema, view_name) FROM timescaledb_information.continuous_aggregates "
        "ORDER BY view_name"
    )
    return list(connection.execute(query).scalars())


def _non_empty(connection: Connection, tables: Sequence[Table]) -> list[str]:
    return [table.name for table in tables if connection.execute(select(1).select_from(table).limit(1)).first()]


def _empty(connection: Connection, tables: Sequence[Table]) -> None:
    # One TRUNCATE for all: transactional in PostgreSQL, foreign keys satisfied as a whole, hypertables too.
    names = ", ".join(_quoted(connection, table.name) for table in tables)
    connection.execute(text(f"TRUNCATE {names}"))


def _copy_table(source: Connection, target: Connection, table: Table, batch_rows: int) -> TableChecksum:
    checksum = TableChecksum()
    columns = ", ".join(_quoted(target, column.name) for column in table.columns)
    statement = f"COPY {_quoted(target, table.name)} ({columns}) FROM STDIN"
    # The psycopg connection under SQLAlchemy's: its cursor is inside the same transaction.
    driver = target.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError("the target connection is not a psycopg connection")
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in _rows(source, table, batch_rows):
            checksum.add(row)
            copy.write_row([_copy_value(value) for value in row])
    return checksum


def reset_sequences(connection: Connection, table: Table) -> None:
    """Move the PostgreSQL id sequence of `table` past its highest id."""
    for column in table.primary_key.columns:
        sequence = connection.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table.name, "column": column.name}
        ).scalar()
        if sequence is None:
            continue
        # setval(seq, max, true): the next id is max + 1; an empty table starts at 1 again.
        connection.execute(
            text(
                f"SELECT setval(:sequence, COALESCE(max({_quoted(connection, column.name)}), 1), "  # noqa: S608 -- quoted names of our own tables
                f"max({_quoted(connection, column.name)}) IS NOT NULL) FROM {_quoted(connection, table.name)}"
            ),
            {"sequence": sequence},
        )


def first_line(error: BaseException) -> str:
    """The first line of a (database) error's message, for a one-line report."""
    orig = getattr(error, "orig", None)
    message = str(orig if orig is not None else error).strip() or type(error).__name__
    return message.splitlines()[0]


def import_sqlite(
    source: Path, target_url: str, *, force: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS
) -> ImportReport:
    """Copy every shopfloor table of the SQLite file `source` into the migrated PostgreSQL at `target_url`.

    Raises TransferInputError (nothing written) for a bad source or target, a non-empty target without
    `force`, or a revision mismatch; TransferFailed when the copy or its verification fails (rolled back).
    """
    heads = head_revisions()
    tables = shopfloor_tables()
    source_engine = _source_engine(source)
    target_engine = _target_engine(target_url)
    try:
        with source_engine.connect() as reading:
            skipped = _check_source(reading, source, heads)
            try:
                with target_engine.connect() as probe:
                    check_target(probe, heads)
            except DBAPIError as error:
                raise TransferInputError(f"cannot reach the target database: {first_line(error)}") from None
            report = _copy_all(reading, target_engine, tables, force=force, batch_rows=batch_rows)
        report.skipped_source_tables = skipped
        if report.timescaledb:
            report.refreshed_views = _refresh_continuous_aggregates(target_engine)
        return report
    finally:
        source_engine.dispose()
        target_engine.dispose()


def _copy_all(
    reading: Connection, target_engine: Engine, tables: Sequence[Table], *, force: bool, batch_rows: int
) -> ImportReport:
    with target_engine.connect() as writing:
        transaction = writing.begin()
        try:
            timescaledb = _timescaledb(writing)
            occupied = _non_empty(writing, [table for table in tables if table.name not in SEEDED_TABLES])
            if occupied and not force:
                raise TransferInputError(
                    f"the target already holds rows (in {', '.join(occupied)}): "
                    "use --force to empty it first, within the same transaction"
                )
            if occupied:
                _empty(writing, tables)
            else:  # the rows a migration seeds (the default loss reasons) are replaced by the source's own
                for table in tables:
                    if table.name in SEEDED_TABLES:
                        writing.execute(table.delete())
            report = ImportReport(
                revision=sorted(current_revisions(writing)), timescaledb=timescaledb, emptied_first=bool(occupied)
            )
            for table in tables:
                report.tables.append(_copy_and_verify(reading, writing, table, batch_rows))
            mismatched = [entry.table for entry in report.tables if not entry.checksum_ok]
            if mismatched:
                raise TransferFailed(f"verification failed for {', '.join(mismatched)}; nothing was imported")
        except BaseException:
            transaction.rollback()
            raise
        transaction.commit()
    return report


def _copy_and_verify(reading: Connection, writing: Connection, table: Table, batch_rows: int) -> TableReport:
    started = time.perf_counter()
    try:
        source_sum = _copy_table(reading, writing, table, batch_rows)
        reset_sequences(writing, table)
        target_sum = table_checksum(_rows(writing, table, batch_rows))
    # psycopg.Error: COPY runs on the driver's cursor, so its errors are not wrapped by SQLAlchemy.
    except (SQLAlchemyError, psycopg.Error, ValueError, TypeError, OSError) as error:
        raise TransferFailed(
            f"table {table.name}: {first_line(error)}; rolled back, the target is unchanged"
        ) from error
    ok = source_sum.rows == target_sum.rows and source_sum.total == target_sum.total
    return TableReport(
        table=table.name,
        rows=source_sum.rows,
        checksum=source_sum.hexdigest,
        checksum_ok=ok,
        seconds=round(time.perf_counter() - started, 3),
    )


def _refresh_continuous_aggregates(engine: Engine) -> list[str]:
    # refresh_continuous_aggregate cannot run inside a transaction block, so this follows the commit.
    refreshed: list[str] = []
    view = "the continuous aggregates"
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for view in _continuous_aggregates(connection):
                connection.execute(
                    text("CALL refresh_continuous_aggregate(CAST(:view AS regclass), NULL, NULL)"), {"view": view}
                )
                refreshed.append(view)
    except SQLAlchemyError as error:
        raise TransferFailed(
            f"the rows are imported and committed, but refreshing {view} failed: {first_line(error)}; "
            f"run CALL refresh_continuous_aggregate('{view}', NULL, NULL) in psql"
        ) from error
    return refreshed


def cmd_import_sqlite(args: argparse.Namespace) -> int:
    """Copy a SQLite database into a migrated PostgreSQL / TimescaleDB, verified, in one transaction."""
    settings = ToolSettings.load()
    target = args.to or settings.database.database_url
    try:
        report = import_sqlite(args.source, target, force=args.force)
    except TransferInputError as error:
        print(f"shopfloor: import-sqlite: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TransferFailed as error:
        raise CommandError(f"import-sqlite: {error}") from None
    if report.emptied_first:
        print("emptied the target first (--force)")
    for table in report.tables:
        verdict = "checksum ok" if table.checksum_ok else "CHECKSUM MISMATCH"
        print(f"{table.table:<20} {table.rows:>12,} rows  {verdict}  {table.seconds:8.2f} s")
    print(f"imported {report.total_rows:,} rows at revision {', '.join(report.revision)}")
    if report.refreshed_views:
        print(f"refreshed continuous aggregates: {', '.join(report.refreshed_views)}")
    if report.skipped_source_tables:
        print(f"not copied (not shopfloor tables): {', '.join(report.skipped_source_tables)}")
    return 0

"""Bring the original app's SQLite `database.db` into a migrated Shopfloor database: `shopfloor import-legacy`.

The source is opened read-only. Its four tables are found by their columns (cli.legacy_plan), every row is turned
into Shopfloor rows with its decisions, and the rows are written into the target (SQLite or PostgreSQL, made by
`shopfloor migrate`) in ONE transaction, ids kept. Then the rows are read back and their count and checksum
compared with what was meant to be written (the order-independent sum of cli.transfer); any difference, or any
error, rolls everything back. `--dry-run` does all of it and rolls back at the end, so it also finds what the
target database itself would refuse. A target that already holds tracking rows is refused unless
`--skip-existing`, which skips the source rows whose ids are there.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from cli.errors import EXIT_USAGE, CommandError
from cli.legacy_plan import (
    TARGET_TABLE,
    Detection,
    DetectionError,
    Existing,
    Kind,
    Plan,
    detect_tables,
    plan_import,
)
from cli.transfer import (
    SQLITE_MAGIC,
    TableChecksum,
    TransferFailed,
    TransferInputError,
    check_target,
    first_line,
    reset_sequences,
)
from core.clock import utcnow
from core.db import install_sqlite_pragmas, is_sqlite, sync_url
from core.models import Base
from core.schema import VERSION_TABLE, head_revisions
from core.settings import ToolSettings

# The target tables in the order they are written (parents first), and the columns checksummed for each.
CHECKSUM_COLUMNS: dict[str, tuple[str, ...]] = {
    "user_account": ("id", "username", "password_hash", "role", "is_active"),
    "work_order": ("id", "product_code", "lot_no", "qty", "planned_start", "planned_end", "notes"),
    "work_order_stage": ("id", "work_order_id", "position", "stage_name", "planned_start", "planned_end", "status"),
    "stage_event": ("stage_id", "kind", "at", "user_id", "reason"),
    "issue": ("id", "stage_id", "type", "description", "status", "reported_by_id", "created_at"),
}
KIND_OF_TABLE = {table: kind for kind, table in TARGET_TABLE.items()}
INSERT_BATCH = 1000
SELECT_BATCH = 5000


@dataclass(frozen=True)
class TableResult:
    """One target table: what was read from the source, written, skipped, fixed; the checksums."""

    table: str
    source_table: str | None
    read: int
    imported: int
    skipped: int
    fixed: int
    source_checksum: str | None
    checksum: str
    checksum_ok: bool


@dataclass
class LegacyReport:
    """What `import_legacy` did (or, on a dry run, would do)."""

    source: str
    target: str
    timezone: str
    dry_run: bool
    skip_existing: bool
    tables: list[TableResult] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    detected: dict[str, str] = field(default_factory=dict)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    unread_tables: list[str] = field(default_factory=list)
    sequences_advanced: bool = False

    @property
    def ok(self) -> bool:
        """Every table read back as it was meant to be written."""
        return all(table.checksum_ok for table in self.tables)

    def to_json(self) -> str:
        """The report as one JSON document."""
        return json.dumps({**asdict(self), "ok": self.ok}, ensure_ascii=False, indent=2, default=str)


# --- the source --------------------------------------------------------------------------------------------


def _open_source(source: Path) -> sqlite3.Connection:
    if not source.is_file():
        raise TransferInputError(f"{source}: no such file")
    try:
        with source.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise TransferInputError(f"{source}: cannot read: {error.strerror}") from None
    if header != SQLITE_MAGIC:
        raise TransferInputError(f"{source}: not a SQLite database")
    # Read-only, so the import never changes the plant's file (nor creates one on a typo).
    return sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def source_columns(connection: sqlite3.Connection) -> dict[str, list[str]]:
    """Every table of a SQLite database and its columns."""
    names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: [row[1] for row in connection.execute(f"PRAGMA table_info({_quote(name)})")] for name in names}


def _read_source(
    connection: sqlite3.Connection, detection: Detection
) -> tuple[dict[Kind, list[dict[str, Any]]], dict[Kind, str]]:
    rows: dict[Kind, list[dict[str, Any]]] = {}
    checksums: dict[Kind, str] = {}
    for kind, table in detection.tables.items():
        present = [(name, column) for name, column in table.columns.items() if column is not None]
        columns = ", ".join(_quote(column) for _, column in present)
        query = f"SELECT {columns} FROM {_quote(table.name)} ORDER BY rowid"  # noqa: S608 -- quoted names read from the file
        checksum = TableChecksum()
        read: list[dict[str, Any]] = []
        for values in connection.execute(query):
            checksum.add(values)
            row = dict.fromkeys(table.columns)
            row.update({name: value for (name, _), value in zip(present, values, strict=True)})
            read.append(row)
        rows[kind] = read
        checksums[kind] = checksum.hexdigest
    return rows, checksums


def _detect(connection: sqlite3.Connection, source: Path) -> Detection:
    try:
        columns = source_columns(connection)
    except sqlite3.DatabaseError as error:
        raise TransferInputError(f"{source}: cannot be read as SQLite: {error}") from None
    if VERSION_TABLE in columns:
        raise TransferInputError(f"{source}: this is a Shopfloor database, not the original app's: use import-sqlite")
    try:
        detection = detect_tables(columns)
    except DetectionError as error:
        raise TransferInputError(f"{source}: {error}") from None
    if not detection.tables:
        raise TransferInputError(
            f"{source}: no table of the original app found (users, work orders, stages, issues by their columns)"
        )
    return detection


# --- the target --------------------------------------------------------------------------------------------


def _target_engine(target_url: str) -> Engine:
    try:
        url = sync_url(target_url)
    except (SQLAlchemyError, ValueError) as error:
        raise TransferInputError(f"the target URL is not usable: {error}") from None
    if is_sqlite(url):
        if url.database in (None, "", ":memory:") or not Path(url.database).is_file():
            raise TransferInputError(
                f"the target SQLite file {url.database} does not exist: run `shopfloor migrate` with DATABASE_URL "
                "set to it first"
            )
        engine = create_engine(url, poolclass=NullPool)
        install_sqlite_pragmas(engine)
        return engine
    return create_engine(url, poolclass=NullPool)


def _existing(connection: Connection) -> Existing:
    tables = Base.metadata.tables
    ids: dict[Kind, set[int]] = {}
    for kind, name in TARGET_TABLE.items():
        ids[kind] = set(connection.execute(select(tables[name].c.id)).scalars())
    users = tables["user_account"]
    stages = tables["work_order_stage"]
    positions = connection.execute(
        select(stages.c.work_order_id, func.max(stages.c.position)).group_by(stages.c.work_order_id)
    )
    return Existing(
        ids=ids,
        usernames=set(connection.execute(select(users.c.username)).scalars()),
        last_position={int(order_id): int(position) for order_id, position in positions},
    )


def _occupied(connection: Connection) -> list[str]:
    tables = Base.metadata.tables
    return [
        name
        for name in CHECKSUM_COLUMNS
        if connection.execute(select(1).select_from(tables[name]).limit(1)).first() is not None
    ]


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _checksum(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> TableChecksum:
    checksum = TableChecksum()
    for row in rows:
        checksum.add([row[column] for column in columns])
    return checksum


def _read_back(connection: Connection, name: str, rows: Sequence[Mapping[str, Any]]) -> TableChecksum:
    table = Base.metadata.tables[name]
    columns = CHECKSUM_COLUMNS[name]
    key = "stage_id" if name == "stage_event" else "id"
    wanted = sorted({row[key] for row in rows})
    checksum = TableChecksum()
    for batch in _batches(wanted, SELECT_BATCH):
        query = select(*(table.c[column] for column in columns)).where(table.c[key].in_(batch))
        for values in connection.execute(query):
            checksum.add(tuple(values))
    return checksum


def _write(connection: Connection, plan: Plan, *, dry_run: bool) -> dict[str, tuple[TableChecksum, bool]]:
    """Insert the planned rows and read each table back; per table, the checksum of the planned rows and whether the
    read-back matched it. PostgreSQL sequences are moved past the ids (not on a dry run: setval is not
    transactional, a rolled-back dry run would leave them moved)."""
    tables = Base.metadata.tables
    results: dict[str, tuple[TableChecksum, bool]] = {}
    for name, columns in CHECKSUM_COLUMNS.items():
        rows = plan.rows.get(name, [])
        for batch in _batches(rows, INSERT_BATCH):
            connection.execute(tables[name].insert(), list(batch))
        planned = _checksum(rows, columns)
        written = _read_back(connection, name, rows)
        results[name] = (planned, (written.rows, written.total) == (planned.rows, planned.total))
        if connection.dialect.name == "postgresql" and not dry_run:
            reset_sequences(connection, tables[name])
    return results


# --- the import --------------------------------------------------------------------------------------------


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "(unreadable URL)"


def import_legacy(
    source: Path,
    target_url: str,
    *,
    zone: ZoneInfo,
    issue_types: Sequence[str],
    dry_run: bool = False,
    skip_existing: bool = False,
) -> LegacyReport:
    """Import the original app's `database.db` at `source` into the migrated database at `target_url`.

    Raises TransferInputError (nothing written) for a source or target unfit for the import, a target that already
    holds tracking rows without `skip_existing`; TransferFailed when writing or the verification fails (rolled back).
    """
    connection = _open_source(source)
    try:
        detection = _detect(connection, source)
        rows, source_checksums = _read_source(connection, detection)
    except sqlite3.DatabaseError as error:
        raise TransferInputError(f"{source}: cannot be read: {error}") from None
    finally:
        connection.close()
    report = LegacyReport(
        source=str(source),
        target=_shown_url(target_url),
        timezone=str(zone),
        dry_run=dry_run,
        skip_existing=skip_existing,
        detected={kind.value: table.name for kind, table in detection.tables.items()},
        missing_columns={kind.value: table.missing for kind, table in detection.tables.items() if table.missing},
        not_found=[kind.value for kind in Kind if kind not in detection.tables],
        unread_tables=detection.unread,
    )
    engine = _target_engine(target_url)
    started = False
    try:
        with engine.connect() as writing:
            check_target(writing, head_revisions())
            writing.rollback()
            started = True
            with writing.begin() as transaction:
                occupied = _occupied(writing)
                if occupied and not skip_existing:
                    raise TransferInputError(
                        f"the target already holds tracking rows (in {', '.join(occupied)}), perhaps from an earlier "
                        "import: nothing was written; use --skip-existing to import only the rows whose ids are not "
                        "there yet"
                    )
                existing = _existing(writing) if occupied else Existing()
                plan = plan_import(rows, zone=zone, issue_types=issue_types, existing=existing, now=utcnow())
                try:
                    results = _write(writing, plan, dry_run=dry_run)
                except (SQLAlchemyError, ValueError, TypeError) as error:
                    raise TransferFailed(f"{first_line(error)}; rolled back, the target is unchanged") from error
                _fill_report(report, plan, detection, source_checksums, results)
                if not report.ok:
                    mismatched = ", ".join(table.table for table in report.tables if not table.checksum_ok)
                    raise TransferFailed(f"the rows read back from {mismatched} differ from those written; rolled back")
                if dry_run:
                    transaction.rollback()
                report.sequences_advanced = writing.dialect.name == "postgresql" and not dry_run
    except DBAPIError as error:
        if not started:
            raise TransferInputError(f"cannot reach the target database: {first_line(error)}") from None
        raise TransferFailed(f"{first_line(error)}; rolled back, the target is unchanged") from error
    finally:
        engine.dispose()
    return report


def _fill_report(
    report: LegacyReport,
    plan: Plan,
    detection: Detection,
    source_checksums: Mapping[Kind, str],
    results: Mapping[str, tuple[TableChecksum, bool]],
) -> None:
    for name, (checksum, matched) in results.items():
        kind = KIND_OF_TABLE.get(name)
        if kind is None:  # stage events: made from the stages' actual_start / actual_end
            report.tables.append(TableResult(name, None, 0, checksum.rows, 0, 0, None, checksum.hexdigest, matched))
            continue
        source_table = detection.tables.get(kind)
        report.tables.append(
            TableResult(
                table=name,
                source_table=source_table.name if source_table else None,
                read=plan.read.get(kind, 0),
                imported=checksum.rows,
                skipped=plan.skipped(kind),
                fixed=len(plan.fixed_ids(kind) - plan.skipped_ids(kind)),
                source_checksum=source_checksums.get(kind),
                checksum=checksum.hexdigest,
                checksum_ok=matched,
            )
        )
    report.decisions = [
        {"table": d.kind.value, "id": d.source_id, "action": d.action, "code": d.code, "detail": d.detail}
        for d in plan.decisions
    ]


# --- the command -------------------------------------------------------------------------------------------


def _zone(name: str | None, settings: ToolSettings) -> ZoneInfo:
    if name is None:
        if "plant_timezone" not in settings.tracking.model_fields_set:
            raise TransferInputError(
                "the original app's times are naive local times: give the plant's time zone with "
                "--timezone (e.g. Europe/Istanbul) or set PLANT_TIMEZONE"
            )
        name = settings.tracking.plant_timezone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TransferInputError(f"--timezone {name!r} is not an IANA time zone name such as Europe/Istanbul") from None


def render(report: LegacyReport) -> str:
    """The report as plain text for the operator."""
    lines = [
        f"source  {report.source} (read-only)",
        f"target  {report.target}",
        f"time zone of the source's times: {report.timezone}",
        "read as: " + ", ".join(f"{kind} <- table {table!r}" for kind, table in report.detected.items()),
    ]
    lines += [
        f"  {kind}: no column for {', '.join(fields)} (read as empty)"
        for kind, fields in report.missing_columns.items()
    ]
    if report.not_found:
        lines.append(f"not found in the source (nothing imported): {', '.join(report.not_found)}")
    if report.unread_tables:
        lines.append(f"other tables, not read: {', '.join(report.unread_tables)}")
    lines.append("")
    lines.append(f"{'table':<18} {'read':>7} {'imported':>9} {'skipped':>8} {'fixed':>6}  checksum")
    for table in report.tables:
        read = str(table.read) if table.source_table else "-"
        verdict = "ok" if table.checksum_ok else "MISMATCH"
        lines.append(
            f"{table.table:<18} {read:>7} {table.imported:>9} {table.skipped:>8} {table.fixed:>6}  "
            f"{table.checksum} {verdict}"
        )
    lines.append("")
    if report.decisions:
        lines.append(f"decisions ({len(report.decisions)}):")
        for decision in report.decisions:
            where = f"{decision['table']} #{decision['id']}"
            lines.append(f"  {where}: {decision['action']} {decision['code']}: {decision['detail']}")
    else:
        lines.append("every row was imported as it was")
    if report.dry_run:
        lines.append("DRY RUN: everything was checked and written inside a transaction, then rolled back")
    else:
        total = sum(table.imported for table in report.tables)
        lines.append(f"imported {total} rows in one transaction, committed")
        if report.sequences_advanced:
            lines.append("id sequences moved past the imported ids")
    return "\n".join(lines)


def cmd_import_legacy(args: argparse.Namespace) -> int:
    """Import the original app's SQLite database.db into a migrated Shopfloor database, with a report."""
    settings = ToolSettings.load()
    target = args.to or settings.database.database_url
    try:
        zone = _zone(args.timezone, settings)
        report = import_legacy(
            args.source,
            target,
            zone=zone,
            issue_types=settings.tracking.issue_types,
            dry_run=args.dry_run,
            skip_existing=args.skip_existing,
        )
    except TransferInputError as error:
        print(f"shopfloor: import-legacy: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TransferFailed as error:
        raise CommandError(f"import-legacy: {error}") from None
    print(report.to_json() if args.json else render(report))
    return 0

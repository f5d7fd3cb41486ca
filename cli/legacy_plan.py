"""What `shopfloor import-legacy` makes of the original app's rows: pure functions, no I/O.

The original app (FastAPI + SQLAlchemy on SQLite, `create_all`, no Alembic) had four tables whose names are not
known for sure; `detect_tables` finds them by their columns. `plan_import` turns their rows into Shopfloor rows and
records a `Decision` for every row it could not take as it was: imported with a fix, or skipped. Nothing is dropped
without a decision saying so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from core.models import IssueStatus, Role, StageEventKind, StageStatus
from core.passwords import identify
from core.planttime import from_local, oddity

USERNAME_MAX = 64
CODE_MAX = 64
HASH_MAX = 255
# A window the data leaves empty or reversed gets this length, so Shopfloor's `start < end` rule holds.
MIN_WINDOW = timedelta(minutes=1)
IMPORTED_EVENT_REASON = "imported from the original app"
UNUSABLE_HASH = "!"  # what is stored for a password hash too long to keep: matches no password


class Kind(StrEnum):
    """The four tables of the original app."""

    USERS = "users"
    WORK_ORDERS = "work_orders"
    STAGES = "stages"
    ISSUES = "issues"


TARGET_TABLE = {
    Kind.USERS: "user_account",
    Kind.WORK_ORDERS: "work_order",
    Kind.STAGES: "work_order_stage",
    Kind.ISSUES: "issue",
}

# Each field of the original models and the column names it may have had.
FIELDS: dict[Kind, dict[str, tuple[str, ...]]] = {
    Kind.USERS: {
        "id": ("id",),
        "username": ("username",),
        "password_hash": ("password_hash", "hashed_password"),
        "role": ("role",),
    },
    Kind.WORK_ORDERS: {
        "id": ("id",),
        "product_code": ("product_code",),
        "lot_no": ("lot_no",),
        "qty": ("qty", "quantity"),
        "planned_start": ("planned_start",),
        "planned_end": ("planned_end",),
    },
    Kind.STAGES: {
        "id": ("id",),
        "work_order_id": ("work_order_id", "workorder_id"),
        "stage_name": ("stage_name",),
        "planned_start": ("planned_start",),
        "planned_end": ("planned_end",),
        "actual_start": ("actual_start",),
        "actual_end": ("actual_end",),
        "status": ("status",),
    },
    Kind.ISSUES: {
        "id": ("id",),
        "work_order_stage_id": ("work_order_stage_id", "workorderstage_id", "stage_id"),
        "type": ("type", "issue_type"),
        "description": ("description",),
        "created_by": ("created_by", "created_by_id"),
        "created_at": ("created_at",),
    },
}
# The fields that identify a table as one of the four (the others may be missing and then read as NULL).
SIGNATURE: dict[Kind, frozenset[str]] = {
    Kind.USERS: frozenset({"id", "username", "password_hash"}),
    Kind.WORK_ORDERS: frozenset({"id", "product_code", "lot_no"}),
    Kind.STAGES: frozenset({"id", "work_order_id", "stage_name"}),
    Kind.ISSUES: frozenset({"id", "work_order_stage_id", "description"}),
}

ROLES = {role.value: role for role in Role}
STATUSES = {"planned": StageStatus.PLANNED, "in_progress": StageStatus.IN_PROGRESS, "done": StageStatus.DONE}


class DetectionError(ValueError):
    """The source's tables cannot be told apart; the message says which and why."""


@dataclass(frozen=True)
class SourceTable:
    """A table of the source read as one of the four: its name and the column of each field (None: absent)."""

    kind: Kind
    name: str
    columns: dict[str, str | None]

    @property
    def missing(self) -> list[str]:
        """Fields the table has no column for (read as NULL)."""
        return [name for name, column in self.columns.items() if column is None]


@dataclass(frozen=True)
class Detection:
    """Which source table was read as what, and the tables left unread."""

    tables: dict[Kind, SourceTable]
    unread: list[str]


def _match(kind: Kind, name: str, columns: Collection[str]) -> SourceTable | None:
    lowered = {column.lower(): column for column in columns}
    found = {
        field_name: next((lowered[alias] for alias in aliases if alias in lowered), None)
        for field_name, aliases in FIELDS[kind].items()
    }
    if any(found[field_name] is None for field_name in SIGNATURE[kind]):
        return None
    return SourceTable(kind=kind, name=name, columns=found)


def detect_tables(columns_by_table: Mapping[str, Collection[str]]) -> Detection:
    """Find the original app's four tables by their columns; DetectionError when two tables fit one kind."""
    tables: dict[Kind, SourceTable] = {}
    for kind in Kind:
        matches = [
            match
            for name, columns in sorted(columns_by_table.items())
            if (match := _match(kind, name, columns)) is not None
        ]
        if len(matches) > 1:
            names = ", ".join(match.name for match in matches)
            raise DetectionError(f"several tables look like the original app's {kind}: {names}")
        if matches:
            tables[kind] = matches[0]
    read = {table.name for table in tables.values()}
    unread = sorted(name for name in columns_by_table if name not in read and not name.startswith("sqlite_"))
    return Detection(tables=tables, unread=unread)


# --- values --------------------------------------------------------------------------------------------------


def as_int(value: Any) -> int | None:
    """An integer the source holds as a number or as digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def as_text(value: Any) -> str:
    """The text of a value, stripped; empty for NULL."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


@dataclass(frozen=True)
class LocalTime:
    """A source timestamp read in the plant's zone: the instant, and what was odd about it."""

    at: datetime | None
    problem: Literal["unreadable", "ambiguous", "nonexistent"] | None = None


def read_local_time(value: Any, zone: ZoneInfo) -> LocalTime:
    """A naive timestamp of the source (text as SQLAlchemy wrote it) read as local time in `zone`, in UTC.

    A time in the hour repeated when clocks go back is read as its first occurrence (reported as ambiguous); a time
    in the hour skipped when they go forward as if the clocks had not moved yet (reported as nonexistent).
    A timestamp with an offset keeps its offset.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return LocalTime(None)
    if not isinstance(value, str):
        return LocalTime(None, "unreadable")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return LocalTime(None, "unreadable")
    if parsed.tzinfo is not None:
        return LocalTime(parsed.astimezone(UTC))
    # The API reads naive input the same way (core.planttime).
    return LocalTime(from_local(parsed, zone), oddity(parsed, zone))


def _show(value: Any) -> str:
    return "NULL" if value is None else repr(value)


# --- the plan --------------------------------------------------------------------------------------------------

Action = Literal["fixed", "skipped"]


@dataclass(frozen=True)
class Decision:
    """What the importer did with one source row that it could not take as it was."""

    kind: Kind
    source_id: Any
    action: Action
    code: str
    detail: str


@dataclass(frozen=True)
class Existing:
    """What the target already holds (only with --skip-existing): ids per table, usernames, stage positions."""

    ids: Mapping[Kind, Collection[int]] = field(default_factory=dict)
    usernames: Collection[str] = ()
    last_position: Mapping[int, int] = field(default_factory=dict)


@dataclass
class Plan:
    """The rows to write per target table (column -> value), and every decision taken on the way."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    read: dict[Kind, int] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    def fixed_ids(self, kind: Kind) -> set[Any]:
        """Source ids of the rows of `kind` imported with at least one fix."""
        return {d.source_id for d in self.decisions if d.kind is kind and d.action == "fixed"}

    def skipped(self, kind: Kind) -> int:
        """How many rows of `kind` were not imported (each has exactly one `skipped` decision)."""
        return sum(1 for d in self.decisions if d.kind is kind and d.action == "skipped")

    def skipped_ids(self, kind: Kind) -> set[Any]:
        """Source ids of the rows of `kind` not imported."""
        return {d.source_id for d in self.decisions if d.kind is kind and d.action == "skipped"}


class _Planner:
    def __init__(self, *, zone: ZoneInfo, issue_types: Sequence[str], existing: Existing, now: datetime) -> None:
        self.zone = zone
        self.now = now
        self.issue_types = list(issue_types)
        self.existing = existing
        self.plan = Plan()

    def decide(self, kind: Kind, source_id: Any, action: Action, code: str, detail: str) -> None:
        self.plan.decisions.append(Decision(kind, source_id, action, code, detail))

    def shown(self, at: datetime) -> str:
        """An instant as the plant's local time, as the source wrote it."""
        return at.astimezone(self.zone).replace(tzinfo=None).isoformat(sep=" ")

    def time(self, kind: Kind, source_id: Any, name: str, value: Any) -> datetime | None:
        local = read_local_time(value, self.zone)
        if local.problem == "unreadable":
            self.decide(kind, source_id, "fixed", "timestamp_unreadable", f"{name} {_show(value)} is not a date: NULL")
        elif local.problem is not None:
            how = "its first occurrence" if local.problem == "ambiguous" else "before the clock change"
            self.decide(
                kind, source_id, "fixed", f"{local.problem}_local_time", f"{name} {value} in {self.zone}: read as {how}"
            )
        return local.at

    def ids(self, kind: Kind, rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
        """The rows with a usable id, in id order; the others and those already in the target are skipped."""
        self.plan.read[kind] = len(rows)
        existing = self.existing.ids.get(kind, ())
        usable: list[tuple[int, Mapping[str, Any]]] = []
        for row in rows:
            row_id = as_int(row.get("id"))
            if row_id is None:
                self.decide(kind, row.get("id"), "skipped", "id_invalid", f"id {_show(row.get('id'))} is not a number")
            elif row_id in existing:
                self.decide(kind, row_id, "skipped", "already_in_target", "a row with this id is already there")
            else:
                usable.append((row_id, row))
        return sorted(usable, key=lambda item: item[0])

    def text(self, kind: Kind, row_id: int, name: str, value: Any, *, limit: int, fallback: str) -> str:
        text = as_text(value)
        if not text:
            self.decide(kind, row_id, "fixed", f"{name}_missing", f"{name} is {_show(value)}: set to {fallback!r}")
            return fallback
        if len(text) > limit:
            self.decide(kind, row_id, "fixed", f"{name}_too_long", f"{name} cut to {limit} characters from {text!r}")
            return text[:limit]
        return text


def _unique_name(base: str, row_id: int, taken: set[str]) -> str:
    suffix = f"-{row_id}"
    candidate = base[: USERNAME_MAX - len(suffix)] + suffix
    counter = 1
    while candidate in taken:
        counter += 1
        suffix = f"-{row_id}-{counter}"
        candidate = base[: USERNAME_MAX - len(suffix)] + suffix
    return candidate


def _plan_users(planner: _Planner, rows: Sequence[Mapping[str, Any]]) -> set[int]:
    kind = Kind.USERS
    taken = {name.lower() for name in planner.existing.usernames}
    first_holder: dict[str, int] = {}
    imported: set[int] = set()
    for row_id, row in planner.ids(kind, rows):
        raw_name = as_text(row.get("username"))
        name = raw_name.lower()
        active = True
        if not name or len(name) > USERNAME_MAX:
            why = "empty" if not name else f"longer than {USERNAME_MAX} characters ({raw_name!r})"
            name = _unique_name("user", row_id, taken)
            active = False
            planner.decide(kind, row_id, "fixed", "username_unusable", f"username {why}: {name!r}, disabled")
        elif name in taken:
            holder = first_holder.get(name)
            clash = f"user #{holder}" if holder is not None else "a user already in the target"
            renamed = _unique_name(name, row_id, taken)
            planner.decide(
                kind,
                row_id,
                "fixed",
                "duplicate_username",
                f"{raw_name!r} is also the name of {clash} (usernames ignore case): imported as {renamed!r}",
            )
            name = renamed
        elif name != raw_name:
            planner.decide(kind, row_id, "fixed", "username_lower_cased", f"{raw_name!r} stored as {name!r}")
        taken.add(name)
        first_holder.setdefault(name, row_id)

        raw_role = row.get("role")
        role = ROLES.get(as_text(raw_role).lower())
        if role is None:
            role = Role.WORKER
            planner.decide(kind, row_id, "fixed", "role_unknown", f"role {_show(raw_role)}: worker (least privilege)")

        password_hash = as_text(row.get("password_hash"))
        if identify(password_hash) is None:
            shape = password_hash[:12] + "…" if len(password_hash) > 12 else password_hash
            planner.decide(
                kind,
                row_id,
                "fixed",
                "password_hash_unknown",
                f"password hash {shape!r} is of no known format: kept, account disabled until an admin sets a password",
            )
            active = False
            if len(password_hash) > HASH_MAX:
                password_hash = UNUSABLE_HASH
        planner.plan.rows["user_account"].append(
            {"id": row_id, "username": name, "password_hash": password_hash, "role": role, "is_active": active}
        )
        imported.add(row_id)
    return imported


@dataclass
class _Window:
    start: datetime | None
    end: datetime | None


def _fix_window(
    planner: _Planner,
    kind: Kind,
    row_id: int,
    window: _Window,
    *,
    start_from: tuple[str, datetime | None],
    end_from: tuple[str, datetime | None],
    notes: list[str],
) -> tuple[datetime, datetime] | None:
    """A planned window with start < end, filled in from the given fallbacks; None when nothing is known."""
    start, end = window.start, window.end
    if start is None and start_from[1] is not None:
        start = start_from[1]
        notes.append(f"planned start was empty, taken from {start_from[0]}")
        planner.decide(kind, row_id, "fixed", "planned_start_missing", f"planned_start taken from {start_from[0]}")
    if end is None and end_from[1] is not None and (start is None or end_from[1] > start):
        end = end_from[1]
        notes.append(f"planned end was empty, taken from {end_from[0]}")
        planner.decide(kind, row_id, "fixed", "planned_end_missing", f"planned_end taken from {end_from[0]}")
    if start is None and end is not None:
        start = end - MIN_WINDOW
        notes.append("planned start was empty, set one minute before the planned end")
        planner.decide(kind, row_id, "fixed", "planned_start_missing", "planned_start set 1 minute before planned_end")
    if start is None:
        return None
    if end is None or end <= start:
        was = "empty" if end is None else f"{planner.shown(end)} (not after the start)"
        notes.append(f"planned end was {was}, set one minute after the planned start")
        planner.decide(kind, row_id, "fixed", "planned_window_invalid", f"planned_end {was}: planned_start + 1 minute")
        end = start + MIN_WINDOW
    return start, end


def _plan_work_orders(
    planner: _Planner, rows: Sequence[Mapping[str, Any]], stages_by_order: Mapping[int, list[Mapping[str, Any]]]
) -> dict[int, tuple[datetime, datetime]]:
    kind = Kind.WORK_ORDERS
    windows: dict[int, tuple[datetime, datetime]] = {}
    for row_id, row in planner.ids(kind, rows):
        notes: list[str] = []
        product = planner.text(kind, row_id, "product_code", row.get("product_code"), limit=CODE_MAX, fallback="?")
        lot = planner.text(kind, row_id, "lot_no", row.get("lot_no"), limit=CODE_MAX, fallback=f"LEGACY-{row_id}")
        for name, value, used in (
            ("product_code", row.get("product_code"), product),
            ("lot_no", row.get("lot_no"), lot),
        ):
            if as_text(value) != used:
                notes.append(f"{name} was {_show(value)}")
        raw_qty = row.get("qty")
        qty = as_int(raw_qty)
        if qty is None or qty <= 0:
            notes.append(f"qty was {_show(raw_qty)}, set to 1")
            planner.decide(kind, row_id, "fixed", "qty_invalid", f"qty {_show(raw_qty)} is not a positive number: 1")
            qty = 1
        stage_times = [
            planner_time
            for stage in stages_by_order.get(row_id, [])
            for key in ("planned_start", "planned_end", "actual_start", "actual_end")
            if (planner_time := read_local_time(stage.get(key), planner.zone).at) is not None
        ]
        window = _fix_window(
            planner,
            kind,
            row_id,
            _Window(
                planner.time(kind, row_id, "planned_start", row.get("planned_start")),
                planner.time(kind, row_id, "planned_end", row.get("planned_end")),
            ),
            start_from=("the earliest time of its stages", min(stage_times, default=None)),
            end_from=("the latest time of its stages", max(stage_times, default=None)),
            notes=notes,
        )
        if window is None:
            planner.decide(
                kind, row_id, "skipped", "planned_window_missing", "no planned time in the order nor in its stages"
            )
            continue
        windows[row_id] = window
        planner.plan.rows["work_order"].append(
            {
                "id": row_id,
                "product_code": product,
                "lot_no": lot,
                "qty": qty,
                "planned_start": window[0],
                "planned_end": window[1],
                "notes": ("Imported from the original app: " + "; ".join(notes) + ".") if notes else None,
            }
        )
    return windows


def _stage_status(
    planner: _Planner, row_id: int, raw: Any, start: datetime | None, end: datetime | None
) -> StageStatus:
    status = STATUSES.get(as_text(raw).lower().replace(" ", "_").replace("-", "_"))
    if status is not None:
        return status
    status = (
        StageStatus.DONE if end is not None else StageStatus.IN_PROGRESS if start is not None else StageStatus.PLANNED
    )
    planner.decide(
        Kind.STAGES, row_id, "fixed", "status_unknown", f"status {_show(raw)}: {status.value} (from actual_start/end)"
    )
    return status


def _stage_events(
    planner: _Planner,
    row_id: int,
    status: StageStatus,
    times: tuple[datetime | None, datetime | None],
    planned_end: datetime,
) -> list[tuple[StageEventKind, datetime, str]]:
    """The event log of an imported stage: (kind, at, reason). The reason says the event was imported, and how its
    time was chosen when the source did not have one."""
    kind = Kind.STAGES
    start, end = times
    if start is not None and end is not None and end < start:
        planner.decide(
            kind,
            row_id,
            "fixed",
            "end_before_start",
            f"actual_end {planner.shown(end)} before actual_start {planner.shown(start)}: the end is left out",
        )
        end = None
    if status is StageStatus.PLANNED:
        if start is not None or end is not None:
            planner.decide(
                kind, row_id, "fixed", "times_contradict_status", "status planned: actual_start/end left out"
            )
        return []
    if status is StageStatus.IN_PROGRESS:
        if start is None:
            planner.decide(
                kind, row_id, "fixed", "in_progress_without_start", "in progress, start time unknown: no start event"
            )
        if end is not None:
            planner.decide(kind, row_id, "fixed", "times_contradict_status", "status in_progress: actual_end left out")
        return [] if start is None else [(StageEventKind.START, start, IMPORTED_EVENT_REASON)]
    if end is not None:
        if start is None:
            planner.decide(kind, row_id, "fixed", "done_without_start", "done, start time unknown: no start event")
            return [(StageEventKind.DONE, end, IMPORTED_EVENT_REASON)]
        return [(StageEventKind.START, start, IMPORTED_EVENT_REASON), (StageEventKind.DONE, end, IMPORTED_EVENT_REASON)]
    # Done, but when is not known. A start event without a done event would count the stage as running until now
    # (its metrics growing forever), so the stage gets only its done event, at the last time known: the metrics
    # then show it done with no actual duration. The event's reason says where its time came from.
    known, source = (start, "actual_start") if start is not None else (planned_end, "planned_end")
    planner.decide(
        kind,
        row_id,
        "fixed",
        "done_without_end",
        f"done, end time unknown: one done event at its {source} {planner.shown(known)}, no actual duration",
    )
    return [(StageEventKind.DONE, known, f"{IMPORTED_EVENT_REASON}; end time unknown, {source} used")]


def _plan_stages(
    planner: _Planner, rows: Sequence[Mapping[str, Any]], windows: Mapping[int, tuple[datetime, datetime]]
) -> dict[int, datetime]:
    kind = Kind.STAGES
    existing_orders = set(planner.existing.ids.get(Kind.WORK_ORDERS, ()))
    positions = dict(planner.existing.last_position)
    # The stage's best-known time, for an issue without its own.
    stage_times: dict[int, datetime] = {}
    for row_id, row in planner.ids(kind, rows):
        order_id = as_int(row.get("work_order_id"))
        if order_id is None or (order_id not in windows and order_id not in existing_orders):
            planner.decide(
                kind,
                row_id,
                "skipped",
                "work_order_missing",
                f"work order {_show(row.get('work_order_id'))} is not in the source or was skipped",
            )
            continue
        name = planner.text(
            kind, row_id, "stage_name", row.get("stage_name"), limit=CODE_MAX, fallback=f"Stage {row_id}"
        )
        order_start, order_end = windows.get(order_id, (None, None))
        window = _fix_window(
            planner,
            kind,
            row_id,
            _Window(
                planner.time(kind, row_id, "planned_start", row.get("planned_start")),
                planner.time(kind, row_id, "planned_end", row.get("planned_end")),
            ),
            start_from=("its work order", order_start),
            end_from=("its work order", order_end),
            notes=[],
        )
        if window is None:
            planner.decide(
                kind, row_id, "skipped", "planned_window_missing", "no planned time in the stage nor its order"
            )
            continue
        start = planner.time(kind, row_id, "actual_start", row.get("actual_start"))
        end = planner.time(kind, row_id, "actual_end", row.get("actual_end"))
        status = _stage_status(planner, row_id, row.get("status"), start, end)
        positions[order_id] = positions.get(order_id, 0) + 1
        planner.plan.rows["work_order_stage"].append(
            {
                "id": row_id,
                "work_order_id": order_id,
                "position": positions[order_id],
                "stage_name": name,
                "planned_start": window[0],
                "planned_end": window[1],
                "status": status,
            }
        )
        for event_kind, at, reason in _stage_events(planner, row_id, status, (start, end), window[1]):
            planner.plan.rows["stage_event"].append(
                {"stage_id": row_id, "kind": event_kind, "at": at, "user_id": None, "reason": reason}
            )
        stage_times[row_id] = start or window[0]
    return stage_times


def _issue_type(planner: _Planner, row_id: int, raw: Any) -> tuple[str, str | None]:
    """The configured type for the source's type, and the original when it had to be replaced."""
    text = as_text(raw)
    if text in planner.issue_types:
        return text, None
    normalised = text.lower().replace(" ", "_").replace("-", "_")
    if normalised in planner.issue_types:
        planner.decide(Kind.ISSUES, row_id, "fixed", "type_normalised", f"type {text!r} read as {normalised!r}")
        return normalised, None
    fallback = "other" if "other" in planner.issue_types else planner.issue_types[-1]
    planner.decide(
        Kind.ISSUES,
        row_id,
        "fixed",
        "type_unknown",
        f"type {_show(raw)} is not one of ISSUE_TYPES: {fallback!r}, the original kept in the description",
    )
    return fallback, text or None


def _plan_issues(
    planner: _Planner, rows: Sequence[Mapping[str, Any]], stage_times: Mapping[int, datetime], users: Collection[int]
) -> None:
    kind = Kind.ISSUES
    existing_stages = set(planner.existing.ids.get(Kind.STAGES, ()))
    known_users = set(users) | set(planner.existing.ids.get(Kind.USERS, ()))
    for row_id, row in planner.ids(kind, rows):
        stage_id = as_int(row.get("work_order_stage_id"))
        if stage_id is None or (stage_id not in stage_times and stage_id not in existing_stages):
            planner.decide(
                kind,
                row_id,
                "skipped",
                "stage_missing",
                f"stage {_show(row.get('work_order_stage_id'))} is not in the source or was skipped",
            )
            continue
        issue_type, original_type = _issue_type(planner, row_id, row.get("type"))
        description = as_text(row.get("description"))
        if not description:
            planner.decide(kind, row_id, "fixed", "description_missing", "description empty: stored empty")
        if original_type is not None:
            description = f"[{original_type}] {description}".rstrip()
        raw_reporter = row.get("created_by")
        reporter = as_int(raw_reporter)
        if reporter is not None and reporter not in known_users:
            planner.decide(
                kind, row_id, "fixed", "reporter_missing", f"created_by user {reporter} is not imported: reporter empty"
            )
            reporter = None
        elif reporter is None and raw_reporter is not None:
            planner.decide(kind, row_id, "fixed", "reporter_missing", f"created_by {_show(raw_reporter)}: empty")
        created_at = planner.time(kind, row_id, "created_at", row.get("created_at"))
        if created_at is None:
            created_at = stage_times.get(stage_id)
            if created_at is None:
                created_at = planner.now
                where = "the import time"
            else:
                where = "its stage's start (or planned start)"
            planner.decide(kind, row_id, "fixed", "created_at_missing", f"created_at empty: {where}")
        planner.plan.rows["issue"].append(
            {
                "id": row_id,
                "stage_id": stage_id,
                "type": issue_type,
                "description": description,
                "status": IssueStatus.OPEN,
                "reported_by_id": reporter,
                "created_at": created_at,
            }
        )


def plan_import(
    source: Mapping[Kind, Sequence[Mapping[str, Any]]],
    *,
    zone: ZoneInfo,
    issue_types: Sequence[str],
    now: datetime,
    existing: Existing | None = None,
) -> Plan:
    """The Shopfloor rows for the original app's rows (field name -> raw SQLite value), with every decision taken;
    `now` dates an issue that has no time of its own nor a stage to take one from."""
    planner = _Planner(zone=zone, issue_types=issue_types, existing=existing or Existing(), now=now)
    users = _plan_users(planner, source.get(Kind.USERS, ()))
    stages = source.get(Kind.STAGES, ())
    stages_by_order: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for stage in stages:
        order_id = as_int(stage.get("work_order_id"))
        if order_id is not None:
            stages_by_order[order_id].append(stage)
    windows = _plan_work_orders(planner, source.get(Kind.WORK_ORDERS, ()), stages_by_order)
    stage_times = _plan_stages(planner, stages, windows)
    _plan_issues(planner, source.get(Kind.ISSUES, ()), stage_times, users)
    return planner.plan

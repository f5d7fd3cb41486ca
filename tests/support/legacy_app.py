"""The original app's `database.db`, built as its SQLAlchemy `create_all` made it (plain sqlite3 and its DDL).

`LegacyDatabase` writes rows exactly as the original stored them (naive local times as text, free-form statuses,
foreign keys not enforced); `build_plant` fills one with the plant's history and every edge case the importer must
report. The password hashes are made independently of the code under test: bcrypt by the `bcrypt` package,
pbkdf2_sha256 with hashlib, sha256_crypt from the SHA-crypt specification's published test vectors.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import bcrypt


@dataclass(frozen=True)
class TableNames:
    """How the original app named its four tables (its models' `__tablename__`)."""

    users: str
    work_orders: str
    stages: str
    issues: str


PLURAL = TableNames(users="users", work_orders="work_orders", stages="work_order_stages", issues="issues")
SINGULAR = TableNames(users="user", work_orders="workorders", stages="workorderstages", issues="issue")


def ddl(names: TableNames) -> list[str]:
    """The statements SQLAlchemy's `create_all` emits on SQLite for the original models."""
    return [
        f"""CREATE TABLE "{names.users}" (
            id INTEGER NOT NULL, username VARCHAR, password_hash VARCHAR, role VARCHAR, PRIMARY KEY (id))""",
        f'CREATE UNIQUE INDEX "ix_{names.users}_username" ON "{names.users}" (username)',
        f'CREATE INDEX "ix_{names.users}_id" ON "{names.users}" (id)',
        f"""CREATE TABLE "{names.work_orders}" (
            id INTEGER NOT NULL, product_code VARCHAR, lot_no VARCHAR, qty INTEGER, planned_start DATETIME,
            planned_end DATETIME, PRIMARY KEY (id))""",
        f"""CREATE TABLE "{names.stages}" (
            id INTEGER NOT NULL, work_order_id INTEGER, stage_name VARCHAR, planned_start DATETIME,
            planned_end DATETIME, actual_start DATETIME, actual_end DATETIME, status VARCHAR, PRIMARY KEY (id),
            FOREIGN KEY(work_order_id) REFERENCES "{names.work_orders}" (id))""",
        f"""CREATE TABLE "{names.issues}" (
            id INTEGER NOT NULL, work_order_stage_id INTEGER, type VARCHAR, description VARCHAR, created_by INTEGER,
            created_at DATETIME, PRIMARY KEY (id),
            FOREIGN KEY(work_order_stage_id) REFERENCES "{names.stages}" (id),
            FOREIGN KEY(created_by) REFERENCES "{names.users}" (id))""",
    ]


def local(text: str) -> str:
    """A naive local time as SQLAlchemy's DateTime stores it on SQLite."""
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S.%f")


# --- password hashes, made without the code under test --------------------------------------------------------


def bcrypt_hash(password: str, prefix: str = "2b") -> str:
    """A bcrypt hash with the given prefix (`2y` is PHP's name for the same algorithm as `2b`)."""
    made = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a" if prefix == "2a" else b"2b"))
    return made.decode().replace("$2b$", f"${prefix}$", 1)


def _ab64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=").replace("+", ".")


def pbkdf2_sha256_hash(password: str, *, salt: bytes = b"tuz-legacy-16byt", rounds: int = 29000) -> str:
    """passlib's `$pbkdf2-sha256$rounds$salt$checksum` (adapted base64), computed with hashlib."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"$pbkdf2-sha256${rounds}${_ab64(salt)}${_ab64(digest)}"


# From the SHA-crypt specification's test vectors (also what glibc's crypt(3) returns for them).
SHA256_CRYPT_PASSWORD = "Hello world!"
SHA256_CRYPT_VECTORS = (
    "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
    "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
)


# --- the database --------------------------------------------------------------------------------------------


class LegacyDatabase:
    """Rows written into an original-app database; values go in as given (None is NULL)."""

    def __init__(self, connection: sqlite3.Connection, names: TableNames) -> None:
        self.connection = connection
        self.names = names

    def _insert(self, table: str, values: dict[str, Any]) -> None:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.connection.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', tuple(values.values()))  # noqa: S608 -- test names

    def user(self, id: int, username: str | None, password_hash: str | None, role: str | None = "worker") -> None:
        """A user row."""
        self._insert(self.names.users, {"id": id, "username": username, "password_hash": password_hash, "role": role})

    def work_order(
        self,
        id: int,
        *,
        product_code: str | None = "KALIP-01",
        lot_no: str | None = None,
        qty: Any = 100,
        planned_start: str | None = None,
        planned_end: str | None = None,
    ) -> None:
        """A work order row; times are naive local ISO text."""
        self._insert(
            self.names.work_orders,
            {
                "id": id,
                "product_code": product_code,
                "lot_no": lot_no if lot_no is not None else f"LOT-{id}",
                "qty": qty,
                "planned_start": local(planned_start) if planned_start else None,
                "planned_end": local(planned_end) if planned_end else None,
            },
        )

    def stage(
        self,
        id: int,
        work_order_id: int,
        stage_name: str | None,
        *,
        planned: tuple[str | None, str | None] = (None, None),
        actual: tuple[str | None, str | None] = (None, None),
        status: str | None = "planned",
    ) -> None:
        """A stage row; times are naive local ISO text."""
        self._insert(
            self.names.stages,
            {
                "id": id,
                "work_order_id": work_order_id,
                "stage_name": stage_name,
                "planned_start": local(planned[0]) if planned[0] else None,
                "planned_end": local(planned[1]) if planned[1] else None,
                "actual_start": local(actual[0]) if actual[0] else None,
                "actual_end": local(actual[1]) if actual[1] else None,
                "status": status,
            },
        )

    def issue(
        self,
        id: int,
        stage_id: int,
        *,
        type: str | None = "quality",
        description: str | None = "çizik var",
        created_by: int | None = None,
        created_at: str | None = "2026-11-20T09:00:00",
    ) -> None:
        """An issue row."""
        self._insert(
            self.names.issues,
            {
                "id": id,
                "work_order_stage_id": stage_id,
                "type": type,
                "description": description,
                "created_by": created_by,
                "created_at": local(created_at) if created_at else None,
            },
        )


@contextmanager
def legacy_database(path: Path, names: TableNames = PLURAL) -> Iterator[LegacyDatabase]:
    """A new original-app database at `path`; what the block adds is committed at its end."""
    with closing(sqlite3.connect(path)) as connection:
        for statement in ddl(names):
            connection.execute(statement)
        yield LegacyDatabase(connection, names)
        connection.commit()


# --- the plant's history, with every edge case ----------------------------------------------------------------

# Who can log in after the import, with what, and the hash format each was stored with.
PASSWORDS = {
    "admin": ("admin-parola-2b", "bcrypt $2b$"),
    "planlama": ("planlama-pbkdf2", "pbkdf2_sha256"),
    "mehmet": ("mehmet-parola-2a", "bcrypt $2a$"),
    "mehmet-4": ("mehmet-parola-2y", "bcrypt $2y$"),
    "ayse": (SHA256_CRYPT_PASSWORD, "sha256_crypt"),
}
PLANT_ZONE = "Europe/Istanbul"  # UTC+3 all year


def build_plant(path: Path, names: TableNames = PLURAL) -> None:
    """The original app's database of a plant: a normal history, a stage in progress, and every edge case."""
    with legacy_database(path, names) as db:
        db.user(1, "admin", bcrypt_hash(PASSWORDS["admin"][0], "2b"), "admin")
        db.user(2, "Planlama", pbkdf2_sha256_hash(PASSWORDS["planlama"][0]), "planner")
        db.user(3, "mehmet", bcrypt_hash(PASSWORDS["mehmet"][0], "2a"), "worker")
        db.user(4, "Mehmet", bcrypt_hash(PASSWORDS["mehmet-4"][0], "2y"), "worker")  # same name, other case
        db.user(5, "ayse", SHA256_CRYPT_VECTORS[0], "operator")  # a role Shopfloor does not have
        db.user(6, "eski", "md5$9f86d081884c7d65", "worker")  # a hash format nobody can verify
        db.user(7, "", bcrypt_hash("x"), "planner")  # no username

        db.work_order(10, planned_start="2026-11-20T08:00", planned_end="2026-11-20T16:00", qty=500)
        db.work_order(11, qty=0, planned_start="2026-11-21T08:00", planned_end="2026-11-21T12:00")
        db.work_order(12, lot_no="", planned_start="2026-11-22T10:00", planned_end="2026-11-22T09:00")
        db.work_order(13, qty=20)  # no planned times: taken from its stages
        db.work_order(14, product_code=None, qty=-5, planned_start="2026-11-23T08:00", planned_end="2026-11-23T09:00")

        # A normal history: 30 minutes planned, 35 worked.
        db.stage(
            100, 10, "Enjeksiyon", planned=("2026-11-20T08:00", "2026-11-20T08:30"),
            actual=("2026-11-20T08:05", "2026-11-20T08:40"), status="done",
        )  # fmt: skip
        db.stage(
            101, 10, "Montaj", planned=("2026-11-20T08:30", "2026-11-20T16:00"),
            actual=("2026-11-20T09:00", None), status="in_progress",
        )  # fmt: skip
        db.stage(102, 11, "Enjeksiyon", actual=("2026-11-21T08:10", None), status="done")  # done, no end
        db.stage(103, 11, "Montaj", status="in_progress")  # in progress, no start
        db.stage(
            104, 12, "Enjeksiyon", planned=("2026-11-22T08:00", "2026-11-22T09:00"),
            actual=("2026-11-22T09:30", "2026-11-22T08:45"), status="done",
        )  # fmt: skip
        db.stage(105, 99, "Enjeksiyon", status="planned")  # its work order is missing
        db.stage(
            106, 13, "Kontrol", planned=("2026-11-24T08:00", "2026-11-24T10:00"),
            actual=("2026-11-24T08:15", None), status="beklemede",
        )  # fmt: skip
        db.stage(
            107, 13, None, planned=("2026-11-24T10:00", "2026-11-24T11:00"),
            actual=("2026-11-24T10:00", "2026-11-24T10:50"), status="DONE",
        )  # fmt: skip
        db.stage(108, 14, "Enjeksiyon", status="planned")

        db.issue(200, 100, type="quality", created_by=3, created_at="2026-11-20T08:20")
        db.issue(201, 105, created_by=3)  # its stage was skipped
        db.issue(202, 999, created_by=1)  # its stage never existed
        db.issue(203, 101, type="safety", created_by=42, description="eldiven yok")  # reporter missing
        db.issue(204, 101, type="Makine arızası", created_by=4, description="hidrolik kaçak")  # unknown type
        db.issue(205, 100, type="Quality", created_by=2)  # a known type, other case
        db.issue(206, 102, type="other", description=None, created_at=None)  # nothing but its stage

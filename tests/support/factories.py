"""Small factories for rows a test needs as they are (users, machines, work orders, telemetry), made in a session.

Each factory adds its rows and flushes, so ids are set; the caller's transaction decides when they are committed:

    async with api.session() as session:
        press = await make_machine(session, "press-7", ideal_cycle_time_s=32.4)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.contract import MachineState
from core.models import Machine, MachineStateChange, Reading, Role, StageStatus, UserAccount, WorkOrder, WorkOrderStage
from core.security import PasswordHasher
from core.settings import PasswordSettings

TEST_PASSWORD = "correct-horse-battery"
# Cheap hashing keeps the suite fast; production uses the settings' defaults.
TEST_PASSWORDS = PasswordSettings(argon2_time_cost=1, argon2_memory_kib=1024)


def password_hash(password: str = TEST_PASSWORD) -> str:
    """`password` hashed as the app under test (cheap TEST_PASSWORDS settings) expects it."""
    hasher = PasswordHasher(time_cost=TEST_PASSWORDS.argon2_time_cost, memory_kib=TEST_PASSWORDS.argon2_memory_kib)
    return hasher.hash(password)


async def make_user(
    session: AsyncSession, /, username: str, role: Role = Role.WORKER, *, active: bool = True
) -> UserAccount:
    """A user with the shared test password."""
    user = UserAccount(username=username, role=role, is_active=active, password_hash=password_hash())
    session.add(user)
    await session.flush()
    return user


async def make_machine(
    session: AsyncSession, /, code: str = "press-1", *, site: str = "plant1", name: str | None = None, **fields: Any
) -> Machine:
    """A registered machine, named after its code unless `name` is given; `fields` sets any other column."""
    machine = Machine(site=site, code=code, name=name or code, **fields)
    session.add(machine)
    await session.flush()
    return machine


async def make_work_order(
    session: AsyncSession,
    /,
    *,
    start: datetime,
    stages: Sequence[StageStatus] = (StageStatus.PLANNED,),
    stage_hours: float = 1,
    stage_names: Sequence[str] | None = None,
    machine_id: int | None = None,
    product_code: str = "P-1",
    lot_no: str = "L1",
    qty: int = 10,
    cancelled: bool = False,
) -> WorkOrder:
    """A work order of back-to-back stages from `start`, one per status given, each `stage_hours` long.

    The stages are named S1, S2, … unless `stage_names` says otherwise, and all run on `machine_id`; the work
    order ends with its last stage, and `cancelled` cancels it at `start`.
    """
    length = timedelta(hours=stage_hours)
    names = list(stage_names) if stage_names is not None else [f"S{index + 1}" for index in range(len(stages))]
    work_order = WorkOrder(
        product_code=product_code,
        lot_no=lot_no,
        qty=qty,
        planned_start=start,
        planned_end=start + length * len(stages),
        cancelled_at=start if cancelled else None,
        stages=[
            WorkOrderStage(
                position=index + 1,
                stage_name=name,
                planned_start=start + length * index,
                planned_end=start + length * (index + 1),
                machine_id=machine_id,
                status=status,
            )
            for index, (name, status) in enumerate(zip(names, stages, strict=True))
        ],
    )
    session.add(work_order)
    await session.flush()
    return work_order


async def add_readings(session: AsyncSession, /, machine_id: int, rows: Iterable[tuple[str, datetime, float]]) -> None:
    """Readings of one machine, as (tag, ts, value) rows, in one bulk insert."""
    await session.execute(
        insert(Reading), [{"machine_id": machine_id, "tag": tag, "ts": ts, "value": value} for tag, ts, value in rows]
    )


async def add_states(session: AsyncSession, /, machine_id: int, rows: Iterable[tuple[datetime, MachineState]]) -> None:
    """State changes of one machine, as (ts, state) rows, in one bulk insert."""
    await session.execute(
        insert(MachineStateChange), [{"machine_id": machine_id, "ts": ts, "state": state} for ts, state in rows]
    )

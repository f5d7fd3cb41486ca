"""The demo plant (`shopfloor seed`, and `shopfloor up` at every start): users, machines, work orders."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from cli.errors import CommandError
from core.logging import configure_logging
from core.settings import Environment, ToolSettings

# The demo plant of `shopfloor seed` / `shopfloor up`: what the simulators and the gateway example publish as.
DEMO_SITE = "plant1"
DEMO_MACHINES = (
    # code, name, type, ideal cycle time (s): the simulators' defaults
    ("press-1", "Injection press 1 (OPC-UA)", "injection_moulding", 12.0),
    ("assembly-1", "Assembly station 1 (Modbus TCP)", "assembly", 8.0),
    ("press-2", "Injection press 2 (MQTT-native)", "injection_moulding", 12.0),
)
# The setpoints the demo gateway may write (gateway/example.yaml marks the same tags `writable`, same limits): tag,
# type, min, max, and the job field it takes when a stage's job data is sent.
DEMO_WRITABLE = {
    "press-1": (
        ("cycle_time_setpoint_s", "float", 2, 120, None),
        ("target_qty", "int", 0, 100_000, "target_qty"),
        ("job_id", "int", 0, 999_999_999, "work_order_id"),
    ),
    "assembly-1": (
        ("target_qty", "int", 0, 10_000, "target_qty"),
        ("cycle_time_setpoint_s", "float", 2, 60, None),
    ),
}
DEMO_WORK_ORDERS = (
    # product, lot, qty, stages as (name, machine code, minutes) from the hour after seeding
    ("HOUSING-A", "DEMO-001", 500, (("Enjeksiyon", "press-1", 120), ("Montaj", "assembly-1", 120))),
    ("HOUSING-B", "DEMO-002", 250, (("Enjeksiyon", "press-2", 90), ("Montaj", "assembly-1", 90))),
    ("COVER-C", "DEMO-003", 1000, (("Enjeksiyon", "press-1", 240),)),
)
# The demo plant's calendar: three 8-hour shifts every day, a 30-minute break each (local wall time).
DEMO_SHIFTS = (
    ("Sabah", time(6), time(14), time(10), time(10, 30)),
    ("Akşam", time(14), time(22), time(18), time(18, 30)),
    ("Gece", time(22), time(6), time(2), time(2, 30)),
)
# Yesterday's morning shift of press-1, so the OEE by shift has losses to show from the start: minutes after 06:00
# and the state entered, the stops classified or not, and parts made per hour.
DEMO_HISTORY = (
    (0, "running"), (95, "idle"), (96.5, "running"), (130, "setup"), (155, "running"),
    (300, "alarm"), (315, "running"), (400, "idle"), (408, "running"),
)  # fmt: skip
DEMO_CLASSIFIED = ((130, "setup"), (300, "breakdown"))  # the idle at 400 is left for someone to explain
DEMO_PARTS_PER_HOUR = 270


@dataclass(frozen=True)
class SeedResult:
    """What `seed` created: users with their one-time passwords, machine codes, work-order lots, and whether it
    made the calendar (with yesterday's history of press-1)."""

    users: list[tuple[str, str, str]]
    machines: list[str]
    work_orders: list[str]
    calendar: bool = False


async def seed_demo(settings: ToolSettings) -> SeedResult:
    """Create what is missing of the demo plant (idempotent); passwords are returned, never stored in clear."""
    from sqlalchemy import select

    from api.machines.service import NewMachine, create_machine
    from api.stages.service import StagePlan, assign
    from api.users.service import create_user
    from api.workorders.service import WorkOrderPlan, create_work_order
    from core.clock import utcnow
    from core.db import create_engine_from_settings, session_factory, transaction
    from core.models import Machine, Role, UserAccount, WorkOrder
    from core.security import PasswordHasher, Principal

    engine = create_engine_from_settings(settings.database)
    hasher = PasswordHasher(
        time_cost=settings.passwords.argon2_time_cost, memory_kib=settings.passwords.argon2_memory_kib
    )
    result = SeedResult([], [], [])
    calendar = False
    try:
        async with transaction(session_factory(engine)) as session:
            for role in (Role.ADMIN, Role.PLANNER, Role.WORKER):
                username = role.value
                if await session.scalar(select(UserAccount.id).where(UserAccount.username == username)):
                    continue
                password = secrets.token_urlsafe(12)
                await create_user(
                    session,
                    hasher=hasher,
                    username=username,
                    password=password,
                    role=role,
                    full_name=f"Demo {role.value}",
                    min_password_length=settings.passwords.password_min_length,
                )
                result.users.append((username, role.value, password))
            admin = await session.scalar(select(UserAccount).where(UserAccount.username == Role.ADMIN.value))
            worker = await session.scalar(select(UserAccount).where(UserAccount.username == Role.WORKER.value))
            if admin is None or worker is None:
                return result
            actor = Principal(
                user_id=admin.id, username=admin.username, role=admin.role, token_version=admin.token_version
            )
            machine_ids: dict[str, int] = {}
            for code, name, machine_type, ideal in DEMO_MACHINES:
                existing = await session.scalar(select(Machine).where(Machine.site == DEMO_SITE, Machine.code == code))
                if existing is None:
                    new = NewMachine(DEMO_SITE, code, name, machine_type, "Hall A", ideal)
                    existing = await create_machine(session, actor=actor, machine=new)
                    result.machines.append(code)
                elif existing.ideal_cycle_time_s is None:  # registered by its first telemetry: complete it
                    existing.ideal_cycle_time_s, existing.name, existing.machine_type = ideal, name, machine_type
                machine_ids[code] = existing.id
            await _seed_writable_tags(session, machine_ids)
            start = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            for product, lot, qty, stages in DEMO_WORK_ORDERS:
                if await session.scalar(select(WorkOrder.id).where(WorkOrder.lot_no == lot)):
                    continue
                plans, cursor = [], start
                for stage_name, machine, minutes in stages:
                    end = cursor + timedelta(minutes=minutes)
                    machine_id = machine_ids[machine]
                    plans.append(
                        StagePlan(stage_name=stage_name, planned_start=cursor, planned_end=end, machine_id=machine_id)
                    )
                    cursor = end
                plan = WorkOrderPlan(product, lot, qty, start, cursor, "demo work order")
                details = await create_work_order(session, actor=actor, plan=plan, stages=plans, templates=[])
                for stage in details.stages:
                    await assign(session, actor=actor, stage_id=stage.stage.id, user_id=worker.id, now=utcnow())
                result.work_orders.append(lot)
            calendar = await _seed_calendar(session, actor=actor, settings=settings, press_id=machine_ids["press-1"])
    finally:
        await engine.dispose()
    return SeedResult(result.users, result.machines, result.work_orders, calendar)


async def _seed_writable_tags(session: Any, machine_ids: dict[str, int]) -> None:
    """The demo machines' writable setpoints, where the registry has none yet (an admin's own stay as they are)."""
    from api.commands.service import JobField, set_writable_tag, writable_tags
    from core.commands import WriteLimits

    for code, tags in DEMO_WRITABLE.items():
        if await writable_tags(session, machine_id=machine_ids[code]):
            continue
        for tag, value_type, low, high, job_field in tags:
            await set_writable_tag(
                session,
                machine_id=machine_ids[code],
                tag=tag,
                limits=WriteLimits.model_validate({"type": value_type, "min": low, "max": high}),
                job_field=JobField(job_field) if job_field else None,
                description=None,
            )


async def _seed_calendar(session: object, *, actor: object, settings: ToolSettings, press_id: int) -> bool:
    """The demo's shift pattern and yesterday's morning shift of press-1 (stops, two classified, parts), once."""
    from zoneinfo import ZoneInfo

    from sqlalchemy import insert, select
    from sqlalchemy.ext.asyncio import AsyncSession

    from api.plant.service import ShiftSpec, create_pattern
    from core.clock import utcnow
    from core.contract import MachineState
    from core.models import DowntimeClassification, MachineStateChange, Reading, ShiftPattern
    from core.security import Principal

    if not isinstance(session, AsyncSession) or not isinstance(actor, Principal):
        raise TypeError("an AsyncSession and a Principal are needed")
    if await session.scalar(select(ShiftPattern.id).limit(1)) is not None:
        return False
    zone = ZoneInfo(settings.tracking.plant_timezone)
    today = utcnow().astimezone(zone).date()
    specs = [
        ShiftSpec(name, range(7), start, end, [(rest, rest_end)]) for name, start, end, rest, rest_end in DEMO_SHIFTS
    ]
    await create_pattern(
        session, actor=actor, valid_from=today - timedelta(days=7), name="Demo: 3 vardiya", shifts=specs
    )
    morning = datetime.combine(today - timedelta(days=1), time(6), tzinfo=zone)

    def at(minutes: float) -> datetime:
        return morning + timedelta(minutes=minutes)

    await session.execute(
        insert(MachineStateChange),
        [{"machine_id": press_id, "ts": at(minutes), "state": MachineState(state)} for minutes, state in DEMO_HISTORY],
    )
    # The counters read every minute (the gateway re-sends at least that often, so the state is known throughout);
    # parts are made only while running.
    readings, made, state = [], 0.0, "running"
    changes = dict(DEMO_HISTORY)
    for minute in range(8 * 60):
        state = changes.get(minute, state)
        for at_minute, entered in DEMO_HISTORY:  # a change inside this minute
            if minute < at_minute < minute + 1:
                state = entered
        readings += [
            {"machine_id": press_id, "tag": "cycle_count", "ts": at(minute), "value": made},
            {"machine_id": press_id, "tag": "good_count", "ts": at(minute), "value": float(int(made * 0.97))},
        ]
        if state == "running":
            made += DEMO_PARTS_PER_HOUR / 60
    await session.execute(insert(Reading), readings)
    session.add_all(
        DowntimeClassification(
            machine_id=press_id, start_at=at(minutes), reason_code=reason, classified_by_id=actor.user_id,
            classified_at=at(minutes + 30), note="demo",
        )
        for minutes, reason in DEMO_CLASSIFIED
    )  # fmt: skip
    await session.flush()
    return True


def cmd_seed(args: argparse.Namespace) -> int:
    """Create the demo plant: users (admin, planner, worker; passwords printed once), machines, work orders."""
    settings = ToolSettings.load()
    configure_logging(settings.log, settings.env)
    if settings.env is Environment.PRODUCTION and not args.force:
        raise CommandError("seed makes demo accounts; refusing in production without --force")
    result = asyncio.run(seed_demo(settings))
    if not result.users:
        print("demo users exist already; nothing created")
    for username, role, password in result.users:
        print(f"created {role:<8} username={username} password={password}")
    if result.machines:
        print(f"demo machines registered: {', '.join(result.machines)} (site {DEMO_SITE})")
    if result.work_orders:
        print(f"demo work orders planned: {', '.join(result.work_orders)} (stages assigned to 'worker')")
    if result.calendar:
        print("demo calendar: three shifts a day; yesterday's morning shift of press-1 has stops to explain (GET /oee)")
    return 0

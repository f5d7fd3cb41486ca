"""Commands to machines (planners and admins) and the tags they may write (admins)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query, Response, status

from api.commands import service
from api.commands.publisher import CommandPublisher, PublishFailed
from api.commands.schemas import CommandIn, CommandRead, WritableTagIn, WritableTagRead
from api.context import AppContext
from api.deps import AdminUser, Context, DetachedUser, Now, PlannerUser, Session
from api.pagination import COUNTED, MAX_ID, PAGED, Id, Pagination, counted
from core.commands import command_topic, encode_command
from core.contract import TAG_PATTERN
from core.db import transaction
from core.errors import DomainError, Forbidden, Unavailable
from core.models import Role
from core.security import Principal

router = APIRouter(prefix="/machines", tags=["commands"])
log = structlog.get_logger(__name__)
Tag = Annotated[str, Path(pattern=f"^{TAG_PATTERN}$")]


@router.get("/{machine_id}/writable-tags", response_model=list[WritableTagRead], responses=COUNTED)
async def get_writable_tags(
    machine_id: Id, session: Session, _user: PlannerUser, response: Response
) -> list[WritableTagRead]:
    """The tags commands may write on this machine, with their limits."""
    rows = await service.writable_tags(session, machine_id=machine_id)
    return counted(response, [WritableTagRead.of(row) for row in rows])


@router.put("/{machine_id}/writable-tags/{tag}", response_model=WritableTagRead)
async def put_writable_tag(
    machine_id: Id, tag: Tag, body: WritableTagIn, session: Session, _admin: AdminUser
) -> WritableTagRead:
    """Let commands write this tag within these limits. The gateway checks its own configuration again: a tag
    must be writable in both to be written."""
    row = await service.set_writable_tag(
        session,
        machine_id=machine_id,
        tag=tag,
        limits=body.limits(),
        job_field=body.job_field,
        description=body.description,
    )
    return WritableTagRead.of(row)


@router.delete("/{machine_id}/writable-tags/{tag}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_writable_tag(machine_id: Id, tag: Tag, session: Session, _admin: AdminUser) -> Response:
    """Commands may no longer write this tag."""
    await service.delete_writable_tag(session, machine_id=machine_id, tag=tag)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{machine_id}/commands",
    response_model=CommandRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"description": "Commands are off (COMMANDS_ENABLED), or the broker did not take the command"}},
)
async def send_command(machine_id: Id, body: CommandIn, context: Context, actor: DetachedUser, now: Now) -> CommandRead:
    """Send a setpoint, several, or a stage's job data to the machine's gateway: checked against the machine's
    writable tags, recorded, published (QoS 1, with its expiry), and answered 202 once the broker has it. The
    gateway writes, reads back, and its answer updates the command (`GET …/commands/{id}`)."""
    if actor.role not in (Role.ADMIN, Role.PLANNER):
        raise Forbidden("Sending commands to machines needs the role admin or planner")
    settings = context.settings.commands
    publisher = context.commands
    if publisher is None:
        raise Unavailable("Commands to machines are off on this server (COMMANDS_ENABLED=false)", code="commands_off")
    request = service.CommandRequest(
        writes=body.to_writes(),
        stage_id=body.stage_id,
        expires_in_s=body.expires_in_s or settings.command_expiry_s,
    )
    return CommandRead.of(
        await dispatch(context, publisher, actor=actor, machine_id=machine_id, request=request, now=now)
    )


async def dispatch(
    context: AppContext,
    publisher: CommandPublisher,
    *,
    actor: Principal,
    machine_id: int,
    request: service.CommandRequest,
    now: datetime,
) -> service.CommandView:
    """Check, record (committed), publish; the command as it stands once the broker has it. Domain errors when a
    check fails (nothing recorded); Unavailable when the broker does not take it (recorded as failed)."""
    # Committed before it is published: the gateway may answer within milliseconds, and its answer must find the row.
    async with transaction(context.session_factory) as session:
        command, machine = await service.create_command(
            session, actor=actor, machine_id=machine_id, request=request, now=now
        )
        payload = encode_command(service.payload_of(command, issued_by=actor.username))
        topic = command_topic(machine.site, machine.code)
        command_id, expires_at = command.id, command.expires_at
    log.info(
        "command_sent",
        command_id=str(command_id),
        machine=machine.code,
        writes=[(write["tag"], write["value"]) for write in command.writes],
        stage_id=request.stage_id,
        expires_in_s=request.expires_in_s,
    )
    try:
        await publisher.publish(topic, payload, command_id=command_id, expires_at=expires_at, clock=context.clock)
    except PublishFailed as error:
        log.warning("command_not_sent", command_id=str(command_id), error=str(error), maybe_sent=error.maybe_sent)
        async with transaction(context.session_factory) as session:
            await service.record_not_sent(
                session, command_id=command_id, reason=str(error), maybe_sent=error.maybe_sent, now=context.clock()
            )
        if error.maybe_sent:
            raise Unavailable(
                f"The broker did not confirm the command; it may still be executed before it expires (its answer or "
                f"its expiry will show on the command): {error}",
                code="command_unconfirmed",
                extra={"command_id": str(command_id)},
                retry_after_s=5,
            ) from None
        raise Unavailable(
            f"The command was not sent: {error}",
            code="broker_unavailable",
            extra={"command_id": str(command_id)},
            retry_after_s=5,
        ) from None
    async with transaction(context.session_factory) as session:
        return await service.get_command(session, machine_id=machine_id, command_id=command_id, now=context.clock())


async def send_job_data_on_start(context: AppContext, *, actor: Principal, machine_id: int, stage_id: int) -> None:
    """After a stage started (its transaction committed), its job data to its machine when the machine asks for it
    (`send_job_data_on_start`) and commands are on. Never fails the start: what goes wrong is on the command's row or
    in the log (`job_data_not_sent`)."""
    if context.commands is None:
        return
    request = service.CommandRequest(
        writes=None, stage_id=stage_id, expires_in_s=context.settings.commands.command_expiry_s
    )
    try:
        view = await dispatch(
            context, context.commands, actor=actor, machine_id=machine_id, request=request, now=context.clock()
        )
    except DomainError as error:
        log.warning("job_data_not_sent", stage_id=stage_id, machine_id=machine_id, code=error.code, reason=str(error))
        return
    except Exception:  # after the response: nobody else would see it
        log.exception("job_data_not_sent", stage_id=stage_id, machine_id=machine_id, code="internal_error")
        return
    log.info("job_data_sent", stage_id=stage_id, machine_id=machine_id, command_id=str(view.command.id))


@router.get("/{machine_id}/commands", response_model=list[CommandRead], responses=PAGED)
async def list_commands(
    machine_id: Id,
    session: Session,
    _user: PlannerUser,
    page: Pagination,
    now: Now,
    stage_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this stage's job data")] = None,
) -> list[CommandRead]:
    """The machine's commands, newest first: who asked for what, when, and what the gateway answered."""
    items, total = await service.list_commands(
        session, machine_id=machine_id, stage_id=stage_id, limit=page.limit, offset=page.offset, now=now
    )
    return page.respond([CommandRead.of(item) for item in items], total)


@router.get("/{machine_id}/commands/{command_id}", response_model=CommandRead)
async def get_command(
    machine_id: Id, command_id: uuid.UUID, session: Session, _user: PlannerUser, now: Now
) -> CommandRead:
    """One command and its outcome."""
    return CommandRead.of(await service.get_command(session, machine_id=machine_id, command_id=command_id, now=now))

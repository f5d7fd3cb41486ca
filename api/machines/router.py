"""The machine registry (admin writes, everyone reads), machine API keys, and HTTP ingestion."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.security import APIKeyHeader

from api.deps import (
    AdminUser,
    Context,
    CurrentUser,
    Now,
    Session,
    Settings,
    Tokens,
    current_principal,
    oauth2_scheme,
)
from api.machines import history, service, stream, tickets
from api.machines.history import Agg, Bucket
from api.machines.schemas import (
    AggList,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    IngestResultRead,
    LatestRead,
    MachineCreate,
    MachineRead,
    MachineUpdate,
    Moment,
    ReadingsRead,
    StreamTicketRead,
    TagList,
    TagRangeIn,
    TagRangeRead,
    TimelineRead,
    readings_csv,
    readings_json,
)
from api.pagination import COUNTED, PAGED, Id, Pagination, counted
from core.contract import CODE_PATTERN, TAG_PATTERN, TelemetryPayload
from core.errors import Forbidden, Unauthenticated
from core.models import Machine, Role

router = APIRouter(prefix="/machines", tags=["machines"])
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="A machine's own key")


@router.post("", response_model=MachineRead, status_code=status.HTTP_201_CREATED)
async def create_machine(body: MachineCreate, session: Session, admin: AdminUser) -> MachineRead:
    """Register a machine (machines also register themselves on first telemetry when that is allowed)."""
    machine = await service.create_machine(session, actor=admin, machine=service.NewMachine(**body.model_dump()))
    return MachineRead.model_validate(machine)


@router.get("", response_model=list[MachineRead], responses=PAGED)
async def list_machines(
    session: Session,
    actor: CurrentUser,
    page: Pagination,
    site: Annotated[str | None, Query(pattern=f"^{CODE_PATTERN}$")] = None,
    online: bool | None = None,
    archived: bool = False,
) -> list[MachineRead]:
    """List machines with online / offline, last seen, current state and since when, and the stage running on each
    (archived ones only with archived=true)."""
    machines, total = await service.list_machines(
        session, site=site, online=online, limit=page.limit, offset=page.offset, archived=archived
    )
    now = await service.machines_now(session, actor=actor, machine_ids=[machine.id for machine in machines])
    items = [_machine_read(machine, now[machine.id]) for machine in machines]
    return page.respond(items, total)


def _machine_read(machine: Machine, now: service.MachineNow) -> MachineRead:
    return MachineRead.model_validate(machine).model_copy(
        update={"state": now.state, "state_since": now.state_since, "running_stage_id": now.running_stage_id}
    )


@router.get("/{machine_id}", response_model=MachineRead)
async def get_machine(machine_id: Id, session: Session, actor: CurrentUser) -> MachineRead:
    """One machine, with its current state and the stage running on it."""
    machine = await service.get_machine(session, machine_id=machine_id)
    now = await service.machines_now(session, actor=actor, machine_ids=[machine.id])
    return _machine_read(machine, now[machine.id])


@router.patch("/{machine_id}", response_model=MachineRead)
async def update_machine(machine_id: Id, body: MachineUpdate, session: Session, admin: AdminUser) -> MachineRead:
    """Change a machine's name, type, location or ideal cycle time."""
    machine = await service.update_machine(
        session, actor=admin, machine_id=machine_id, changes=body.model_dump(exclude_unset=True)
    )
    return MachineRead.model_validate(machine)


@router.delete("/{machine_id}", response_model=MachineRead)
async def archive_machine(
    machine_id: Id,
    session: Session,
    admin: AdminUser,
    now: Now,
    readings: Annotated[Literal["keep", "delete"], Query(description="keep or delete its readings")] = "keep",
    confirm: Annotated[str | None, Query(description="the machine's code, required to delete readings")] = None,
) -> MachineRead:
    """Archive a machine (the ingestor stops storing it); readings are kept unless readings=delete&confirm=code."""
    machine = await service.archive_machine(
        session, actor=admin, machine_id=machine_id, delete_readings=readings == "delete", confirm=confirm, now=now
    )
    return MachineRead.model_validate(machine)


@router.post("/{machine_id}/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(
    machine_id: Id, session: Session, admin: AdminUser, now: Now, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    """Create (rotate) a machine's key for HTTP ingestion; the key is shown only in this response."""
    key, secret = await service.create_api_key(
        session, actor=admin, machine_id=machine_id, revoke_others=body.revoke_others if body else True, now=now
    )
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(key).model_dump(), "key": secret})


@router.get("/{machine_id}/api-keys", response_model=list[ApiKeyRead], responses=COUNTED)
async def list_api_keys(machine_id: Id, session: Session, _admin: AdminUser, response: Response) -> list[ApiKeyRead]:
    """A machine's keys (prefix and dates only)."""
    keys = await service.list_api_keys(session, machine_id=machine_id)
    return counted(response, [ApiKeyRead.model_validate(key) for key in keys])


@router.delete("/{machine_id}/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(machine_id: Id, key_id: Id, session: Session, _admin: AdminUser, now: Now) -> Response:
    """Revoke a key at once."""
    await service.revoke_api_key(session, machine_id=machine_id, key_id=key_id, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def ingest_caller(
    request: Request,
    machine_id: Id,
    session: Session,
    tokens: Tokens,
    api_key: Annotated[str | None, Depends(api_key_scheme)],
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> None:
    """A machine with its own key, or an admin or planner with a token."""
    if api_key:
        if await service.machine_for_key(session, key=api_key) != machine_id:
            raise Unauthenticated("The API key is unknown, revoked, or belongs to another machine")
        request.state.user_id = None
        return
    principal = await current_principal(request, session, tokens, token)
    if principal.role not in (Role.ADMIN, Role.PLANNER):
        raise Forbidden("Posting readings needs the machine's API key, or the role admin or planner")


_READINGS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TelemetryPayload.model_json_schema()}},
        "description": "The MQTT contract's telemetry payload (the single-sample shorthand is accepted too)",
    }
}


@router.post(
    "/{machine_id}/readings",
    response_model=IngestResultRead,
    openapi_extra=_READINGS_BODY,
    dependencies=[Depends(ingest_caller)],
)
async def post_readings(
    machine_id: Id,
    request: Request,
    session: Session,
    settings: Settings,
    now: Now,
) -> IngestResultRead:
    """Store readings sent over HTTP, through the same write path as MQTT (stored once, however often sent).

    Bodies over MAX_PAYLOAD_BYTES are refused with 413 while they arrive (`api.limits`).
    """
    body = await request.body()
    result = await service.ingest_readings(
        session, machine_id=machine_id, payload=body, received_at=now, window=settings.telemetry.window()
    )
    return IngestResultRead(
        readings_offered=result.readings_offered,
        readings_inserted=result.readings_inserted,
        duplicates=result.duplicates,
        states_inserted=result.states_inserted,
        conflicts=result.conflicts,
        not_good=result.not_good,
        out_of_range=result.out_of_range,
    )


@router.get("/{machine_id}/tag-ranges", response_model=list[TagRangeRead], responses=COUNTED)
async def get_tag_ranges(
    machine_id: Id, session: Session, _user: CurrentUser, response: Response
) -> list[TagRangeRead]:
    """The machine's tag ranges: values outside them are stored with quality bad."""
    rows = await service.tag_ranges(session, machine_id=machine_id)
    return counted(response, [TagRangeRead.model_validate(row) for row in rows])


@router.put("/{machine_id}/tag-ranges/{tag}", response_model=TagRangeRead)
async def put_tag_range(
    machine_id: Id,
    tag: Annotated[str, Path(pattern=f"^{TAG_PATTERN}$")],
    body: TagRangeIn,
    session: Session,
    _admin: AdminUser,
) -> TagRangeRead:
    """Set a tag's engineering range (plausibility): from the ingestor's next batch on, a good value outside
    [low, high] is stored with quality bad, kept, and counted."""
    row = await service.set_tag_range(session, machine_id=machine_id, tag=tag, low=body.low, high=body.high)
    return TagRangeRead.model_validate(row)


@router.delete("/{machine_id}/tag-ranges/{tag}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tag_range(
    machine_id: Id, tag: Annotated[str, Path(pattern=f"^{TAG_PATTERN}$")], session: Session, _admin: AdminUser
) -> Response:
    """Remove a tag's range."""
    await service.delete_tag_range(session, machine_id=machine_id, tag=tag)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{machine_id}/latest", response_model=LatestRead)
async def get_latest(machine_id: Id, session: Session, _user: CurrentUser) -> LatestRead:
    """The latest value of each tag (sorted by tag) and the current state with the time it began."""
    return LatestRead.model_validate(await history.latest(session, machine_id=machine_id))


CSV = "text/csv"
_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV (`tag,t,<aggs…>`; `tag,t,value` for raw) when the request accepts text/csv",
        "content": {CSV: {"schema": {"type": "string"}}},
    }
}


def wants_csv(accept: str | None) -> bool:
    """Whether the Accept header prefers text/csv to JSON (q-values honoured; `*/*` alone means JSON)."""
    weights: dict[str, float] = {}
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media.lower()] = max(weight, weights.get(media.lower(), 0.0))
    csv_weight = weights.get(CSV, 0.0)
    return csv_weight > 0 and csv_weight >= weights.get("application/json", 0.0)


@router.get(
    "/{machine_id}/readings",
    response_model=ReadingsRead,
    response_model_exclude_none=True,
    responses=_CSV_RESPONSE,
)
async def get_readings(
    machine_id: Id,
    session: Session,
    _user: CurrentUser,
    settings: Settings,
    tags: Annotated[
        TagList, Query(description="1 to 20 tag names, comma-separated (`tags=a,b`) or repeated (`tags=a&tags=b`)")
    ],
    start: Annotated[Moment, Query(alias="from", description="Range start, ISO 8601 (no offset: plant time)")],
    end: Annotated[Moment, Query(alias="to", description="Range end (excluded), ISO 8601 (no offset: plant time)")],
    bucket: Annotated[
        Bucket,
        Query(
            description="Bucket size; `auto`: the smallest with at most 1000 points per tag; "
            "`raw`: the readings themselves (at most 6 hours and 10000 points per tag)"
        ),
    ] = Bucket.AUTO,
    agg: Annotated[AggList, Query(description="Aggregates per bucket, comma-separated (ignored for raw)")] = (Agg.AVG,),
    quality: Annotated[
        Literal["all", "good"],
        Query(
            description="raw: `good` leaves uncertain and bad readings out; buckets always aggregate good values "
            "only and count the others in `not_good`"
        ),
    ] = "all",
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """A machine's readings over a range: aggregates per bucket (whole buckets, from midnight UTC; `1d`: the
    plant's local days, PLANT_TIMEZONE) or raw."""
    result = await history.readings(
        session,
        machine_id=machine_id,
        tags=tags,
        start=start,
        end=end,
        bucket=bucket,
        aggs=agg,
        zone=settings.tracking.plant_zone,
        good_only=quality == "good",
    )
    if wants_csv(accept):
        return Response(readings_csv(result), media_type=CSV, headers={"Vary": "Accept"})
    # Written once from the service's dicts; `ReadingsRead` above documents the shape without a pass per point.
    return Response(readings_json(result), media_type="application/json", headers={"Vary": "Accept"})


@router.get("/{machine_id}/states", response_model=TimelineRead)
async def get_states(
    machine_id: Id,
    session: Session,
    _user: CurrentUser,
    now: Now,
    start: Annotated[Moment, Query(alias="from", description="Window start, ISO 8601 (no offset: plant time)")],
    end: Annotated[Moment, Query(alias="to", description="Window end, ISO 8601 (at most 366 days after from)")],
) -> TimelineRead:
    """The state timeline over a window (the state in force at `from` first) and the seconds spent in each state."""
    timeline = await history.state_timeline(session, machine_id=machine_id, start=start, end=end, now=now)
    return TimelineRead.model_validate(timeline)


@router.post("/{machine_id}/stream/ticket", response_model=StreamTicketRead, status_code=status.HTTP_201_CREATED)
async def create_stream_ticket(
    machine_id: Id, session: Session, user: CurrentUser, settings: Settings, now: Now
) -> StreamTicketRead:
    """A single-use ticket that opens this machine's stream as `?ticket=` (for a browser's EventSource), valid for
    STREAM_TICKET_TTL_S seconds."""
    issued = await tickets.issue_ticket(
        session, actor=user, machine_id=machine_id, now=now, ttl_s=settings.api.stream_ticket_ttl_s
    )
    return StreamTicketRead(
        ticket=issued.ticket,
        expires_in=issued.expires_in,
        url=f"/machines/{machine_id}/stream?ticket={issued.ticket}",
    )


async def stream_caller(
    request: Request,
    session: Session,
    context: Context,
    tokens: Tokens,
    now: Now,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    ticket: Annotated[
        str | None,
        Query(
            max_length=128,
            description="A ticket from POST /machines/{machine_id}/stream/ticket, for clients that cannot set "
            "headers (a browser's EventSource); single use. The Authorization header wins when both are given",
        ),
    ] = None,
    access_token: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> stream.StreamAccess:
    """Any logged-in user, by the Authorization header or a stream ticket; a token in the URL is refused."""
    if access_token is not None:
        raise Unauthenticated(
            "A token in the URL is no longer accepted (proxies and browser history keep it): send the Authorization "
            "header, or open the stream with a ticket from POST /machines/{machine_id}/stream/ticket as ?ticket=",
            code="token_in_url",
        )
    if token or not ticket:
        principal = await current_principal(request, session, tokens, token)
        # The version the token was checked against (the row may be newer: the principal can come from the cache).
        return stream.StreamAccess(
            user_id=principal.user_id, token_version=principal.token_version, tokens=tokens, token=token
        )
    # Burnt and committed in a transaction of its own, before anything else can fail: a ticket never opens twice.
    async with context.session_factory() as own, own.begin():
        grant = await tickets.redeem_ticket(own, ticket=ticket, now=now)
    holder = await tickets.ticket_holder(session, grant=grant)
    request.state.user_id = holder.id
    structlog.contextvars.bind_contextvars(user_id=holder.id)
    return stream.StreamAccess(user_id=holder.id, token_version=grant.token_version)


def get_streams(context: Context) -> stream.StreamHub:
    """The live-stream hub of this app."""
    return context.streams


_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: `readings`, `state`, `status` (a snapshot of each first), "
        "and a `: ping` comment every STREAM_HEARTBEAT_S seconds. The schema is that of one event: its `event` "
        "name and its `data`, a JSON object (`ReadingsEvent`, `StateEvent`, `StatusEvent`)",
        "content": {stream.EVENT_STREAM: {"schema": stream.event_schema()}},
    },
    429: {
        "description": "The caller has STREAM_MAX_CLIENTS_PER_USER streams open already (`too_many_streams_for_user`)"
    },
    503: {"description": "This API process streams to STREAM_MAX_CLIENTS clients already (`too_many_streams`)"},
}


@router.get(
    "/{machine_id}/stream",
    status_code=status.HTTP_200_OK,
    response_class=stream.EventStreamResponse,
    responses=_STREAM_RESPONSES,
)
async def stream_machine(
    machine_id: Id,
    session: Session,
    settings: Settings,
    request: Request,
    access: Annotated[stream.StreamAccess, Depends(stream_caller)],
    streams: Annotated[stream.StreamHub, Depends(get_streams)],
    context: Context,
) -> stream.EventStreamResponse:
    """A machine's new readings, state changes and online status, live, as server-sent events (text/event-stream)."""
    lease = streams.acquire(user_id=access.user_id)
    try:
        initial, cursor = await stream.snapshot(session, machine_id=machine_id)
    except BaseException:
        lease.release()
        raise
    config = stream.StreamConfig(
        poll_interval_s=settings.api.stream_poll_interval_s,
        heartbeat_s=settings.api.stream_heartbeat_s,
        retry_ms=settings.api.stream_retry_ms,
    )
    events = stream.machine_events(
        context.session_factory,
        cursor=cursor,
        initial=initial,
        config=config,
        access=access,
        stopping=streams.stopping,
        on_drop=streams.dropped,
    )
    return stream.EventStreamResponse(
        events, lease=lease, send_timeout_s=settings.api.stream_send_timeout_s, on_drop=streams.dropped
    )

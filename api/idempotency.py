"""`Idempotency-Key`: a request retried on a flaky Wi-Fi acts once and gets the first answer again.

A client (the worker's tablet) sends a fresh key with each action (start, pause, resume, done, counts, an issue, a
classification) and the same key when it retries that action. For an authenticated POST, PUT, PATCH or DELETE with
the header, this pure ASGI middleware:

- replays the stored answer (status, body, content type; header `Idempotency-Replayed: true`) when the same user
  sent the same key with the same method, path, query and body before;
- refuses with 422 `idempotency_key_reused` when the key comes back with a different request;
- answers 409 `idempotency_key_in_progress` while the first request with the key is still running (a retry racing
  its original), so the action is never done twice at once;
- otherwise runs the request and stores its answer, unless it was a server error (5xx): a retry of that runs again.

Keys are per user (two users' keys never meet), at most 255 characters, kept for `IDEMPOTENCY_TTL` (24 h). A request
without the header, or without a valid bearer token (the route answers 401 as always), passes through untouched.
The answer is stored in its own transaction just after the request's has committed: if the process dies in between,
the key stays "in progress" for `STALE_AFTER` and is then free again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import send_problem
from core.models import IdempotencyRecord
from core.security import InvalidToken, TokenService

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
IDEMPOTENCY_TTL = timedelta(hours=24)
STALE_AFTER = timedelta(minutes=2)
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PENDING = 0  # status_code of a record whose request is still running


class IdempotencyMiddleware:
    """Pure ASGI: replay, refuse or run-and-store requests that carry an `Idempotency-Key`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        tokens: TokenService,
        clock: Callable[[], datetime],
    ):
        self.app = app
        self.sessions = sessions
        self.tokens = tokens
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one request, idempotently when it asks for it."""
        if scope["type"] != "http" or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        user_id = self._user(headers.get("authorization"))
        if key is None or user_id is None:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            await send_problem(
                send,
                status=422,
                code="invalid_idempotency_key",
                detail=f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
                request_id=request_id,
            )
            return
        body, receive = await _buffered(receive)
        request_hash = fingerprint(scope, body)
        existing = await self._claim(user_id, key, scope, request_hash)
        if existing is not None:
            await self._answer_existing(existing, request_hash, send, request_id)
            return
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await self._release(user_id, key)
            raise
        status = next((int(m["status"]) for m in captured if m["type"] == "http.response.start"), 500)
        if status >= 500:
            await self._release(user_id, key)
            return
        start = next(m for m in captured if m["type"] == "http.response.start")
        content_type = Headers(raw=start.get("headers", [])).get("content-type")
        stored = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
        await self._store(user_id, key, status, content_type, stored)

    def _user(self, authorization: str | None) -> int | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return self.tokens.verify(token).user_id
        except InvalidToken:
            return None

    async def _claim(self, user_id: int, key: str, scope: Scope, fingerprint: str) -> IdempotencyRecord | None:
        """Insert the pending record; the existing one when the key is taken (None: this request runs)."""
        now = self.clock()
        async with self.sessions()() as session, session.begin():
            await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - IDEMPOTENCY_TTL))
            existing = await session.scalar(
                select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            )
            if existing is not None and existing.status_code == PENDING and existing.created_at < now - STALE_AFTER:
                await session.delete(existing)  # its request died before storing an answer: the key is free again
                await session.flush()
                existing = None
            if existing is not None:
                return existing
        try:
            async with self.sessions()() as session, session.begin():
                session.add(
                    IdempotencyRecord(
                        user_id=user_id,
                        key=key,
                        method=scope["method"],
                        path=scope["path"][:500],
                        request_sha256=fingerprint,
                        status_code=PENDING,
                        content_type=None,
                        body=b"",
                        created_at=now,
                    )
                )
        except IntegrityError:  # a twin request claimed it between our read and our insert
            async with self.sessions()() as session:
                return await session.scalar(
                    select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
                )
        return None

    async def _answer_existing(
        self, record: IdempotencyRecord, fingerprint: str, send: Send, request_id: str | None
    ) -> None:
        if record.request_sha256 != fingerprint:
            await send_problem(
                send,
                status=422,
                code="idempotency_key_reused",
                detail="This Idempotency-Key was used for a different request: send a new key for a new action",
                request_id=request_id,
            )
            return
        if record.status_code == PENDING:
            await send_problem(
                send,
                status=409,
                code="idempotency_key_in_progress",
                detail="The first request with this Idempotency-Key is still running: retry in a moment",
                request_id=request_id,
                headers=[(b"retry-after", b"1")],
            )
            return
        headers = [(b"content-length", str(len(record.body)).encode()), (b"idempotency-replayed", b"true")]
        if record.content_type:
            headers.append((b"content-type", record.content_type.encode("latin-1")))
        await send({"type": "http.response.start", "status": record.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": record.body})

    async def _store(self, user_id: int, key: str, status: int, content_type: str | None, body: bytes) -> None:
        async with self.sessions()() as session, session.begin():
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
                .values(status_code=status, content_type=content_type, body=body)
            )

    async def _release(self, user_id: int, key: str) -> None:
        async with self.sessions()() as session, session.begin():
            await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            )


def fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests the same: method, path, query and body (each length-prefixed)."""
    digest = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole body (already bounded by the body-limit layer outside) and a receive that replays it."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay

"""Password hashing (argon2id; the original app's formats are verified by core.passwords and rehashed), access
tokens (JWT HS256 with expiry, issuer, audience and the user's token version) and the opaque secrets of refresh
tokens and stream tickets (random, stored as SHA-256)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import jwt
from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.models import Role
from core.passwords import LEGACY_SCHEMES, HashScheme, identify, verify_legacy

T = TypeVar("T")

TOKEN_ALGORITHM = "HS256"  # noqa: S105 -- an algorithm name, not a secret


@dataclass(frozen=True)
class Principal:
    """Who is acting: loaded from the database (remembered per token for AUTH_USER_CACHE_S by the API)."""

    user_id: int
    username: str
    role: Role
    # The user's token version the request's token was checked against (what a stream or ticket it opens keeps).
    token_version: int


_HASHING_THREADS: dict[int, ThreadPoolExecutor] = {}
_HASHING_THREADS_LOCK = threading.Lock()


def _hashing_threads(bound: int) -> ThreadPoolExecutor:
    """The process's hashing threads for this many hashes at once (made at the first hash, kept until exit)."""
    with _HASHING_THREADS_LOCK:
        executor = _HASHING_THREADS.get(bound)
        if executor is None:
            executor = _HASHING_THREADS[bound] = ThreadPoolExecutor(max_workers=bound, thread_name_prefix="argon2")
        return executor


class PasswordHasher:
    """argon2id hashing; verification never raises on a bad hash, it just fails."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int = 2, max_concurrent: int | None = None):
        self._hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        # `hash_async` / `verify_async` run on hashing threads, at most this many at once (None: asyncio's default
        # executor, unbounded). Hashing threads: waiting hashes must not hold the threads the event loop's other
        # blocking calls (name lookups of new database and broker connections) run on. Shared by the process's
        # hashers of one bound and never stopped: a process has one app, and threads that end while others run
        # (the tests build hundreds of apps) are best avoided. `close` drops this hasher's hashes still waiting.
        self._max_concurrent = max_concurrent
        self._waiting: set[Future[Any]] = set()
        # Verifications run so far (in worker threads): what throttling is meant to bound, exported as a metric.
        self.verifications = 0
        self._count_lock = threading.Lock()
        # Verifying against this keeps the time of a login for an unknown user close to a real one.
        self._dummy = self._hasher.hash("unknown-user-timing-equaliser")

    def hash(self, password: str) -> str:
        """A salted argon2id hash in PHC string form."""
        return self._hasher.hash(password)

    async def hash_async(self, password: str) -> str:
        """`hash` on a hashing thread, without blocking the event loop."""
        return await self._on_thread(self.hash, password)

    async def verify_async(self, password_hash: str | None, password: str) -> bool:
        """`verify` on a hashing thread, without blocking the event loop."""
        return await self._on_thread(self.verify, password_hash, password)

    async def _on_thread(self, call: Callable[..., T], *args: object) -> T:
        if self._max_concurrent is None:
            return await asyncio.to_thread(call, *args)
        future = _hashing_threads(self._max_concurrent).submit(call, *args)
        self._waiting.add(future)
        future.add_done_callback(self._waiting.discard)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Drop this hasher's hashes that have not started (their requests are ending with the app); the one running
        finishes."""
        for future in list(self._waiting):
            future.cancel()

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; an absent hash still costs one verification."""
        with self._count_lock:
            self.verifications += 1
        if password_hash is not None and identify(password_hash) in LEGACY_SCHEMES:
            return verify_legacy(password_hash, password)
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash is not argon2id (one imported from the original app) or was made with weaker
        parameters than the current ones."""
        if identify(password_hash) is not HashScheme.ARGON2:
            return True
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


class InvalidToken(Exception):
    """The token is missing a claim, expired, tampered with, or not ours."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid access token says: whose it is, and the user's token version when it was issued."""

    user_id: int
    version: int


@dataclass(frozen=True)
class IssuedToken:
    """A signed token and how long it lives."""

    token: str
    expires_in: int


class TokenService:
    """Issues and checks access tokens; only HS256 is accepted, so `alg: none` is refused."""

    def __init__(self, *, key: str, issuer: str, audience: str, ttl_s: int):
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s

    @property
    def ttl_s(self) -> int:
        """How long an access token lives."""
        return self._ttl_s

    def issue(self, *, user_id: int, role: Role, now: datetime, version: int = 0) -> IssuedToken:
        """A token for this user; the role is informative, the API reloads the user on every request and refuses
        the token once the user's token version has moved past `version`."""
        claims = {
            "sub": str(user_id),
            "ver": version,
            "role": role.value,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=self._ttl_s),
        }
        return IssuedToken(jwt.encode(claims, self._key, algorithm=TOKEN_ALGORITHM), self._ttl_s)

    def user_id(self, token: str) -> int:
        """The user id a valid token names; raises InvalidToken otherwise."""
        return self.verify(token).user_id

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; raises InvalidToken otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[TOKEN_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "ver"]},
                leeway=5,
            )
            version = claims["ver"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise InvalidToken("the token version is not an integer")
            return TokenClaims(user_id=int(claims["sub"]), version=version)
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise InvalidToken(str(error)) from error


def new_secret() -> str:
    """An opaque random credential (refresh token, stream ticket): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """What is stored of an opaque credential: its SHA-256 in hex (the secret itself never is)."""
    return hashlib.sha256(secret.encode()).hexdigest()

"""Password hashing (argon2id) and access tokens (JWT HS256 with expiry, issuer and audience)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.models import Role

TOKEN_ALGORITHM = "HS256"  # noqa: S105 -- an algorithm name, not a secret


@dataclass(frozen=True)
class Principal:
    """Who is acting: loaded from the database on every request."""

    user_id: int
    username: str
    role: Role


class PasswordHasher:
    """argon2id hashing; verification never raises on a bad hash, it just fails."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int = 2):
        self._hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        # Verifying against this keeps the time of a login for an unknown user close to a real one.
        self._dummy = self._hasher.hash("unknown-user-timing-equaliser")

    def hash(self, password: str) -> str:
        """A salted argon2id hash in PHC string form."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; an absent hash still costs one verification."""
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with weaker parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)


class InvalidToken(Exception):
    """The token is missing a claim, expired, tampered with, or not ours."""


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

    def issue(self, *, user_id: int, role: Role, now: datetime) -> IssuedToken:
        """A token for this user; the role is informative, the API reloads the user on every request."""
        claims = {
            "sub": str(user_id),
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
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[TOKEN_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
            return int(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise InvalidToken(str(error)) from error

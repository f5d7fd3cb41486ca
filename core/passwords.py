"""Password hashes Shopfloor accepts besides its own argon2id: the formats of the original app, kept on import.

The original app hashed with bcrypt (`$2b$`, `$2a$`, `$2y$`) or passlib's `pbkdf2_sha256` (`$pbkdf2-sha256$…`) and
`sha256_crypt` (`$5$…`). Those hashes are verified as they are (bcrypt by the `bcrypt` package, the passlib formats
by passlib, maintained as `libpass`) and replaced by argon2id at the first successful login (core.security).
"""

from __future__ import annotations

import re
from enum import StrEnum

import bcrypt
from passlib.hash import pbkdf2_sha256, sha256_crypt

# bcrypt only ever used the first 72 bytes; the bcrypt package refuses longer input instead of cutting it.
BCRYPT_MAX_BYTES = 72

_BCRYPT = re.compile(r"^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$")
_PBKDF2_SHA256 = re.compile(r"^\$pbkdf2-sha256\$\d+\$[./A-Za-z0-9]*\$[./A-Za-z0-9]{43}$")
_SHA256_CRYPT = re.compile(r"^\$5\$(rounds=\d+\$)?[./A-Za-z0-9]{0,16}\$[./A-Za-z0-9]{43}$")


class HashScheme(StrEnum):
    """The password hash formats Shopfloor can verify."""

    ARGON2 = "argon2"
    BCRYPT = "bcrypt"
    PBKDF2_SHA256 = "pbkdf2_sha256"
    SHA256_CRYPT = "sha256_crypt"


LEGACY_SCHEMES = frozenset({HashScheme.BCRYPT, HashScheme.PBKDF2_SHA256, HashScheme.SHA256_CRYPT})


def identify(password_hash: str | None) -> HashScheme | None:
    """The format of a stored hash, by its shape; None when Shopfloor cannot verify it."""
    if not password_hash:
        return None
    if password_hash.startswith("$argon2"):
        return HashScheme.ARGON2
    if _BCRYPT.match(password_hash):
        return HashScheme.BCRYPT
    if _PBKDF2_SHA256.match(password_hash):
        return HashScheme.PBKDF2_SHA256
    if _SHA256_CRYPT.match(password_hash):
        return HashScheme.SHA256_CRYPT
    return None


def verify_legacy(password_hash: str, password: str) -> bool:
    """True when `password` matches a hash of the original app; False for a mismatch or any other format."""
    scheme = identify(password_hash)
    try:
        if scheme is HashScheme.BCRYPT:
            return bcrypt.checkpw(password.encode()[:BCRYPT_MAX_BYTES], password_hash.encode("ascii"))
        if scheme is HashScheme.PBKDF2_SHA256:
            return bool(pbkdf2_sha256.verify(password, password_hash))
        if scheme is HashScheme.SHA256_CRYPT:
            return bool(sha256_crypt.verify(password, password_hash))
    # passlib's errors for malformed hashes and oversized passwords are ValueErrors.
    except (ValueError, TypeError):
        return False
    return False

"""The original app's password hashes: told apart by shape, verified, and marked for an argon2id rehash."""

from __future__ import annotations

import pytest

from core.passwords import HashScheme, identify, verify_legacy
from core.security import PasswordHasher
from tests.support.legacy_app import SHA256_CRYPT_PASSWORD, SHA256_CRYPT_VECTORS, bcrypt_hash, pbkdf2_sha256_hash

PASSWORD = "Gizli-Parola-ğüşiöç"
HASHER = PasswordHasher(time_cost=1, memory_kib=1024)


@pytest.mark.parametrize(
    ("password_hash", "scheme"),
    [
        (bcrypt_hash(PASSWORD, "2b"), HashScheme.BCRYPT),
        (bcrypt_hash(PASSWORD, "2a"), HashScheme.BCRYPT),
        (bcrypt_hash(PASSWORD, "2y"), HashScheme.BCRYPT),
        (pbkdf2_sha256_hash(PASSWORD), HashScheme.PBKDF2_SHA256),
        (SHA256_CRYPT_VECTORS[0], HashScheme.SHA256_CRYPT),
        (SHA256_CRYPT_VECTORS[1], HashScheme.SHA256_CRYPT),
        (HASHER.hash(PASSWORD), HashScheme.ARGON2),
        ("md5$9f86d081884c7d65", None),
        ("$2x$12$" + "a" * 53, None),
        ("$1$saltsalt$abcdefghijklmnopqrstuv", None),
        ("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8", None),
        ("", None),
        (None, None),
    ],
    # Salted hashes differ on every run: ids must not (pytest-xdist workers compare what they collected).
    ids=[
        "bcrypt-2b",
        "bcrypt-2a",
        "bcrypt-2y",
        "pbkdf2-sha256",
        "sha256-crypt-1",
        "sha256-crypt-2",
        "argon2",
        "django-like",
        "bcrypt-2x",
        "md5-crypt",
        "bare-sha256",
        "empty",
        "none",
    ],
)
def test_hash_formats_are_identified_by_their_shape(password_hash: str | None, scheme: HashScheme | None) -> None:
    assert identify(password_hash) is scheme


@pytest.mark.parametrize(
    ("password_hash", "password"),
    [
        (bcrypt_hash(PASSWORD, "2b"), PASSWORD),
        (bcrypt_hash(PASSWORD, "2a"), PASSWORD),
        (bcrypt_hash(PASSWORD, "2y"), PASSWORD),
        (pbkdf2_sha256_hash(PASSWORD), PASSWORD),
        (pbkdf2_sha256_hash(PASSWORD, salt=b"\x00\xff", rounds=1000), PASSWORD),
        *((vector, SHA256_CRYPT_PASSWORD) for vector in SHA256_CRYPT_VECTORS),
    ],
    ids=lambda value: "" if not isinstance(value, str) or not value.startswith("$") else value.split("$")[1],
)
def test_legacy_hashes_verify_the_right_password_only(password_hash: str, password: str) -> None:
    assert verify_legacy(password_hash, password)
    assert not verify_legacy(password_hash, password + "x")
    assert HASHER.verify(password_hash, password)
    assert not HASHER.verify(password_hash, "wrong")
    assert HASHER.needs_rehash(password_hash)


def test_bcrypt_compares_only_the_first_72_bytes_as_the_original_did() -> None:
    long_password = "ş" * 40  # 80 bytes in UTF-8
    password_hash = bcrypt_hash(long_password[:36])  # the first 72 bytes
    assert verify_legacy(password_hash, long_password)


@pytest.mark.parametrize("password_hash", ["md5$9f86d081884c7d65", "$2b$12$tooshort", "$pbkdf2-sha256$x$y$z", ""])
def test_unknown_or_broken_hashes_verify_nothing(password_hash: str) -> None:
    assert not verify_legacy(password_hash, PASSWORD)
    assert not HASHER.verify(password_hash, PASSWORD)


def test_a_current_argon2_hash_needs_no_rehash() -> None:
    assert not HASHER.needs_rehash(HASHER.hash(PASSWORD))

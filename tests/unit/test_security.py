"""Password hashing and token handling."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from core.models import Role
from core.security import InvalidToken, PasswordHasher, TokenService

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
KEY = "k" * 48


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=1024)


def tokens(**overrides: object) -> TokenService:
    options: dict[str, object] = {
        "key": KEY,
        "issuer": "shopfloor",
        "audience": "shopfloor-api",
        "ttl_s": 3600,
    }
    options.update(overrides)
    return TokenService(**options)  # type: ignore[arg-type]  # test-only keyword overrides


def test_hash_is_argon2id_salted_and_verifies(hasher: PasswordHasher) -> None:
    first, second = hasher.hash("s3cret-pass"), hasher.hash("s3cret-pass")
    assert first.startswith("$argon2id$")
    assert first != second
    assert hasher.verify(first, "s3cret-pass")
    assert not hasher.verify(first, "s3cret-pasS")


def test_verify_never_raises_on_missing_or_broken_hash(hasher: PasswordHasher) -> None:
    assert not hasher.verify(None, "anything")
    assert not hasher.verify("not-a-hash", "anything")


def test_weaker_hash_needs_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_kib=1024).hash("pw-123456")
    assert PasswordHasher(time_cost=2, memory_kib=2048).needs_rehash(weak)
    assert not PasswordHasher(time_cost=1, memory_kib=1024).needs_rehash(weak)


def test_token_round_trip() -> None:
    issued = tokens().issue(user_id=42, role=Role.PLANNER, now=datetime.now(UTC))
    assert issued.expires_in == 3600
    assert tokens().user_id(issued.token) == 42


def test_expired_token_is_refused() -> None:
    issued = tokens(ttl_s=60).issue(user_id=1, role=Role.ADMIN, now=datetime.now(UTC) - timedelta(minutes=5))
    with pytest.raises(InvalidToken, match="expired"):
        tokens().user_id(issued.token)


@pytest.mark.parametrize(
    ("field", "value"), [("audience", "another-api"), ("issuer", "someone-else"), ("key", "x" * 48)]
)
def test_token_from_another_audience_issuer_or_key_is_refused(field: str, value: str) -> None:
    issued = tokens(**{field: value}).issue(user_id=1, role=Role.ADMIN, now=datetime.now(UTC))
    with pytest.raises(InvalidToken):
        tokens().user_id(issued.token)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_token_is_refused() -> None:
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "1", "iss": "shopfloor", "aud": "shopfloor-api", "iat": now, "exp": now + 600}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(InvalidToken):
        tokens().user_id(unsigned)


def test_tampered_token_is_refused() -> None:
    issued = tokens().issue(user_id=7, role=Role.WORKER, now=datetime.now(UTC))
    header, payload, signature = issued.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "1"
    with pytest.raises(InvalidToken):
        tokens().user_id(f"{header}.{_b64(claims)}.{signature}")


def test_token_without_expiry_is_refused() -> None:
    token = jwt.encode({"sub": "1", "iss": "shopfloor", "aud": "shopfloor-api", "iat": NOW}, KEY, algorithm="HS256")
    with pytest.raises(InvalidToken, match="exp"):
        tokens().user_id(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens().user_id(garbage)


class OverlapCounter:
    """Stands in for argon2 (unit test): records how many calls run at once; with `all_at_once`, each call waits
    until that many are running together (so an unbounded hasher is proven to let them)."""

    def __init__(self, all_at_once: int | None = None) -> None:
        self.running = self.most = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        self.together = threading.Barrier(all_at_once, timeout=10) if all_at_once else None

    def _one(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        if self.together is not None:
            self.together.wait()
        else:
            time.sleep(0.01)
        with self.lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._one()
        return "$argon2id$fake"

    def verify(self, password_hash: str, password: str) -> bool:
        self._one()
        return True


async def hammer(hasher: PasswordHasher, counter: OverlapCounter, calls: int) -> None:
    """`calls` hashes and verifications asked for at once from the event loop."""
    hasher._hasher = counter  # type: ignore[assignment]
    await asyncio.gather(
        *(
            hasher.hash_async("secret") if n % 2 else hasher.verify_async("$argon2id$stored", "secret")
            for n in range(calls)
        )
    )


@pytest.mark.parametrize("bound", [1, 3])
async def test_hashes_and_verifications_run_at_most_the_bound_at_once_on_their_own_threads(bound: int) -> None:
    counter = OverlapCounter()
    await hammer(PasswordHasher(time_cost=1, memory_kib=1024, max_concurrent=bound), counter, calls=12)
    assert 1 <= counter.most <= bound
    assert counter.running == 0
    # Not the loop's default executor: waiting hashes never hold the threads other blocking calls need.
    assert counter.threads
    assert all(name.startswith("argon2") for name in counter.threads)


async def test_without_a_bound_they_run_together() -> None:
    counter = OverlapCounter(all_at_once=4)
    await hammer(PasswordHasher(time_cost=1, memory_kib=1024), counter, calls=4)
    assert counter.most == 4


async def test_close_drops_the_hashes_still_waiting_and_the_hasher_works_on() -> None:
    """`close` (the app's shutdown) drops the hashes that have not started; the one running finishes."""
    hasher = PasswordHasher(time_cost=1, memory_kib=1024, max_concurrent=1)
    counter = OverlapCounter()
    started = threading.Event()
    release = threading.Event()

    def first(*_: object) -> str:
        started.set()
        release.wait(10)
        return "$argon2id$first"

    counter.hash = first  # type: ignore[method-assign,assignment]
    hasher._hasher = counter  # type: ignore[assignment]
    running = asyncio.ensure_future(hasher.hash_async("one"))
    assert await asyncio.to_thread(started.wait, 10)
    waiting = asyncio.ensure_future(hasher.hash_async("two"))
    await asyncio.sleep(0)
    hasher.close()
    hasher.close()  # twice is harmless
    release.set()
    assert await running == "$argon2id$first"
    with pytest.raises(asyncio.CancelledError):
        await waiting
    stored = PasswordHasher(time_cost=1, memory_kib=1024).hash("secret")
    hasher._hasher = PasswordHasher(time_cost=1, memory_kib=1024)._hasher
    assert await hasher.verify_async(stored, "secret")
    assert not await hasher.verify_async(stored, "wrong")

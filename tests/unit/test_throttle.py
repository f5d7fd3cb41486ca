"""Login throttling: a sliding window per username and per client address."""

from __future__ import annotations

import pytest

from api.auth.throttle import LoginThrottle, ThrottleLimits
from core.errors import RateLimited


def throttle() -> LoginThrottle:
    return LoginThrottle(ThrottleLimits(per_user=3, per_address=5, window_s=60))


def fail(t: LoginThrottle, username: str, address: str, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        t.record_failure(username=username, address=address, now=now)


def test_under_the_limit_passes() -> None:
    t = throttle()
    fail(t, "ali", "10.0.0.1", 2)
    t.check(username="ali", address="10.0.0.1", now=1.0)


def test_user_limit_blocks_with_retry_after_until_the_oldest_failure_expires() -> None:
    t = throttle()
    t.record_failure(username="ali", address="10.0.0.1", now=0.0)
    t.record_failure(username="ali", address="10.0.0.2", now=10.0)
    t.record_failure(username="ali", address="10.0.0.3", now=20.0)
    with pytest.raises(RateLimited) as caught:
        t.check(username="ali", address="10.0.0.9", now=30.0)
    assert caught.value.retry_after_s == 30
    t.check(username="ali", address="10.0.0.9", now=60.5)


def test_address_limit_blocks_other_usernames_from_that_address() -> None:
    t = throttle()
    for index in range(5):
        t.record_failure(username=f"user{index}", address="10.0.0.1", now=0.0)
    with pytest.raises(RateLimited):
        t.check(username="fresh", address="10.0.0.1", now=1.0)
    t.check(username="fresh", address="10.0.0.2", now=1.0)


def test_success_clears_the_username_but_not_the_address() -> None:
    t = throttle()
    fail(t, "ali", "10.0.0.1", 3)
    t.record_success(username="ali")
    t.check(username="ali", address="10.0.0.1", now=1.0)
    fail(t, "veli", "10.0.0.1", 2)
    with pytest.raises(RateLimited):
        t.check(username="ali", address="10.0.0.1", now=1.0)


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.auth.throttle.MAX_TRACKED_KEYS", 10)
    t = throttle()
    for index in range(50):
        t.record_failure(username=f"spray{index}", address=None, now=0.0)
    assert t.tracked_keys == 10

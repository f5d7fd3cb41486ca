"""`PrincipalCache`: expiry, its bound, and forgetting a user in every cache of the process."""

from __future__ import annotations

from api.auth.cache import PrincipalCache, forget_user_everywhere
from core.models import Role
from core.security import Principal


def principal(user_id: int) -> Principal:
    return Principal(user_id=user_id, username=f"user-{user_id}", role=Role.WORKER, token_version=0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lasts_its_period_and_no_longer() -> None:
    clock = Clock()
    cache = PrincipalCache(5.0, clock=clock)
    cache.put("a", principal(1), generation=cache.generation)
    clock.now = 4.9
    assert cache.get("a") == principal(1)
    clock.now = 5.0
    assert cache.get("a") is None
    assert len(cache) == 0


def test_zero_remembers_nothing() -> None:
    cache = PrincipalCache(0)
    cache.put("a", principal(1), generation=cache.generation)
    assert cache.get("a") is None


def test_the_oldest_entry_goes_when_full_and_a_renewed_one_counts_as_new() -> None:
    cache = PrincipalCache(60, max_entries=2)
    cache.put("a", principal(1), generation=cache.generation)
    cache.put("b", principal(2), generation=cache.generation)
    cache.put("a", principal(1), generation=cache.generation)  # renewed: now the newest
    cache.put("c", principal(3), generation=cache.generation)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (principal(1), None, principal(3))
    assert len(cache) == 2


def test_forgetting_a_user_reaches_every_cache_of_the_process_and_only_that_user() -> None:
    first, second = PrincipalCache(60), PrincipalCache(60)
    for cache in (first, second):
        cache.put("token-1", principal(1), generation=cache.generation)
        cache.put("token-1b", principal(1), generation=cache.generation)
        cache.put("token-2", principal(2), generation=cache.generation)
    forget_user_everywhere(1)
    for cache in (first, second):
        assert (cache.get("token-1"), cache.get("token-1b"), cache.get("token-2")) == (None, None, principal(2))


def test_a_read_from_before_a_forget_is_not_kept() -> None:
    """A request read the user, then a revocation forgot them, then the request tries to remember what it read."""
    cache = PrincipalCache(60)
    read_at = cache.generation
    forget_user_everywhere(7)
    cache.put("stale", principal(1), generation=read_at)
    assert cache.get("stale") is None
    cache.put("fresh", principal(1), generation=cache.generation)
    assert cache.get("fresh") == principal(1)

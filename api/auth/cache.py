"""The acting user of a bearer token, remembered for a few seconds (`AUTH_USER_CACHE_S`) so that a client's burst of
requests loads the user row once.

What it may cost: a change that ends a user's tokens (deactivation, password change or reset, role change: each bumps
the token version) takes effect at once in the process that made it — `revoke_everything` forgets the user in every
cache of the process, and again once the change is committed — and within `AUTH_USER_CACHE_S` in the others (other
API workers or hosts, or a change written to the database by other means). 0 turns the cache off. Only users that
passed every check are remembered; refusals are never cached.

A request that read the user while a revocation was on its way (the old row, before the commit) must not put it
back: `generation` counts the forgets, and `put` keeps nothing when one happened since the caller read it.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from core.security import Principal

# Entries kept at most (oldest dropped first): a few per signed-in client is plenty.
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    until: float


class PrincipalCache:
    """Bearer token → the principal it was last checked to be, until a deadline (monotonic)."""

    def __init__(self, ttl_s: float, *, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.generation = 0
        _CACHES.add(self)

    def get(self, token: str) -> Principal | None:
        """The principal remembered for this token, or None (never seen, expired or forgotten)."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry.until <= self.clock():
            del self._entries[token]
            return None
        return entry.principal

    def put(self, token: str, principal: Principal, *, generation: int) -> None:
        """Remember a principal that passed every check, read when `generation` was the cache's: nothing is kept if
        a user was forgotten since (the oldest entry goes when the cache is full)."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        self._entries.pop(token, None)
        self._entries[token] = _Entry(principal, self.clock() + self.ttl_s)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_user(self, user_id: int) -> None:
        """Forget every token of this user (their token version is being bumped)."""
        self.generation += 1
        for token in [token for token, entry in self._entries.items() if entry.principal.user_id == user_id]:
            del self._entries[token]

    def __len__(self) -> int:
        return len(self._entries)


_CACHES: weakref.WeakSet[PrincipalCache] = weakref.WeakSet()


def forget_user_everywhere(user_id: int) -> None:
    """Forget the user in every cache of this process (each app built in it has one)."""
    for cache in list(_CACHES):
        cache.forget_user(user_id)

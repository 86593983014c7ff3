"""A small in-process TTL cache for hot entities, in front of the online store.

Every entry lives ttl_s, so insertion order is expiry order: the oldest entry is both the
next to expire and the one evicted when the cache is full (no LRU bookkeeping on reads).
The clock is injected (monotonic seconds), so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (expires_at_s, value)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        now_s = self._clock()
        self._entries.pop(key, None)  # re-inserted at the end: its new expiry is the latest
        self._entries[key] = (now_s + self._ttl_s, value)
        self._evict(now_s)

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self, now_s: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if len(entries) <= self._max_entries and entries[oldest][0] > now_s:
                return
            del entries[oldest]

"""The TTL cache, on an injected clock: no sleeps (the store's breaker is tested in
tests/runtimes/test_circuit_breaker.py)."""

from __future__ import annotations

import pytest

from switchyard.server.features.cache import TtlCache


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_entries_live_exactly_ttl_s() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(ttl_s=5.0, max_entries=10, clock=clock)
    cache.put("a", 1)
    clock.now_s += 4.999
    assert cache.get("a") == 1
    clock.now_s += 0.001
    assert cache.get("a") is None and len(cache) == 0


def test_a_full_cache_evicts_the_oldest_and_expired_entries_first() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(ttl_s=10.0, max_entries=3, clock=clock)
    for key in "abc":
        cache.put(key, ord(key))
        clock.now_s += 1
    cache.put("a", 0)  # refreshed: now the newest
    cache.put("d", 4)
    assert [cache.get(k) for k in "abcd"] == [0, None, ord("c"), 4]
    clock.now_s += 8.5  # c (put at +2 s) has expired, a and d have not
    cache.put("e", 5)
    assert len(cache) == 3 and cache.get("c") is None


def test_cache_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TtlCache(ttl_s=0, max_entries=1)

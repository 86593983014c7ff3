"""The TTL cache and the circuit breaker, on an injected clock: no sleeps."""

from __future__ import annotations

import pytest

from switchyard.server.features.breaker import Breaker
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


def test_breaker_opens_after_failures_in_a_row_and_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = Breaker(after_failures=2, open_s=1.0, clock=clock)
    breaker.failed()
    breaker.succeeded()  # a success resets the count
    breaker.failed()
    assert breaker.allows() and not breaker.is_open()
    breaker.failed()
    assert breaker.is_open() and not breaker.allows()
    clock.now_s += 1.0
    assert breaker.allows()  # the probe
    assert not breaker.allows()  # the others wait for it
    breaker.failed()  # the probe failed: open for another open_s
    clock.now_s += 0.999
    assert not breaker.allows()
    clock.now_s += 0.001
    assert breaker.allows()
    breaker.succeeded()
    assert breaker.allows() and breaker.allows() and breaker.failures == 0


def test_a_probe_that_never_reports_holds_the_others_for_open_s_only() -> None:
    clock = FakeClock()
    breaker = Breaker(after_failures=1, open_s=2.0, clock=clock)
    breaker.failed()
    clock.now_s += 2.0
    assert breaker.allows()  # this probe is cancelled and never reports
    clock.now_s += 2.0
    assert breaker.allows()


def test_a_breaker_of_zero_failures_never_opens() -> None:
    breaker = Breaker(after_failures=0, open_s=1.0, clock=FakeClock())
    for _ in range(100):
        breaker.failed()
    assert breaker.allows()

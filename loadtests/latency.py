"""Latency figures: percentiles of raw samples, and HdrHistogram in microseconds, mergeable
across client processes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: anything slower is clamped, never dropped
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}


def percentile_s(samples_s: Sequence[float], q: float) -> float:
    """The sample at rank floor(q * n) of the sorted samples (q from 0 to 1; the largest for
    q = 1); NaN when there are none, so an empty run never reads as fast."""
    if not samples_s:
        return float("nan")
    ordered = sorted(samples_s)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def percentiles_us(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 (the median, the mean of the middle two for an even count), p90 and p99 in us."""
    return {
        "p50": statistics.median(samples_s) * 1e6,
        "p90": percentile_s(samples_s, 0.90) * 1e6,
        "p99": percentile_s(samples_s, 0.99) * 1e6,
    }


class LatencyHistogram:
    """Records seconds, reports milliseconds; `encode()` travels between processes."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_s(self, seconds: float) -> None:
        self._hist.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6))))

    @property
    def count(self) -> int:
        count: int = self._hist.get_total_count()  # hdrh ships no types
        return count

    def percentile_ms(self, percent: float) -> float:
        """NaN when nothing was recorded, so an empty run never reads as fast."""
        if not self.count:
            return float("nan")
        value_us: int = self._hist.get_value_at_percentile(percent)
        return value_us / 1e3

    def encode(self) -> bytes:
        encoded: bytes = self._hist.encode()
        return encoded

    def add_encoded(self, encoded: bytes) -> None:
        self._hist.decode_and_add(encoded)

    def summary(self) -> dict[str, float]:
        """count, p50/p90/p99/p99.9, mean and max, in milliseconds."""
        if not self.count:
            nan = float("nan")
            return {"count": 0, **dict.fromkeys(PERCENTILES, nan), "mean_ms": nan, "max_ms": nan}
        return {
            "count": self.count,
            **{name: self.percentile_ms(q) for name, q in PERCENTILES.items()},
            "mean_ms": self._hist.get_mean_value() / 1e3,
            "max_ms": self._hist.get_max_value() / 1e3,
        }


def time_calls(call: Callable[[], object], requests: int, warmup: int) -> list[float]:
    """Seconds each of `requests` calls took, one after another, after `warmup` untimed."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


async def time_async_calls(
    call: Callable[[], Awaitable[object]], requests: int, warmup: int
) -> list[float]:
    """time_calls for a coroutine function."""
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples

"""The mergeable latency histogram rollouts are judged on."""

from __future__ import annotations

import random

import numpy as np
import pytest

from switchyard.router.latency_histogram import LatencyHistogram


def test_counts_errors_apart_from_latencies() -> None:
    histogram = LatencyHistogram()
    assert histogram.error_rate is None and histogram.p95_s is None and histogram.empty
    for ms in range(1, 101):
        histogram.record(ms / 1000, ok=True)
    histogram.record(5.0, ok=False)  # failures count as errors, not as latency
    assert histogram.requests == 101 and histogram.errors == 1
    assert histogram.error_rate == pytest.approx(1 / 101)
    # Within one bucket's width (2^(1/8), about 9%) of the exact percentile.
    assert histogram.p95_s == pytest.approx(0.095, rel=0.09)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_stay_within_a_bucket_of_exact_on_skewed_latencies(seed: int) -> None:
    rng = np.random.default_rng(seed)
    latencies_s = rng.lognormal(mean=np.log(0.004), sigma=0.8, size=5000)
    histogram = LatencyHistogram()
    for value in latencies_s:
        histogram.record(float(value), ok=True)
    for percent in (50, 95, 99):
        exact = float(np.percentile(latencies_s, percent))
        assert histogram.percentile_s(percent) == pytest.approx(exact, rel=0.09)


def test_merged_windows_equal_one_window_of_all_traffic() -> None:
    rng = random.Random(7)
    samples = [(rng.expovariate(200), rng.random() > 0.02) for _ in range(3000)]
    whole = LatencyHistogram()
    parts = [LatencyHistogram() for _ in range(3)]
    for i, (latency_s, ok) in enumerate(samples):
        whole.record(latency_s, ok)
        parts[i % 3].record(latency_s, ok)
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(part)
    assert merged.counts() == whole.counts()
    # The store's form: counts summed field by field give the same histogram back.
    summed: dict[str, int] = {}
    for part in parts:
        for field, count in part.counts().items():
            summed[field] = summed.get(field, 0) + count
    rebuilt = LatencyHistogram.from_counts(summed)
    assert rebuilt.counts() == whole.counts()
    assert rebuilt.p95_s == whole.p95_s and rebuilt.error_rate == whole.error_rate


def test_extremes_land_in_the_first_and_last_buckets() -> None:
    histogram = LatencyHistogram()
    histogram.record(0.0, ok=True)
    histogram.record(3600.0, ok=True)  # an hour: past the last bound
    assert histogram.percentile_s(0) == 0.0
    assert 100 < (histogram.percentile_s(100) or 0) < 120
    assert LatencyHistogram.from_counts({"requests": 2, "b9999": 1, "x": 3}).requests == 2

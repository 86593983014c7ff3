"""Request outcomes and latencies of one variant over one window, as a mergeable histogram.

Every replica counts its own traffic in the same fixed, log-spaced buckets, so the windows of
all replicas add up bucket by bucket into one (`merge`, or `counts` summed in a shared
store) and a rollout is judged once on everybody's traffic. Bucket bounds grow by 2^(1/8)
(about 9%) from 50 us to about 114 s; a percentile is interpolated inside its bucket.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

_FIRST_BOUND_S = 50e-6
_GROWTH = 2 ** (1 / 8)
_BUCKETS = 170  # the last bound is about 114 s; anything slower counts in the last bucket
_LOG_GROWTH = math.log(_GROWTH)
REQUESTS_FIELD = "requests"
ERRORS_FIELD = "errors"


def _upper_bound_s(bucket: int) -> float:
    return float(_FIRST_BOUND_S * _GROWTH**bucket)


class LatencyHistogram:
    """Exact request and error counts; bucketed latencies of successful requests.

    Percentiles use successes only: failures are often fast (a refused input) or slow (a
    timeout) for reasons the error rate already judges.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self._buckets = [0] * _BUCKETS

    def record(self, latency_s: float, ok: bool) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
            return
        if latency_s <= _FIRST_BOUND_S:
            bucket = 0
        else:
            bucket = min(
                math.ceil(math.log(latency_s / _FIRST_BOUND_S) / _LOG_GROWTH), _BUCKETS - 1
            )
        self._buckets[bucket] += 1

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s counts to this one's."""
        self.requests += other.requests
        self.errors += other.errors
        for bucket, count in enumerate(other._buckets):
            self._buckets[bucket] += count

    @property
    def empty(self) -> bool:
        return self.requests == 0

    def counts(self) -> dict[str, int]:
        """The non-zero counts by field name (`requests`, `errors`, `b<bucket>`): the form a
        shared store adds up with one increment per field."""
        fields = {REQUESTS_FIELD: self.requests, ERRORS_FIELD: self.errors}
        fields |= {f"b{bucket}": count for bucket, count in enumerate(self._buckets) if count}
        return {name: count for name, count in fields.items() if count}

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> LatencyHistogram:
        """The histogram `counts` describes; unknown fields are ignored (a newer replica's)."""
        histogram = cls()
        histogram.requests = int(counts.get(REQUESTS_FIELD, 0))
        histogram.errors = int(counts.get(ERRORS_FIELD, 0))
        for name, count in counts.items():
            if name.startswith("b") and name[1:].isdigit() and int(name[1:]) < _BUCKETS:
                histogram._buckets[int(name[1:])] += int(count)
        return histogram

    @property
    def error_rate(self) -> float | None:
        """Errors over requests; None before the first request."""
        return self.errors / self.requests if self.requests else None

    def percentile_s(self, percent: float) -> float | None:
        """The latency percentile of successful requests; None before the first success."""
        successes = sum(self._buckets)
        if not successes:
            return None
        rank = percent / 100 * successes
        seen = 0
        for bucket, count in enumerate(self._buckets):
            if count and seen + count >= rank:
                lower_s = _upper_bound_s(bucket - 1) if bucket else 0.0
                upper_s = _upper_bound_s(bucket)
                return lower_s + (upper_s - lower_s) * max(rank - seen, 0) / count
            seen += count
        return _upper_bound_s(_BUCKETS - 1)

    @property
    def p95_s(self) -> float | None:
        return self.percentile_s(95.0)

"""Per-variant request statistics over one window: counts, error rate, latency percentiles."""

from __future__ import annotations

from collections import deque

import numpy as np


class LatencyWindow:
    """Exact request and error counts, and the latencies of the most recent successes.

    Percentiles use successful requests only: failures are often fast (a refused input) or
    slow (a timeout) for reasons the error rate already judges. Memory is bounded by
    `max_samples`; past it, the oldest latencies give way to the newest.
    """

    def __init__(self, max_samples: int = 10_000) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        self._latencies_s: deque[float] = deque(maxlen=max_samples)
        self.requests = 0
        self.errors = 0

    def record(self, latency_s: float, ok: bool) -> None:
        self.requests += 1
        if ok:
            self._latencies_s.append(latency_s)
        else:
            self.errors += 1

    def reset(self) -> None:
        self._latencies_s.clear()
        self.requests = 0
        self.errors = 0

    @property
    def error_rate(self) -> float | None:
        """Errors over requests; None before the first request."""
        return self.errors / self.requests if self.requests else None

    def percentile_s(self, percent: float) -> float | None:
        """The latency percentile of successful requests; None before the first success."""
        if not self._latencies_s:
            return None
        return float(np.percentile(np.fromiter(self._latencies_s, dtype=float), percent))

    @property
    def p95_s(self) -> float | None:
        return self.percentile_s(95.0)

"""What one replica reports to the latency policy, kept as it serves.

The serving path calls `request_started()` when a request arrives and `request_finished(latency_s)`
when it ends (in `finally`, so errors count too); the host calls `snapshot()` when it collects
stats (Ray Serve: `record_autoscaling_stats`; Kubernetes: before each metrics export). Latency
percentiles and request rate cover the requests completed in the last `window_s`; in-flight is the
time-weighted mean since the previous snapshot, so that a burst between two collections counts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from switchyard.server.autoscaling.latency_policy import ReplicaStats

# Bounds the memory of a very busy replica: past this, the oldest completions drop out first and
# the rate reads low (at a 30 s window, from 6,000 requests per second on).
MAX_SAMPLES = 200_000


class ReplicaStatsRecorder:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if not window_s > 0:
            raise ValueError(f"window_s: must be > 0, got {window_s!r}")
        self._window_s = window_s
        self._clock = clock
        self._started_s = clock()
        self._completions: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self._in_flight = 0
        self._in_flight_area = 0.0  # request-seconds since the last snapshot
        self._changed_s = self._snapshot_s = self._started_s

    def request_started(self) -> None:
        self._accumulate()
        self._in_flight += 1

    def request_finished(self, latency_s: float) -> None:
        self._accumulate()
        self._in_flight -= 1
        self._completions.append((self._changed_s, latency_s))

    def snapshot(self) -> ReplicaStats:
        self._accumulate()
        now_s = self._changed_s
        while self._completions and self._completions[0][0] < now_s - self._window_s:
            self._completions.popleft()
        elapsed_s = now_s - self._snapshot_s
        in_flight = self._in_flight_area / elapsed_s if elapsed_s > 0 else float(self._in_flight)
        self._in_flight_area, self._snapshot_s = 0.0, now_s
        # A replica younger than its window has only served for part of it.
        span_s = min(self._window_s, now_s - self._started_s)
        if not self._completions or span_s <= 0:
            return ReplicaStats(p95_latency_s=0.0, request_rate_per_s=0.0, in_flight=in_flight)
        latencies = np.fromiter((latency for _, latency in self._completions), float)
        p95_s, p99_s = np.percentile(latencies, (95, 99))
        return ReplicaStats(
            p95_latency_s=float(p95_s),
            p99_latency_s=float(p99_s),
            request_rate_per_s=latencies.size / span_s,
            in_flight=in_flight,
        )

    def _accumulate(self) -> None:
        now_s = self._clock()
        self._in_flight_area += self._in_flight * (now_s - self._changed_s)
        self._changed_s = now_s

"""Replays a load trace against simulated replicas, scaled by the very same LatencyPolicy.

The queue model is a request-level simulation, not a formula: one FIFO queue in front of
ready_replicas x max_ongoing_requests slots, Poisson arrivals at the trace's rate, service times
drawn from the service-time model. Erlang C (M/M/c) would be cheaper, but it only knows steady
states: it says nothing of the backlog a load step builds while replicas start, nor of how that
backlog drains, which is exactly what tuning an autoscaler is about; and measured service times
are not exponential. The shape is Ray Serve's: a replica takes at most max_ongoing_requests, the
rest wait at the caller's handle. The same seed gives the same timeline.

Replicas: scaling up starts replicas that serve cold_start_s later; scaling down cancels starting
replicas first, then removes ready ones (what they are running still completes).

What the policy sees, every decision_interval_s: one ReplicaStats per ready replica, all alike,
from the last latency_window_s: the percentiles of the requests completed in it, their rate
divided among the replicas, and the mean busy slots divided among them as in-flight.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, pairwise

import numpy as np

from switchyard.server.autoscaling.latency_policy import (
    LatencyPolicy,
    LatencyPolicyConfig,
    ReplicaStats,
)
from switchyard.server.autoscaling.sim_inputs import LoadTrace, ServiceTimeModel


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationSettings:
    tick_s: float = 1.0
    decision_interval_s: float = 1.0  # rounded to whole ticks
    latency_window_s: float = 10.0  # the window replicas compute their stats over
    cold_start_s: float = 30.0  # from the decision to scale up to a new replica serving
    initial_replicas: int | None = None  # None: the policy's min_replicas
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("tick_s", "decision_interval_s", "latency_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        if not self.cold_start_s >= 0:
            raise ValueError(f"cold_start_s: must be >= 0, got {self.cold_start_s!r}")
        if self.initial_replicas is not None and self.initial_replicas < 1:
            raise ValueError(f"initial_replicas: must be >= 1, got {self.initial_replicas!r}")


@dataclass(frozen=True, slots=True)
class TimelineRow:
    time_s: float  # the end of the tick
    requests_per_s: float  # offered by the trace
    replicas: int  # asked for: ready and starting
    ready_replicas: int
    p95_s: float  # over the latency window; NaN when nothing completed in it
    p99_s: float
    target_s: float
    reason: str  # the policy's, on ticks where it decided


def simulate(
    trace: LoadTrace,
    service: ServiceTimeModel,
    config: LatencyPolicyConfig,
    settings: SimulationSettings | None = None,
) -> list[TimelineRow]:
    settings = settings or SimulationSettings()
    rng = np.random.default_rng(settings.seed)
    policy = LatencyPolicy(config)
    tick_s, slots_per_replica = settings.tick_s, config.max_ongoing_requests
    window_ticks = max(1, round(settings.latency_window_s / tick_s))
    decision_ticks = max(1, round(settings.decision_interval_s / tick_s))

    ready = settings.initial_replicas or config.min_replicas
    slots = [0.0] * (ready * slots_per_replica)  # a heap of the times slots become free
    starting: deque[float] = deque()  # when each starting replica is ready, in order
    queue: deque[tuple[float, float]] = deque()  # (arrival_s, service_s), FIFO
    latencies_by_tick: defaultdict[int, list[float]] = defaultdict(list)  # by completion tick
    busy_by_tick: defaultdict[int, float] = defaultdict(float)  # busy slot-seconds

    rows: list[TimelineRow] = []
    for tick in range(math.ceil(trace.end_s / tick_s - 1e-9)):
        start_s, end_s = tick * tick_s, (tick + 1) * tick_s
        while starting and starting[0] < end_s:
            ready_at_s = starting.popleft()
            ready += 1
            for _ in range(slots_per_replica):
                heapq.heappush(slots, ready_at_s)

        rate_per_s = trace.rate_at(start_s)
        count = int(rng.poisson(rate_per_s * tick_s))
        arrivals_s = start_s + np.sort(rng.uniform(0.0, tick_s, count))
        queue.extend(zip(arrivals_s.tolist(), service.sample(rng, count).tolist(), strict=True))
        # Dispatch what can start before the tick ends; the rest waits for the next tick, when
        # replicas that came up in between take their share.
        while queue and slots and slots[0] < end_s:
            arrival_s, service_s = queue.popleft()
            begin_s = max(arrival_s, slots[0])
            finish_s = begin_s + service_s
            heapq.heapreplace(slots, finish_s)
            latencies_by_tick[int(finish_s // tick_s)].append(finish_s - arrival_s)
            _add_busy(busy_by_tick, begin_s, finish_s, tick_s)

        window = range(max(0, tick - window_ticks + 1), tick + 1)
        window_s = len(window) * tick_s
        latencies = np.fromiter(chain.from_iterable(latencies_by_tick[i] for i in window), float)
        p95_s, p99_s = (
            (float(np.percentile(latencies, 95)), float(np.percentile(latencies, 99)))
            if latencies.size
            else (math.nan, math.nan)
        )
        latencies_by_tick.pop(window[0] - 1, None)  # out of every later window
        busy_by_tick.pop(window[0] - 1, None)

        reason = ""
        if tick % decision_ticks == decision_ticks - 1:
            stats = _replica_stats(
                ready,
                latencies.size / window_s,
                sum(busy_by_tick[i] for i in window) / window_s,
                p95_s,
                p99_s,
            )
            decision = policy.decide(end_s, ready + len(starting), stats)
            reason = decision.reason
            ready = _apply(
                decision.desired_replicas,
                ready,
                starting,
                slots,
                slots_per_replica,
                end_s,
                settings.cold_start_s,
            )
        rows.append(
            TimelineRow(
                time_s=end_s,
                requests_per_s=rate_per_s,
                replicas=ready + len(starting),
                ready_replicas=ready,
                p95_s=p95_s,
                p99_s=p99_s,
                target_s=config.target_latency_s,
                reason=reason,
            )
        )
    return rows


def _add_busy(
    busy_by_tick: defaultdict[int, float], begin_s: float, end_s: float, tick_s: float
) -> None:
    tick = int(begin_s // tick_s)
    while begin_s < end_s:
        boundary_s = min(end_s, (tick + 1) * tick_s)
        busy_by_tick[tick] += boundary_s - begin_s
        begin_s, tick = boundary_s, tick + 1


def _replica_stats(
    ready: int,
    completed_per_s: float,
    busy_slots: float,
    p95_s: float,
    p99_s: float,
) -> list[ReplicaStats]:
    if ready == 0:
        return []
    share = ReplicaStats(
        p95_latency_s=0.0 if math.isnan(p95_s) else p95_s,
        p99_latency_s=0.0 if math.isnan(p99_s) else p99_s,
        request_rate_per_s=completed_per_s / ready,
        in_flight=busy_slots / ready,
    )
    return [share] * ready


def _apply(
    desired: int,
    ready: int,
    starting: deque[float],
    slots: list[float],
    slots_per_replica: int,
    now_s: float,
    cold_start_s: float,
) -> int:
    """Starts or removes replicas toward `desired`; returns the ready count."""
    asked = ready + len(starting)
    starting.extend([now_s + cold_start_s] * max(0, desired - asked))
    surplus = max(0, asked - desired)
    while surplus and starting:
        starting.pop()  # the newest first: the furthest from serving
        surplus -= 1
    if surplus:
        # The earliest-free slots go, idle ones first; what runs on them still completes. A
        # sorted list is still a heap.
        slots.sort()
        del slots[: surplus * slots_per_replica]
    return ready - surplus


def direction_changes(replica_counts: Sequence[int]) -> int:
    """How often the replica count turned from rising to falling or back."""
    steps = [b - a for a, b in pairwise(replica_counts) if b != a]
    return sum(1 for a, b in pairwise(steps) if (a > 0) != (b > 0))

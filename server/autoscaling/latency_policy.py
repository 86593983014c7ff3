"""The latency autoscaling policy: how many replicas hold a latency percentile at its target.

The estimate (one decision, from the replicas that report stats)
----------------------------------------------------------------
By Little's law a replica's mean in-flight count is its busy concurrency (in_flight = request
rate x mean time at the replica). Over the n replicas that report:

    U = sum(in_flight) / max_ongoing_requests   the load, in replicas' worth of work; moving
                                                load between replicas leaves it unchanged
    u = U / n                                   the utilisation of each replica now
    L = the replicas' p95 (or p99), weighted by their request rates

Latency is modelled the way a queue's grows, L(u) = L0 / (1 - u): flat at low load, steep near
saturation (exact for M/M/1 sojourn-time percentiles; the shape of Kingman's formula otherwise).
One observation gives the zero-load latency L0 = L * (1 - u); the utilisation that puts L at the
target T is u* = 1 - L0 / T, and the estimate is n* = ceil(U / u*). When L = T, u* = u and n* = n:
the target is the estimate's fixed point whatever the real curve, which is why the model only has
to be roughly right. u* is clamped to [min_target_utilization, max_target_utilization]: the upper
bound keeps headroom below a knee the model places too late, the lower bound caps how far out a
latency floor above the target (which no replica count fixes) can push.

Saturated replicas (u >= 0.95) are the exception: their latency measures the backlog, not the
load, and their in-flight count is capped, so the load is only known to be at least U. The
estimate is then U * saturated_scale_factor: probe upwards, as TCP's slow start does.

Direction follows latency: within +-tolerance of T nothing moves, above it the policy never scales
in, below it never out. Replicas that report no traffic at all recommend min_replicas; no stats at
all (nothing ready yet) holds the current count.

Stabilisation and rate limits, as Kubernetes' HPA does them
------------------------------------------------------------
Each decision records its recommendation. The policy scales up to the *lowest* recommendation of
the last upscale_stabilization_s (all of them must ask for more: one spike does not) and down to
the *highest* of the last downscale_stabilization_s (what a burst needed is kept that long). It
adds at most max_scale_up_step replicas per scale_up_period_s and removes at most
max_scale_down_step per scale_down_period_s, whatever the call rate (Ray Serve's control loop
calls every 0.1 s), and clamps to [min_replicas, max_replicas]. The history starts with the
current count, so the windows hold from the first call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

# From this utilisation on, replicas are saturated: their latency measures their backlog.
_SATURATED_UTILIZATION = 0.95


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyPolicyConfig:
    """The settings of one policy, as compiled from a validated `autoscaling:` section
    (server/autoscaling/config.py says each one's bounds)."""

    target_latency_s: float
    percentile: int = 95  # which latency percentile is held at the target: 95 or 99
    min_replicas: int = 1
    max_replicas: int = 10
    upscale_stabilization_s: float = 30.0
    downscale_stabilization_s: float = 300.0
    tolerance: float = 0.1  # fraction of the target within which nothing moves
    max_scale_up_step: int = 4  # replicas added per scale_up_period_s, at most
    scale_up_period_s: float = 15.0
    max_scale_down_step: int = 2  # replicas removed per scale_down_period_s, at most
    scale_down_period_s: float = 30.0
    # Requests one replica serves at once (Ray Serve's max_ongoing_requests): in-flight over this
    # is the replica's utilisation.
    max_ongoing_requests: int = 5
    min_target_utilization: float = 0.2
    max_target_utilization: float = 0.85
    saturated_scale_factor: float = 3.0  # the estimate's multiple of a saturated load


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStats:
    """One replica over its recent window (the same window for every field)."""

    p95_latency_s: float
    request_rate_per_s: float
    in_flight: float  # mean requests at the replica over the window, running or queued there
    p99_latency_s: float | None = None

    def latency_s(self, percentile: int) -> float:
        if percentile == 95:
            return self.p95_latency_s
        if self.p99_latency_s is None:
            raise ValueError("percentile: 99 needs replicas that report p99_latency_s")
        return self.p99_latency_s


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    latency_s: float | None  # the percentile across replicas; None when none served traffic
    utilization: float  # in-flight / max_ongoing_requests, mean over the reporting replicas
    replicas_needed: float  # replicas that hold the target at this load, unrounded


def estimate_replicas(
    config: LatencyPolicyConfig, stats: Sequence[ReplicaStats]
) -> LatencyEstimate:
    """The estimate of the module docstring, before any rounding, direction rule or window."""
    if not stats:
        return LatencyEstimate(None, 0.0, 0.0)
    load_replicas = sum(s.in_flight for s in stats) / config.max_ongoing_requests
    utilization = load_replicas / len(stats)
    rate_per_s = sum(s.request_rate_per_s for s in stats if s.request_rate_per_s > 0)
    if rate_per_s <= 0:
        # No completed requests to time: size by load alone, at the hottest allowed utilisation.
        return LatencyEstimate(None, utilization, load_replicas / config.max_target_utilization)
    latency_s = (
        sum(
            s.request_rate_per_s * s.latency_s(config.percentile)
            for s in stats
            if s.request_rate_per_s > 0
        )
        / rate_per_s
    )
    if utilization >= _SATURATED_UTILIZATION:
        return LatencyEstimate(
            latency_s, utilization, load_replicas * config.saturated_scale_factor
        )
    zero_load_latency_s = latency_s * (1 - utilization)
    target_utilization = min(
        max(1 - zero_load_latency_s / config.target_latency_s, config.min_target_utilization),
        config.max_target_utilization,
    )
    return LatencyEstimate(latency_s, utilization, load_replicas / target_utilization)


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    desired_replicas: int
    reason: str
    estimate: LatencyEstimate


class LatencyPolicy:
    """Decides replica counts from latency; one instance per deployment, since it keeps the
    recommendation history of its windows and the scaling events of its rate limits. Called with
    a monotonic `now_s` at each control-loop tick."""

    def __init__(self, config: LatencyPolicyConfig) -> None:
        self.config = config
        # (last time recommended, replicas): a run of equal recommendations is one entry, stamped
        # with its latest time, which is all a window's min or max needs.
        self._recommendations: deque[tuple[float, int]] = deque()
        self._scalings: deque[tuple[float, int]] = deque()  # (time_s, replicas added or removed)

    def decide(
        self, now_s: float, current_replicas: int, stats: Sequence[ReplicaStats]
    ) -> ScalingDecision:
        config = self.config
        if not self._recommendations:
            self._remember(now_s, current_replicas)
        estimate = estimate_replicas(config, stats)
        recommended, why = self._recommend(current_replicas, stats, estimate)
        recommended = min(max(recommended, config.min_replicas), config.max_replicas)
        self._remember(now_s, recommended)

        # The windows are half-open, (now - window, now], and always hold this recommendation.
        lowest_up = min(
            (n for t, n in self._recommendations if t > now_s - config.upscale_stabilization_s),
            default=recommended,
        )
        highest_down = max(
            (n for t, n in self._recommendations if t > now_s - config.downscale_stabilization_s),
            default=recommended,
        )
        lowest_up, highest_down = min(lowest_up, recommended), max(highest_down, recommended)
        wanted = current_replicas
        if lowest_up > current_replicas:
            wanted = lowest_up
        elif highest_down < current_replicas:
            wanted = highest_down
        added = sum(d for t, d in self._scalings if d > 0 and t > now_s - config.scale_up_period_s)
        removed = -sum(
            d for t, d in self._scalings if d < 0 and t > now_s - config.scale_down_period_s
        )
        limited = min(
            max(wanted, current_replicas - max(0, config.max_scale_down_step - removed)),
            current_replicas + max(0, config.max_scale_up_step - added),
        )
        desired = min(max(limited, config.min_replicas), config.max_replicas)
        if desired != current_replicas:
            self._scalings.append((now_s, desired - current_replicas))

        notes = [why]
        if desired != limited:
            notes.append("brought within min/max replicas")
        elif limited > wanted:
            notes.append(
                f"rate limit -{config.max_scale_down_step}/{config.scale_down_period_s:g}s"
            )
        elif limited < wanted:
            notes.append(f"rate limit +{config.max_scale_up_step}/{config.scale_up_period_s:g}s")
        elif wanted == current_replicas and recommended > current_replicas:
            notes.append(f"stabilizing: min of last {config.upscale_stabilization_s:g}s")
        elif wanted == current_replicas and recommended < current_replicas:
            notes.append(f"stabilizing: max of last {config.downscale_stabilization_s:g}s")
        if desired == current_replicas:
            action = "hold"
        else:
            action = f"{'up' if desired > current_replicas else 'down'} to {desired}"
        return ScalingDecision(desired, f"{action}: {'; '.join(notes)}", estimate)

    def _recommend(
        self, current: int, stats: Sequence[ReplicaStats], estimate: LatencyEstimate
    ) -> tuple[int, str]:
        config = self.config
        if not stats:
            return current, "no stats from replicas"
        if estimate.latency_s is None:
            if estimate.replicas_needed == 0:
                return config.min_replicas, "no traffic"
            return current, "no completed requests to time"
        target_s = config.target_latency_s
        label = f"p{config.percentile} {estimate.latency_s:.3f}s vs target {target_s:.3f}s"
        ratio = estimate.latency_s / target_s
        if abs(ratio - 1) <= config.tolerance:
            return current, f"{label}, within tolerance"
        # The float guard keeps an estimate of exactly n from rounding up to n + 1.
        needed = math.ceil(estimate.replicas_needed - 1e-9)
        if ratio > 1:
            if needed <= current:
                return current, f"{label}, estimate {needed} <= {current} already asked for"
            return needed, f"{label}, estimate {needed}"
        if needed >= current:
            return current, f"{label}, estimate {needed} keeps {current}"
        return needed, f"{label}, estimate {needed}"

    def _remember(self, now_s: float, replicas: int) -> None:
        config, recommendations = self.config, self._recommendations
        if recommendations and recommendations[-1][1] == replicas:
            recommendations[-1] = (now_s, replicas)
        else:
            recommendations.append((now_s, replicas))
        window_s = max(config.upscale_stabilization_s, config.downscale_stabilization_s)
        while recommendations[0][0] < now_s - window_s:
            recommendations.popleft()
        period_s = max(config.scale_up_period_s, config.scale_down_period_s)
        while self._scalings and self._scalings[0][0] <= now_s - period_s:
            self._scalings.popleft()

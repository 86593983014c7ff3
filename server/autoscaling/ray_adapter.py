"""The latency policy as Ray Serve's custom autoscaling policy, fed by the replicas' own stats.

Nothing here imports ray: the replica side returns a plain dict, and the controller side reads only
the documented fields of the `AutoscalingContext` it is handed, so this module loads (and is
tested) where Ray is not installed. The Ray API it follows (custom autoscaling, alpha):

- A replica's `record_autoscaling_stats(self) -> dict[str, float]` (sync or async, within
  RAY_SERVE_RECORD_AUTOSCALING_STATS_TIMEOUT_S) reports custom metrics; the policy reads them as
  `ctx.aggregated_metrics[name][replica_id]`, a time-weighted mean over look_back_period_s.
- `AutoscalingConfig(policy=AutoscalingPolicy(policy_function="module:Name",
  policy_kwargs={...}))` with a class: the controller builds it once with the JSON-serialisable
  policy_kwargs and calls it every control-loop tick (0.1 s) with the context; it returns
  (target_replicas, policy_state).
- Recent Ray applies upscale_delay_s, downscale_delay_s and the scaling factors of the
  AutoscalingConfig on top of a custom policy's answer: set both delays to 0, so that the windows
  of LatencyPolicyConfig are the only ones.

Replica side:

    recorder = ReplicaStatsRecorder(window_s=30.0)     # fed by the serving path
    def record_autoscaling_stats(self) -> dict[str, float]:
        return to_autoscaling_metrics(self._recorder.snapshot())

Controller side: `autoscaling_config(config)` builds the deployment's autoscaling_config.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from switchyard.server.autoscaling.config import AutoscalingConfig
from switchyard.server.autoscaling.latency_policy import (
    LatencyPolicy,
    LatencyPolicyConfig,
    ReplicaStats,
)

P95_LATENCY_S = "switchyard_p95_latency_s"
P99_LATENCY_S = "switchyard_p99_latency_s"
REQUEST_RATE_PER_S = "switchyard_request_rate_per_s"
IN_FLIGHT = "switchyard_in_flight"
POLICY_PATH = f"{__name__}:RayLatencyPolicy"


def to_autoscaling_metrics(stats: ReplicaStats) -> dict[str, float]:
    """A replica's stats as the dict `record_autoscaling_stats` returns."""
    metrics = {
        P95_LATENCY_S: stats.p95_latency_s,
        REQUEST_RATE_PER_S: stats.request_rate_per_s,
        IN_FLIGHT: stats.in_flight,
    }
    if stats.p99_latency_s is not None:
        metrics[P99_LATENCY_S] = stats.p99_latency_s
    return metrics


def stats_from_aggregated(aggregated: Mapping[str, Mapping[Any, float]]) -> list[ReplicaStats]:
    """One ReplicaStats per replica that reported every required metric (a replica still
    starting reports none, and counts as not ready)."""
    required = (P95_LATENCY_S, REQUEST_RATE_PER_S, IN_FLIGHT)
    replicas = set.intersection(*(set(aggregated.get(name, {})) for name in required))
    p99 = aggregated.get(P99_LATENCY_S, {})
    return [
        ReplicaStats(
            p95_latency_s=float(aggregated[P95_LATENCY_S][replica]),
            p99_latency_s=float(p99[replica]) if replica in p99 else None,
            request_rate_per_s=float(aggregated[REQUEST_RATE_PER_S][replica]),
            in_flight=float(aggregated[IN_FLIGHT][replica]),
        )
        for replica in sorted(replicas, key=str)
    ]


class RayLatencyPolicy:
    """A class-based Ray Serve autoscaling policy: one instance per deployment, on the Serve
    controller, built from LatencyPolicyConfig's settings as policy_kwargs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, **settings: Any) -> None:
        self._policy = LatencyPolicy(AutoscalingConfig.model_validate(settings).to_policy_config())
        self._clock = clock

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        aggregated = ctx.aggregated_metrics or {}
        decision = self._policy.decide(
            self._clock(), ctx.target_num_replicas, stats_from_aggregated(aggregated)
        )
        # Ray's bounds, adjusted for target_capacity, win over the policy's own.
        desired = min(
            max(decision.desired_replicas, ctx.capacity_adjusted_min_replicas),
            ctx.capacity_adjusted_max_replicas,
        )
        return desired, {"reason": decision.reason}


def autoscaling_config(config: LatencyPolicyConfig) -> dict[str, Any]:
    """The deployment's autoscaling_config that installs the latency policy with `config`."""
    return {
        "min_replicas": config.min_replicas,
        "max_replicas": config.max_replicas,
        "upscale_delay_s": 0,
        "downscale_delay_s": 0,
        "policy": {"policy_function": POLICY_PATH, "policy_kwargs": dataclasses.asdict(config)},
    }

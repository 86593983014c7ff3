"""The latency policy's signal as Prometheus gauges, for a Kubernetes HPA or KEDA to scale on.

Per deployment and variant:
    switchyard_autoscaling_latency_ratio      observed percentile / target: 1 is on target
    switchyard_autoscaling_replicas_needed    replicas that hold the target at the load seen,
                                              unrounded (the policy's estimate, before its
                                              tolerance band, windows and rate limits)
    switchyard_autoscaling_desired_replicas   the policy's decision, where a policy runs
    switchyard_autoscaling_max_replicas       the policy's max_replicas, so that an alert can
                                              tell when the demand reaches the ceiling

Two ways to scale on them, both with the HPA's averageValue arithmetic, which makes the desired
count ceil(sum of the metric / averageValue):
- One process sees every replica's stats and runs LatencyPolicy (as the Ray host does): an
  External metric on desired_replicas, target averageValue 1, and the HPA's own windows at 0
  (behavior.scaleUp/scaleDown.stabilizationWindowSeconds: 0): the policy has stabilised already.
- Each pod sees only itself: every pod exports replicas_needed from its own stats, and a Pods
  metric on it, target averageValue 1, sums the pods' shares into the deployment's estimate; the
  HPA's behavior (stabilization windows, Pods policies) then plays the part of the policy's
  windows and rate limits. KEDA's prometheus scaler does the same with the query
  `sum(switchyard_autoscaling_replicas_needed{deployment="..."})` and threshold 1.
latency_ratio is for dashboards and alerts, or for an HPA whose target is 1, which scales in
proportion to latency and so, unlike the estimate, cannot tell a latency floor from a load.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

from prometheus_client import CollectorRegistry, Gauge

from switchyard.server.autoscaling.latency_policy import (
    LatencyEstimate,
    LatencyPolicyConfig,
    ReplicaStats,
    ScalingDecision,
    estimate_replicas,
)

LABELS = ("deployment", "variant")


class AutoscalingSignals:
    # Across worker processes (server.workers > 1): the pod needs what its workers need
    # together (livesum), and its latency is its slowest worker's (livemax).
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency_ratio = Gauge(
            "switchyard_autoscaling_latency_ratio",
            "Observed latency percentile over its target (1 is on target; 0 without traffic).",
            LABELS,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.replicas_needed = Gauge(
            "switchyard_autoscaling_replicas_needed",
            "Replicas that hold the latency target at the load seen, unrounded.",
            LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.desired_replicas = Gauge(
            "switchyard_autoscaling_desired_replicas",
            "Replicas the latency policy decided on.",
            LABELS,
            registry=registry,
            multiprocess_mode="livemax",
        )
        # A setting, the same in every worker: livemax shows it once.
        self.max_replicas = Gauge(
            "switchyard_autoscaling_max_replicas",
            "The latency policy's max_replicas: the most replicas it may ask for.",
            LABELS,
            registry=registry,
            multiprocess_mode="livemax",
        )

    def export(
        self,
        deployment: str,
        variant: str,
        config: LatencyPolicyConfig,
        stats: Sequence[ReplicaStats],
        decision: ScalingDecision | None = None,
    ) -> LatencyEstimate:
        """Sets the gauges from the policy's inputs (and its decision, when there is one)."""
        estimate = decision.estimate if decision is not None else estimate_replicas(config, stats)
        ratio = 0.0 if estimate.latency_s is None else estimate.latency_s / config.target_latency_s
        self.latency_ratio.labels(deployment, variant).set(ratio)
        self.replicas_needed.labels(deployment, variant).set(estimate.replicas_needed)
        self.max_replicas.labels(deployment, variant).set(config.max_replicas)
        if decision is not None:
            self.desired_replicas.labels(deployment, variant).set(decision.desired_replicas)
        return estimate

    def forget(self, deployment: str, variant: str) -> None:
        """Drops a removed variant's series, so that no stale value drives a scaler."""
        gauges = (
            self.latency_ratio,
            self.replicas_needed,
            self.desired_replicas,
            self.max_replicas,
        )
        for gauge in gauges:
            with suppress(KeyError):  # never exported, or forgotten already
                gauge.remove(deployment, variant)

"""How the policy's inputs are gathered and its signal leaves: the replica recorder, the
Prometheus gauges, and the Ray Serve adapter (driven by a stand-in for Ray's context, since Ray
is not installed here)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from switchyard.server.autoscaling.config import AutoscalingConfig
from switchyard.server.autoscaling.latency_policy import (
    LatencyPolicy,
    LatencyPolicyConfig,
    ReplicaStats,
)
from switchyard.server.autoscaling.metrics import AutoscalingSignals
from switchyard.server.autoscaling.ray_adapter import (
    IN_FLIGHT,
    P95_LATENCY_S,
    RayLatencyPolicy,
    autoscaling_config,
    stats_from_aggregated,
    to_autoscaling_metrics,
)
from switchyard.server.autoscaling.replica_stats import ReplicaStatsRecorder

CONFIG = LatencyPolicyConfig(
    target_latency_s=0.1, max_ongoing_requests=2, upscale_stabilization_s=0, max_replicas=8
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


# The replica side


def test_recorder_reports_its_window() -> None:
    clock = FakeClock()
    recorder = ReplicaStatsRecorder(window_s=10.0, clock=clock)
    for i in range(100):  # 100 requests over 10 s, one at a time, 50 ms each
        clock.now_s = 100.0 + i * 0.1
        recorder.request_started()
        clock.now_s += 0.05
        recorder.request_finished(0.05 if i < 90 else 0.5)
    clock.now_s = 110.0
    stats = recorder.snapshot()
    assert stats.request_rate_per_s == pytest.approx(10.0)
    assert stats.in_flight == pytest.approx(0.5)  # busy half the time
    assert stats.p95_latency_s == pytest.approx(0.5) and stats.p99_latency_s == pytest.approx(0.5)

    clock.now_s = 125.0  # everything aged out of the window; nothing in flight since
    idle = recorder.snapshot()
    assert (idle.request_rate_per_s, idle.in_flight, idle.p95_latency_s) == (0.0, 0.0, 0.0)


def test_recorder_counts_requests_still_running() -> None:
    clock = FakeClock()
    recorder = ReplicaStatsRecorder(window_s=30.0, clock=clock)
    recorder.request_started()
    recorder.request_started()
    clock.now_s += 4.0
    assert recorder.snapshot().in_flight == pytest.approx(2.0)


# Prometheus


def test_signals_export_ratio_estimate_and_decision() -> None:
    registry = CollectorRegistry()
    signals = AutoscalingSignals(registry)
    stats = [ReplicaStats(p95_latency_s=0.2, request_rate_per_s=10.0, in_flight=1.2)] * 2
    labels = {"deployment": "ranker", "variant": "canary"}
    estimate = signals.export("ranker", "canary", CONFIG, stats)
    assert registry.get_sample_value("switchyard_autoscaling_latency_ratio", labels) == 2.0
    assert registry.get_sample_value(
        "switchyard_autoscaling_replicas_needed", labels
    ) == pytest.approx(estimate.replicas_needed)
    assert registry.get_sample_value("switchyard_autoscaling_desired_replicas", labels) is None
    max_replicas = registry.get_sample_value("switchyard_autoscaling_max_replicas", labels)
    assert max_replicas == CONFIG.max_replicas

    decision = LatencyPolicy(CONFIG).decide(0.0, 2, stats)
    signals.export("ranker", "canary", CONFIG, stats, decision)
    assert (
        registry.get_sample_value("switchyard_autoscaling_desired_replicas", labels)
        == decision.desired_replicas
        > 2
    )
    signals.forget("ranker", "canary")
    signals.forget("ranker", "canary")  # twice is harmless
    assert registry.get_sample_value("switchyard_autoscaling_latency_ratio", labels) is None
    assert registry.get_sample_value("switchyard_autoscaling_max_replicas", labels) is None


# Ray Serve


def context(
    metrics: dict[str, dict[str, float]], target: int, low: int = 1, high: int = 8
) -> SimpleNamespace:
    """The fields of ray.serve.config.AutoscalingContext the adapter reads."""
    return SimpleNamespace(
        aggregated_metrics=metrics,
        target_num_replicas=target,
        capacity_adjusted_min_replicas=low,
        capacity_adjusted_max_replicas=high,
    )


def test_metrics_round_trip_through_rays_aggregation() -> None:
    a = ReplicaStats(p95_latency_s=0.2, p99_latency_s=0.4, request_rate_per_s=5.0, in_flight=1.0)
    b = ReplicaStats(p95_latency_s=0.1, request_rate_per_s=3.0, in_flight=0.5)
    aggregated: dict[str, dict[str, float]] = {}
    for replica, stats in (("r1", a), ("r2", b)):
        for name, value in to_autoscaling_metrics(stats).items():
            aggregated.setdefault(name, {})[replica] = value
    aggregated[P95_LATENCY_S]["r3"] = 9.0  # still starting: not every metric yet
    assert stats_from_aggregated(aggregated) == [a, b]


def test_ray_policy_decides_from_the_context() -> None:
    clock = FakeClock()
    policy = RayLatencyPolicy(clock=clock, **dataclasses.asdict(CONFIG))
    metrics = to_autoscaling_metrics(
        ReplicaStats(p95_latency_s=0.3, request_rate_per_s=10.0, in_flight=1.6)
    )
    aggregated = {name: {"r1": value, "r2": value} for name, value in metrics.items()}
    replicas, state = policy(context(aggregated, target=2))
    assert replicas > 2 and state["reason"].startswith(f"up to {replicas}")
    # Ray's capacity-adjusted bounds win.
    clock.now_s += 60
    assert policy(context(aggregated, target=2, high=3))[0] == 3
    # Before any replica reports: hold.
    assert policy(context({}, target=4))[0] == 4
    assert policy(SimpleNamespace(**{**vars(context({}, 4)), "aggregated_metrics": None}))[0] == 4


def test_ray_policy_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="target_latency"):
        RayLatencyPolicy(target_latency=0.1)


def test_autoscaling_config_installs_the_policy() -> None:
    config = autoscaling_config(CONFIG)
    assert config["upscale_delay_s"] == config["downscale_delay_s"] == 0
    assert (
        config["policy"]["policy_function"]
        == "switchyard.server.autoscaling.ray_adapter:RayLatencyPolicy"
    )
    kwargs = config["policy"]["policy_kwargs"]
    assert AutoscalingConfig.model_validate(kwargs).to_policy_config() == CONFIG


def test_the_policy_scales_on_the_in_flight_count_replicas_report() -> None:
    """The same latency over the target, at two loads: the replica's in-flight count, read
    back under the name the replica reports it, decides how far the policy scales."""

    def decided(in_flight: float) -> int:
        stats = ReplicaStats(p95_latency_s=0.3, request_rate_per_s=10.0, in_flight=in_flight)
        reported = to_autoscaling_metrics(stats)
        aggregated = {name: {"r1": value} for name, value in reported.items()}
        policy = RayLatencyPolicy(clock=FakeClock(), **dataclasses.asdict(CONFIG))
        replicas, _ = policy(context(aggregated, target=1))
        return replicas

    light, heavy = decided(0.5), decided(6.0)
    print(f"replicas at in_flight 0.5: {light}; at 6.0: {heavy}")
    assert 1 < light < heavy
    # A replica whose in-flight count is missing has not reported: nothing to scale on.
    reported = to_autoscaling_metrics(
        ReplicaStats(p95_latency_s=0.3, request_rate_per_s=10.0, in_flight=6.0)
    )
    del reported[IN_FLIGHT]
    assert stats_from_aggregated({name: {"r1": v} for name, v in reported.items()}) == []

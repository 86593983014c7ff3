"""The latency policy on synthetic inputs: its estimate, windows, rate limits and bounds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from switchyard.server.autoscaling.config import AutoscalingConfig
from switchyard.server.autoscaling.latency_policy import (
    LatencyPolicy,
    LatencyPolicyConfig,
    ReplicaStats,
    estimate_replicas,
)
from switchyard.server.autoscaling.simulator import direction_changes

TARGET_S = 0.1
CONFIG = LatencyPolicyConfig(
    target_latency_s=TARGET_S,
    min_replicas=1,
    max_replicas=20,
    upscale_stabilization_s=30,
    downscale_stabilization_s=300,
    max_scale_up_step=4,
    scale_up_period_s=15,
    max_scale_down_step=2,
    scale_down_period_s=30,
    max_ongoing_requests=1,
)


def stats(
    replicas: int, load: float, latency_s: float, rate_per_s: float = 50.0
) -> list[ReplicaStats]:
    """`replicas` alike, sharing `load` replicas' worth of work, at a latency of `latency_s`."""
    share = ReplicaStats(
        p95_latency_s=latency_s,
        p99_latency_s=latency_s * 1.5,
        request_rate_per_s=rate_per_s / replicas,
        in_flight=load / replicas,
    )
    return [share] * replicas


def run(
    policy: LatencyPolicy,
    replicas: int,
    seconds: range,
    observe: Callable[[int, int], list[ReplicaStats]],
) -> list[int]:
    """Calls the policy once a second; `observe(t, replicas)` gives the stats; the replica count
    follows each decision at once. Returns the count after each call."""
    counts = []
    for t in seconds:
        replicas = policy.decide(float(t), replicas, observe(t, replicas)).desired_replicas
        counts.append(replicas)
    return counts


# The estimate


def test_estimate_is_the_current_count_at_the_target() -> None:
    # At L = T the implied utilisation is the current one, whatever the latency curve.
    estimate = estimate_replicas(CONFIG, stats(5, load=3.0, latency_s=TARGET_S))
    assert estimate.replicas_needed == pytest.approx(5.0)
    assert estimate.utilization == pytest.approx(0.6)


def test_estimate_follows_the_queue_model() -> None:
    # L0 = 0.2 * (1 - 0.6) = 0.08; u* = 1 - 0.08 / 0.1 = 0.2 (min); n* = 3 / 0.2 = 15.
    assert estimate_replicas(CONFIG, stats(5, 3.0, 0.2)).replicas_needed == pytest.approx(15.0)
    # L0 = 0.05 * 0.4 = 0.02; u* = 0.8; n* = 3 / 0.8.
    assert estimate_replicas(CONFIG, stats(5, 3.0, 0.05)).replicas_needed == pytest.approx(3.75)
    # A fast model at low load: u* is capped at max_target_utilization (0.85).
    assert estimate_replicas(CONFIG, stats(5, 3.0, 0.001)).replicas_needed == pytest.approx(
        3 / 0.85
    )


def test_estimate_of_saturated_replicas_probes_upwards() -> None:
    estimate = estimate_replicas(CONFIG, stats(4, load=4.0, latency_s=30.0))
    assert estimate.replicas_needed == pytest.approx(4 * CONFIG.saturated_scale_factor)


def test_estimate_weights_latency_by_request_rate() -> None:
    busy = ReplicaStats(p95_latency_s=0.3, request_rate_per_s=30.0, in_flight=0.5)
    quiet = ReplicaStats(p95_latency_s=0.1, request_rate_per_s=10.0, in_flight=0.5)
    idle = ReplicaStats(p95_latency_s=9.0, request_rate_per_s=0.0, in_flight=0.0)
    assert estimate_replicas(CONFIG, [busy, quiet, idle]).latency_s == pytest.approx(0.25)


def test_estimate_without_traffic_needs_nothing() -> None:
    estimate = estimate_replicas(CONFIG, stats(3, load=0.0, latency_s=0.0, rate_per_s=0.0))
    assert estimate.latency_s is None and estimate.replicas_needed == 0.0


# Scaling up


def test_scales_up_on_a_sustained_breach_once_the_upscale_window_has_passed() -> None:
    policy = LatencyPolicy(CONFIG)
    counts = run(policy, 4, range(0, 40), lambda t, n: stats(n, 3.6, 0.2))
    assert counts[:30] == [4] * 30  # every recommendation of the last 30 s must ask for more
    assert counts[30] > 4


def test_does_not_scale_on_one_spike() -> None:
    policy = LatencyPolicy(CONFIG)
    counts = run(
        policy,
        4,
        range(0, 400),
        lambda t, n: stats(n, 2.4, 1.0 if t == 100 else TARGET_S * 1.05),
    )
    assert set(counts) == {4}


def test_a_breach_the_starting_replicas_will_cover_holds() -> None:
    # 8 asked for, 4 ready: the estimate (6) is already covered, so nothing more is added.
    policy = LatencyPolicy(CONFIG)
    decision = None
    for t in range(0, 60):
        decision = policy.decide(float(t), 8, stats(4, 3.6, 0.2))
    assert decision is not None and decision.desired_replicas == 8
    assert "hold" in decision.reason


def test_scale_up_is_rate_limited_and_bounded() -> None:
    config = dataclasses.replace(CONFIG, upscale_stabilization_s=0, max_replicas=11)
    policy = LatencyPolicy(config)
    counts = run(policy, 2, range(0, 120), lambda t, n: stats(n, float(n), 60.0))
    assert counts[0] == 2 + config.max_scale_up_step
    for end in range(15, 120):  # no 15 s period adds more than 4
        window = [2, *counts][end - 15 : end + 1]
        assert window[-1] - window[0] <= config.max_scale_up_step
    assert max(counts) == 11 and counts[-1] == 11


# Scaling down


def test_scales_down_slowly_after_the_downscale_window() -> None:
    policy = LatencyPolicy(CONFIG)
    counts = run(policy, 12, range(0, 900), lambda t, n: stats(n, 2.0, 0.03))
    assert counts[:300] == [12] * 300  # the highest recommendation of 300 s is the current one
    assert counts[300] == 10  # then at most 2 ...
    for start in range(300, 850):  # ... per 30 s
        assert counts[start] - counts[start + 30] <= CONFIG.max_scale_down_step
    assert counts[-1] == 3  # 2 replicas' worth of work at u* = 0.76 (L0 0.024 s)
    assert direction_changes(counts) == 0


def test_no_traffic_scales_down_slowly_to_min_replicas() -> None:
    policy = LatencyPolicy(CONFIG)
    counts = run(policy, 6, range(0, 700), lambda t, n: stats(n, 0.0, 0.0, rate_per_s=0.0))
    assert counts[299] == 6 and counts[-1] == CONFIG.min_replicas
    assert "no traffic" in policy.decide(700.0, 1, stats(1, 0.0, 0.0, 0.0)).reason


def test_no_stats_holds() -> None:
    policy = LatencyPolicy(CONFIG)
    counts = run(policy, 5, range(0, 700), lambda t, n: [])
    assert set(counts) == {5}


def test_a_count_outside_the_bounds_is_brought_back() -> None:
    decision = LatencyPolicy(CONFIG).decide(0.0, 25, stats(25, 10.0, TARGET_S))
    assert decision.desired_replicas == 20
    assert decision.reason.startswith("down to 20") and "within min/max" in decision.reason
    assert LatencyPolicy(CONFIG).decide(0.0, 0, []).desired_replicas == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 10.0),  # the latency, in targets
            st.floats(0.0, 1.2),  # the utilisation
            st.integers(0, 5),  # seconds to the next call
        ),
        min_size=1,
        max_size=200,
    )
)
def test_bounds_and_rate_limits_hold_for_any_inputs(calls: list[tuple[float, float, int]]) -> None:
    policy, replicas, now_s, moves = LatencyPolicy(CONFIG), 3, 0.0, []
    for latency, utilization, gap_s in calls:
        decision = policy.decide(now_s, replicas, stats(replicas, utilization * replicas,
                                                        latency * TARGET_S))  # fmt: skip
        assert CONFIG.min_replicas <= decision.desired_replicas <= CONFIG.max_replicas
        moves.append((now_s, decision.desired_replicas - replicas))
        replicas, now_s = decision.desired_replicas, now_s + gap_s
    for t, _ in moves:
        up = sum(d for s, d in moves if t - CONFIG.scale_up_period_s < s <= t and d > 0)
        down = -sum(d for s, d in moves if t - CONFIG.scale_down_period_s < s <= t and d < 0)
        assert up <= CONFIG.max_scale_up_step and down <= CONFIG.max_scale_down_step


# Holding steady


@pytest.mark.parametrize("ratio", [0.91, 1.0, 1.09])
def test_within_the_tolerance_band_nothing_moves(ratio: float) -> None:
    # The load alone would ask for 9 replicas, or 2: inside the band latency wins.
    for load in (0.5, 7.0):
        policy = LatencyPolicy(CONFIG)

        def observe(t: int, n: int, load: float = load) -> list[ReplicaStats]:
            return stats(n, load, ratio * TARGET_S)

        counts = run(policy, 5, range(0, 700), observe)
        assert set(counts) == {5}


def test_latency_decides_the_direction() -> None:
    # Below target, an estimate above the current count does not scale out ...
    policy = LatencyPolicy(CONFIG)
    assert run(policy, 4, range(0, 100), lambda t, n: stats(n, 3.9, 0.05))[-1] == 4
    # ... and above it, an estimate below does not scale in.
    config = dataclasses.replace(CONFIG, min_target_utilization=0.9, max_target_utilization=0.9)
    policy = LatencyPolicy(config)
    assert run(policy, 8, range(0, 400), lambda t, n: stats(n, 2.0, 0.5))[-1] == 8


def test_steady_load_near_the_target_does_not_oscillate() -> None:
    # A plant whose p95 is an M/M/1-like curve of the utilisation, with 15% noise, and whose
    # replicas take 20 s to start: after settling the count never changes direction again.
    rng = np.random.default_rng(7)
    load, service_p95_s = 6.0, 0.04
    policy, asked, starting = LatencyPolicy(CONFIG), 2, list[int]()
    counts = []
    for t in range(0, 3600):
        ready = asked - len([s for s in starting if s > t])
        utilization = min(load / ready, 0.99)
        latency_s = service_p95_s / (1 - utilization) * rng.uniform(0.85, 1.15)
        decision = policy.decide(
            float(t), asked, stats(ready, load * min(1, ready / load), latency_s)
        )
        starting += [t + 20] * max(0, decision.desired_replicas - asked)
        asked = decision.desired_replicas
        counts.append(asked)
    settled = counts[600:]
    assert direction_changes(settled) == 0
    assert len(set(settled[-1200:])) == 1
    final_latency_s = service_p95_s / (1 - load / counts[-1])
    assert final_latency_s < TARGET_S * (1 + CONFIG.tolerance)


# Config


def test_config_errors_name_the_field() -> None:
    settings = dataclasses.asdict(CONFIG)
    cases: list[tuple[dict[str, Any], str]] = [  # Any: values of the wrong type on purpose
        ({"target_latency_s": 0}, "target_latency_s"),
        ({"percentile": 90}, "percentile"),
        ({"min_replicas": 0}, "min_replicas"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"max_scale_up_step": 0}, "max_scale_up_step"),
        ({"scale_down_period_s": -1}, "scale_down_period_s"),
        ({"max_target_utilization": 1.5}, "max_target_utilization"),
        ({"min_target_utilization": 0.9}, "min_target_utilization"),
        ({"saturated_scale_factor": 1.0}, "saturated_scale_factor"),
        ({"max_replicas": 2.5}, "max_replicas"),
        ({"upscale_stabilization_s": True}, "upscale_stabilization_s"),
        ({"target_latency_s": float("nan")}, "target_latency_s"),
        ({"upscale": 1}, "upscale"),
    ]
    for changes, field in cases:
        with pytest.raises(ValidationError) as caught:
            AutoscalingConfig.model_validate({**settings, **changes})
        assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_config_compiles_into_the_policy_spec() -> None:
    config = AutoscalingConfig.model_validate({"target_latency_s": 0.2, "percentile": 99})
    assert config.to_policy_config() == LatencyPolicyConfig(target_latency_s=0.2, percentile=99)
    with pytest.raises(ValidationError, match="target_latency_s"):
        AutoscalingConfig.model_validate({"percentile": 95})


def test_a_p99_policy_needs_replicas_that_report_p99() -> None:
    policy = LatencyPolicy(dataclasses.replace(CONFIG, percentile=99))
    decision = policy.decide(0.0, 2, stats(2, 1.0, 0.05))
    assert decision.estimate.latency_s == pytest.approx(0.075)
    no_p99 = ReplicaStats(p95_latency_s=0.05, request_rate_per_s=5.0, in_flight=0.5)
    with pytest.raises(ValueError, match="^percentile: 99 needs"):
        policy.decide(1.0, 2, [no_p99])

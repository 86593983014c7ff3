"""The simulator: a step load converges without oscillating, and its inputs are checked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from switchyard.server.autoscaling.latency_policy import LatencyPolicyConfig
from switchyard.server.autoscaling.sim_inputs import (
    EmpiricalServiceTime,
    LoadTrace,
    LognormalServiceTime,
    load_policy_configs,
    load_trace,
    parse_service_time,
)
from switchyard.server.autoscaling.simulator import SimulationSettings, direction_changes, simulate

STEP = LoadTrace(np.array([0.0, 60.0]), np.array([10.0, 40.0]), 720.0)
SERVICE = LognormalServiceTime(p50_s=0.05, p95_s=0.12)
CONFIG = LatencyPolicyConfig(
    target_latency_s=0.2,
    min_replicas=1,
    max_replicas=20,
    max_ongoing_requests=1,
    upscale_stabilization_s=15,
    downscale_stabilization_s=120,
)
SETTINGS = SimulationSettings(cold_start_s=20, seed=3)


def test_a_step_load_converges_without_oscillating() -> None:
    rows = simulate(STEP, SERVICE, CONFIG, SETTINGS)
    replicas = [row.replicas for row in rows]
    # Up after the step, at most one turn back down from the overshoot the backlog asked for ...
    assert max(replicas) > replicas[0] and direction_changes(replicas) <= 1
    # ... then settled for the last four minutes: no change, the p95 (over 10 s windows) under
    # its target on average and never out of the tolerance band.
    last = rows[-240:]
    assert len({row.replicas for row in last}) == 1
    assert all(row.ready_replicas == row.replicas for row in last)
    assert np.mean([row.p95_s for row in last]) < CONFIG.target_latency_s
    assert max(row.p95_s for row in last) < CONFIG.target_latency_s * (1 + CONFIG.tolerance)
    # Enough replicas for 40 requests/s of 58 ms each (2.3 busy), not many more.
    assert 3 <= last[-1].replicas <= 8


def test_the_same_seed_gives_the_same_timeline() -> None:
    first = simulate(STEP, SERVICE, CONFIG, SETTINGS)
    assert simulate(STEP, SERVICE, CONFIG, SETTINGS) == first
    other = simulate(STEP, SERVICE, CONFIG, SimulationSettings(cold_start_s=20, seed=4))
    assert [row.p95_s for row in other] != [row.p95_s for row in first]


def test_an_idle_trace_stays_at_min_replicas_without_latencies() -> None:
    idle = LoadTrace(np.array([0.0]), np.array([0.0]), 30.0)
    rows = simulate(idle, SERVICE, CONFIG, SimulationSettings(initial_replicas=3))
    assert rows[-1].replicas == 3  # down only after the downscale window
    assert all(math.isnan(row.p95_s) for row in rows)
    assert "no traffic" in rows[-1].reason


def test_service_time_models() -> None:
    rng = np.random.default_rng(0)
    samples = SERVICE.sample(rng, 200_000)
    assert np.percentile(samples, 50) == pytest.approx(0.05, rel=0.02)
    assert np.percentile(samples, 95) == pytest.approx(0.12, rel=0.02)
    assert samples.mean() == pytest.approx(SERVICE.mean_s, rel=0.02)
    assert parse_service_time("lognormal:p50_s=0.05,p95_s=0.12") == SERVICE
    assert parse_service_time("constant:0.03").sample(rng, 3).tolist() == [0.03] * 3


def test_service_time_from_measured_latencies(tmp_path: Path) -> None:
    plain = tmp_path / "latencies.txt"
    plain.write_text("# seconds\n0.01\n0.02\n0.03\n")
    assert parse_service_time(f"samples:{plain}").mean_s == pytest.approx(0.02)
    with_header = tmp_path / "latencies.csv"
    with_header.write_text("request_id,latency_s\n1,0.04\n2,0.06\n")
    model = parse_service_time(f"samples:{with_header}")
    assert isinstance(model, EmpiricalServiceTime)
    assert set(model.sample(np.random.default_rng(0), 50).tolist()) == {0.04, 0.06}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("normal:1", "expected lognormal"),
        ("lognormal:p50_s=0.1", "expected lognormal:p50_s=SECONDS,p95_s=SECONDS"),
        ("lognormal:p50_s=0.2,p95_s=0.1", "needs 0 < p50_s < p95_s"),
        ("lognormal:p50_s=0.1,p95_s=0.2,p99_s=0.3", "unknown p99_s"),
        ("constant:fast", "expected constant:SECONDS"),
        ("samples:/nonexistent/latencies.txt", "cannot read latency samples"),
    ],
)
def test_bad_service_times_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_service_time(spec)


def test_bad_samples_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latencies.txt"
    path.write_text("0.01\n-0.5\n")
    with pytest.raises(ValueError, match="not a latency in seconds > 0: '-0.5'"):
        parse_service_time(f"samples:{path}")


def test_trace_rates_hold_until_the_next_row(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("# comment\ntime_s,requests_per_s\n0,5\n10,50\n\n30,0\n")
    trace = load_trace(path)
    assert trace.end_s == 30
    assert [trace.rate_at(t) for t in (0, 9.9, 10, 29.9, 30)] == [5, 5, 50, 50, 0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("t,rps\n0,1\n1,1\n", "first line must be the header time_s,requests_per_s"),
        ("time_s,requests_per_s\n0,1\n", "needs at least two rows"),
        ("time_s,requests_per_s\n0,1\n5,lots\n", r"trace.csv:3: not numbers: 5,lots"),
        ("time_s,requests_per_s\n0,1\n5,1,2\n", r"trace.csv:3: expected 2 values"),
        ("time_s,requests_per_s\n5,1\n5,2\n", r"trace.csv:3: time_s must increase"),
        ("time_s,requests_per_s\n0,-1\n5,2\n", r"trace.csv:2: .* must be >= 0"),
    ],
)
def test_bad_traces_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_trace(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("policies: []\n", "expected a non-empty list under `policies:`"),
        ("policies: [[1]]\n", r"policies\[0\]: expected a mapping"),
        ("policies:\n  - target_latency_s: 0.1\n", r"policies\[0\]: name: required"),
        (
            "policies:\n  - {name: a, target_latency_s: 0.1}\n  - {name: a, target_latency_s: 1}\n",
            r"policies\[1\]: name: 'a' is used twice",
        ),
        (
            "policies:\n  - {name: a, target_latency_s: 0.1, max_replicas: 0}\n",
            r"policies\[0\] \(a\): max_replicas: Input should be greater than or equal to 1",
        ),
        ("policies: [\n", "not valid YAML"),
    ],
)
def test_bad_policy_files_name_the_policy_and_setting(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_policy_configs(path)

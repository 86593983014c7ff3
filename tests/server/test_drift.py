"""Drift's parts: PSI and JS distance on known values, binning, the sliding window, profiles
as files, the DriftService's sampling and judging, and `switchyard profile build`."""

from __future__ import annotations

import asyncio
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from switchyard.server.config_sections import DriftSettings
from switchyard.server.drift import ColumnBinner, DriftMonitor, SlidingCounts, js_distance, psi
from switchyard.server.drift_profile import (
    ProfileError,
    bin_counts,
    build_profile,
    find_profile,
    load_profile,
    quantile_edges,
)
from tests.server.test_cli import run_cli


def test_psi_known_values() -> None:
    assert psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(
        0.25 * (math.log(2) + math.log(1.5)), rel=1e-3
    )
    assert psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0.0)
    # An empty bin counts as epsilon: large, finite.
    assert 1 < psi(np.array([100, 0]), np.array([0, 100])) < 20


def test_js_distance_known_values() -> None:
    assert js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert js_distance(np.array([3, 3]), np.array([1, 1])) == pytest.approx(0.0)
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    expected = math.sqrt((kl_p + kl_q) / 2)
    assert js_distance(np.array([5, 5]), np.array([10, 0])) == pytest.approx(expected)


def test_bins_underflow_inner_overflow_and_nan() -> None:
    values = np.arange(100, dtype=np.float64)
    edges = quantile_edges(values, bins=4)
    assert edges[0] == 0 and edges[-1] > 99 and len(edges) == 5
    assert list(bin_counts(edges, values)) == [0, 24, 25, 25, 26, 0]
    outside = bin_counts(edges, np.array([-1.0, 1000.0, np.nan]))
    assert list(outside) == [1, 0, 0, 0, 0, 2]  # NaN lands in the overflow bin
    assert len(quantile_edges(np.array([1.0, 1.0, 2.0]))) == 3  # repeats collapse


def test_sliding_window_ages_out_slot_by_slot() -> None:
    window = SlidingCounts(n_bins=2, window_s=10.0, slots=5, now_s=0.0)
    window.add(np.array([1, 0]), 1, now_s=0.5)
    window.add(np.array([0, 2]), 2, now_s=4.5)
    assert window.totals(now_s=5.0)[1] == 3
    counts, samples = window.totals(now_s=10.5)  # the first slot came round again
    assert list(counts) == [0, 2] and samples == 2
    assert window.totals(now_s=100.0)[1] == 0  # a long pause clears everything


def test_binner_flattens_columns_at_their_offsets() -> None:
    x = np.column_stack([np.arange(100.0), np.arange(100.0) * 2])
    profile = build_profile("m", "1", {"x": x}, {"y": x[:, :1]}, bins=2)
    binner = ColumnBinner(profile.columns)
    counts, rows = binner.counts({"x": x, "y": x[:, :1]})
    assert rows == 100
    for index, column in enumerate(profile.columns):
        assert list(binner.column_counts(counts, index)) == list(column.counts)
    assert [c.name for c in profile.columns] == ["x[0]", "x[1]", "y"]


def test_monitor_judges_only_from_min_samples() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 3))
    profile = build_profile("m", "1", {"x": x}, {})
    settings = DriftSettings(min_samples=500)
    monitor = DriftMonitor(profile, settings, now_s=0.0)
    monitor.add({"x": x[:100]}, now_s=1.0)
    assert monitor.judge(now_s=1.0) == (100, [])
    shifted = rng.normal(size=(1000, 3))
    shifted[:, 2] += 2.0
    monitor.add({"x": shifted}, now_s=1.0)
    samples, results = monitor.judge(now_s=1.0)
    assert samples == 1100
    by_name = {column.name: value for column, _, value, _ in results}
    assert by_name["x[2]"] > 0.2 > max(by_name["x[0]"], by_name["x[1]"])


def test_profile_round_trip_and_bad_files(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(200, 2))
    profile = build_profile("m", "1", {"x": x}, {"y": x.sum(axis=1)})
    path = tmp_path / "model.profile.json"
    profile.save(path)
    loaded = load_profile(path)
    assert [c.name for c in loaded.columns] == ["x[0]", "x[1]", "y"]
    assert np.array_equal(loaded.inputs[0].edges, profile.inputs[0].edges)
    model = tmp_path / "model.onnx"
    assert find_profile(model, None) == path
    assert find_profile(model, tmp_path / "elsewhere.json") == tmp_path / "elsewhere.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ProfileError, match="not a profile"):
        load_profile(path)
    raw = profile.to_dict()
    raw["inputs"][0]["counts"] = [1, 2]
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match=r"inputs\[0\] \(x\[0\]\): counts must be one longer"):
        load_profile(path)
    # NaN compares false, so an edge of NaN passed the ascending check and binned garbage.
    raw = profile.to_dict()
    raw["inputs"][0]["edges"][3] = math.nan
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match="edges must ascend"):
        load_profile(path)


class _Model:
    """What DriftService reads of a loaded version (a stand-in for LoadedModel)."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


def test_service_samples_out_beyond_the_rate_and_drops_when_full() -> None:
    from switchyard.server.drift import DriftService

    async def run() -> tuple[int, int]:
        now = [0.0]
        settings = DriftSettings(max_rows_per_s=100, queue_size=2)
        service = DriftService(settings, CollectorRegistry(), lambda: {}, clock=lambda: now[0])
        model = _Model("m", "1")
        rows = {"x": np.zeros((50, 1))}
        for _ in range(4):  # 200 rows at once: two fit the bucket of 100
            service.observe(model, rows, {})  # type: ignore[arg-type]
        now[0] = 10.0  # the bucket refills; the queue (2) is full
        service.observe(model, rows, {})  # type: ignore[arg-type]
        intake = next(iter(service._intakes.values()))
        return intake.sampled_out, intake.dropped

    assert asyncio.run(run()) == (2, 1)


def test_profile_build_cli_on_feature_rows_and_on_id_pairs(
    demo_model_path: Path, tmp_path: Path
) -> None:
    from switchyard.demo.build_model import feature_definitions

    names = feature_definitions().layout("ranker").feature_names
    rng = np.random.default_rng(2)
    rows_csv = tmp_path / "rows.csv"
    with rows_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(reversed(names))  # by name, in any order
        writer.writerows(rng.normal(size=(300, len(names))).tolist())
    config = tmp_path / "switchyard.yaml"
    raw = yaml.safe_load((Path(__file__).parents[2] / "demo" / "config.yaml").read_text())
    raw["models"][0]["versions"][0]["path"] = str(demo_model_path)
    raw["features"]["store"]["seed_files"] = {
        entity: str(demo_model_path.parent / f"{entity}s.csv") for entity in ("user", "item")
    }
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "p.json"
    args = ("profile", "build", "--config", str(config), "--model", "ranker")
    result = run_cli(*args, "--data", str(rows_csv), "--out", str(out))
    assert result.returncode == 0, result.stderr
    profile = load_profile(out)
    assert profile.rows == 300 and [c.name for c in profile.inputs] == list(names)
    assert [c.name for c in profile.outputs] == ["logit", "score"]

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\n" + "".join(f"u{i},i{i % 500}\n" for i in range(400)))
    result = run_cli(*args, "--data", str(pairs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert load_profile(out).rows == 400

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = run_cli(*args, "--data", str(bad), "--out", str(out))
    assert result.returncode == 2
    assert "needs its feature columns" in result.stderr and "user_id, item_id" in result.stderr
    result = run_cli(*args, "--version", "9", "--data", str(pairs))
    assert result.returncode == 2 and "has no version '9' (versions: 1)" in result.stderr

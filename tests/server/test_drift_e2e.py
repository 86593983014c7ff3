"""Online drift through a real gateway process: traffic drawn from the training rows keeps
every PSI under the threshold; the same traffic with one feature shifted drifts exactly
that feature; shadows get a score PSI against their primary. No timing asserts: each test
polls /metrics until the window has drift.min_samples rows."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from loadtests.gateway_process import Gateway, scrape_metrics, start_gateway
from switchyard.demo.build_model import (
    MODEL_NAME,
    build,
    feature_definitions,
    generate_data,
    training_matrix,
)
from switchyard.server.drift_profile import default_profile_path
from switchyard.server.features.files import read_table
from tests.server.test_workers import REDIS_URL, workers_config

MIN_SAMPLES = 1000
THRESHOLD = 0.2
SHIFTED_COLUMN = 1  # user.tenure
ROWS_PER_REQUEST = 100


@pytest.fixture(scope="module")
def training_rows(demo_model_path: Path) -> np.ndarray:
    """The rows the demo ranker's profile was built from (the build's data, seed 7)."""
    definitions = feature_definitions()
    folder = demo_model_path.parent
    tables = {
        "user": read_table(folder / "users.csv", definitions.entity("user")),
        "item": read_table(folder / "items.csv", definitions.entity("item")),
    }
    x = training_matrix(generate_data(np.random.default_rng(7)), tables)
    return x[: int(0.8 * len(x))]


@pytest.fixture(scope="module")
def drift_gateway(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("drift")
    profile = default_profile_path(demo_model_path)
    assert profile.is_file(), "the demo build writes the ranker's profile"
    other = build(workdir / "other", seed=8)  # a different model: its scores differ
    default_profile_path(other).unlink()  # and it has no profile
    version = {"path": str(demo_model_path), "profile": str(profile)}
    config = {
        "models": [
            {
                # Version 1 gets training-like traffic, version 2 the shifted traffic: two
                # windows, each against the same profile.
                "name": MODEL_NAME,
                "versions": [{"version": "1", **version}, {"version": "2", **version}],
                "runtime_options": {"intra_op_threads": 1},
            },
            {"name": "same", "versions": [{"version": "1", **version}]},
            {"name": "other", "versions": [{"version": "1", "path": str(other)}]},
        ],
        "endpoints": [
            {
                "name": "mirrored",
                "variants": {
                    "live": {"model": MODEL_NAME, "version": "1"},
                    "same": {"model": "same"},
                    "other": {"model": "other"},
                },
                "weights": {"live": 1},
                "shadow": {"variants": ["same", "other"], "fraction": 1.0, "max_concurrency": 64},
            }
        ],
        "drift": {
            "window_s": 3600,  # nothing ages out during the test
            "export_interval_s": 0.2,
            "min_samples": MIN_SAMPLES,
            "psi_threshold": THRESHOLD,
            "max_rows_per_s": 1e9,
        },
    }
    running = start_gateway(config, workdir)
    yield running
    assert running.stop() == 0, running.log()


def infer(gateway: Gateway, path: str, rows: np.ndarray) -> None:
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": list(rows.shape),
             "data": rows.ravel().tolist()}
        ]
    }  # fmt: skip
    request = urllib.request.Request(
        f"http://{gateway.http_url}/v2/{path}/infer",
        json.dumps(body).encode(),
        {"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def samples(text: str, name: str, **labels: str) -> dict[str, float]:
    """The `feature` label to value of every sample of `name` with `labels`."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            feature = re.search(r'feature="([^"]*)"', line)
            found[feature.group(1) if feature else ""] = float(line.rsplit(" ", 1)[1])
    return found


def wait_for(gateway: Gateway, name: str, **labels: str) -> str:
    """The metrics text once `name` with `labels` shows (polled, 60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = scrape_metrics(gateway)
        if samples(text, name, **labels):
            return text
        time.sleep(0.2)
    raise AssertionError(f"no {name} {labels} in:\n{scrape_metrics(gateway)}")


def send(gateway: Gateway, path: str, rows: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    picked = rows[np.random.default_rng(seed).integers(0, len(rows), n_rows)]
    for start in range(0, n_rows, ROWS_PER_REQUEST):
        infer(gateway, path, picked[start : start + ROWS_PER_REQUEST])
    return picked


def test_training_traffic_stays_under_the_threshold(
    drift_gateway: Gateway, training_rows: np.ndarray
) -> None:
    send(drift_gateway, "models/ranker/versions/1", training_rows, 3000, seed=1)
    labels = {"model": "ranker", "version": "1"}
    text = wait_for(drift_gateway, "switchyard_drift_psi", **labels, kind="input")
    psi = samples(text, "switchyard_drift_psi", **labels, kind="input")
    assert len(psi) == 16 and "user.tenure" in psi
    assert max(psi.values()) < THRESHOLD, psi
    js = samples(text, "switchyard_drift_js_distance", **labels, kind="input")
    assert all(0 <= value < 0.2 for value in js.values()), js
    assert samples(text, "switchyard_drift_features_drifted", **labels) == {"": 0.0}
    assert samples(text, "switchyard_drift_window_samples", **labels)[""] >= MIN_SAMPLES
    assert set(samples(text, "switchyard_drift_psi", **labels, kind="output")) == {
        "logit",
        "score",
    }


def test_one_shifted_feature_drifts_alone(
    drift_gateway: Gateway, training_rows: np.ndarray
) -> None:
    shifted = training_rows.copy()
    shifted[:, SHIFTED_COLUMN] += 3.0 * shifted[:, SHIFTED_COLUMN].std()
    send(drift_gateway, "models/ranker/versions/2", shifted, 3000, seed=2)
    labels = {"model": "ranker", "version": "2"}
    text = wait_for(drift_gateway, "switchyard_drift_psi", **labels, kind="input")
    psi = samples(text, "switchyard_drift_psi", **labels, kind="input")
    assert psi.pop("user.tenure") > THRESHOLD
    assert max(psi.values()) < THRESHOLD, psi
    assert samples(text, "switchyard_drift_features_drifted", **labels) == {"": 1.0}


def test_shadow_score_psi_against_the_primary(
    drift_gateway: Gateway, training_rows: np.ndarray
) -> None:
    send(drift_gateway, "models/mirrored", training_rows, 2000, seed=3)
    name = "switchyard_shadow_score_psi"
    wait_for(drift_gateway, name, endpoint="mirrored", shadow="same")
    text = wait_for(drift_gateway, name, endpoint="mirrored", shadow="other")
    same = samples(text, name, endpoint="mirrored", shadow="same")[""]
    other = samples(text, name, endpoint="mirrored", shadow="other")[""]
    assert same < 1e-6  # the same model scores the same rows alike
    assert other > same


def test_a_version_without_a_profile_has_no_drift_series(
    drift_gateway: Gateway, training_rows: np.ndarray
) -> None:
    send(drift_gateway, "models/other", training_rows, 200, seed=4)
    text = wait_for(drift_gateway, "switchyard_drift_requests_total", model="other")
    assert not samples(text, "switchyard_drift_window_samples", model="other")
    assert "no reference profile for other:1" in drift_gateway.log()


def test_drift_series_come_through_the_supervisor_with_workers(
    demo_model_path: Path, training_rows: np.ndarray, tmp_path: Path
) -> None:
    """server.workers: 2: each worker judges its own window; the supervisor's metrics port
    shows the worst worker's PSI and drifted count, and every worker's rows."""
    prefix = f"switchyard-drift:{uuid.uuid4().hex[:8]}:"
    config = {
        **workers_config(demo_model_path, prefix),
        "drift": {"window_s": 3600, "export_interval_s": 0.2, "min_samples": 500},
    }
    gateway = start_gateway(config, tmp_path)
    try:
        shifted = training_rows.copy()
        shifted[:, SHIFTED_COLUMN] += 3.0 * shifted[:, SHIFTED_COLUMN].std()
        send(gateway, "models/ranker", shifted, 3000, seed=5)
        labels = {"model": "ranker", "version": "1"}
        text = wait_for(gateway, "switchyard_drift_psi", **labels, feature="user.tenure")
        assert samples(text, "switchyard_drift_psi", **labels, kind="input")["user.tenure"] > 0.2
        assert samples(text, "switchyard_drift_features_drifted", **labels) == {"": 1.0}
        assert 500 <= samples(text, "switchyard_drift_window_samples", **labels)[""] <= 3000
    finally:
        assert gateway.stop() == 0, gateway.log()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

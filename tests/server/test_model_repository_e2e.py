"""Models shipped to a running gateway: Triton's repository API through tritonclient (gRPC and
HTTP), a Triton-layout model repository with config.pbtxt, refused loads, and swaps under
steady traffic without a failed request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import (
    Gateway,
    free_port,
    http_ok,
    metric_sum,
    scrape_metrics,
    start_gateway,
)
from switchyard.demo.build_model import build
from tests.server.model_repository_support import (
    AUTH,
    ROWS,
    TOKEN,
    features_input,
    place_version,
    repository_config,
)

RANKER_CONFIG = """
max_batch_size: 4
dynamic_batching { max_queue_delay_microseconds: 2000 preferred_batch_size: [2] }
instance_group [ { count: 2 kind: KIND_CPU } ]
model_warmup [ { name: "w" batch_size: 1 } ]
"""


@pytest.fixture(scope="module")
def rankers(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    workdir = tmp_path_factory.mktemp("rankers")
    return {"v1": demo_model_path, "v2": build(workdir / "v2", seed=8)}


def scores(path: Path, rows: np.ndarray = ROWS) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"features": rows})[0])


@pytest.fixture
def repository(rankers: dict[str, Path], tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    place_version(root, "ranker", 1, rankers["v1"])
    (root / "ranker" / "config.pbtxt").write_text(RANKER_CONFIG)
    place_version(root, "spare", 1, rankers["v2"])
    return root


@pytest.fixture
def gateway(repository: Path, tmp_path: Path) -> Iterator[Gateway]:
    config = repository_config(repository, load=["ranker"])  # spare starts unloaded
    running = start_gateway(config, tmp_path)
    yield running
    assert running.stop() == 0, running.log()


def index(client: triton_grpc.InferenceServerClient) -> dict[str, tuple[str, str, str]]:
    listed = client.get_model_repository_index(as_json=True).get("models", [])
    return {m["name"]: (m.get("version", ""), m["state"], m.get("reason", "")) for m in listed}


def test_tritonclient_lists_loads_and_unloads_over_grpc_and_http(
    gateway: Gateway, rankers: dict[str, Path]
) -> None:
    grpc_client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    http_client = triton_http.InferenceServerClient(gateway.http_url)
    assert index(grpc_client) == {
        "ranker": ("1", "READY", ""),
        "spare": ("", "UNAVAILABLE", "unloaded"),
    }
    assert http_client.get_model_repository_index() == [
        {"name": "ranker", "version": "1", "state": "READY"},
        {"name": "spare", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"},
    ]
    with pytest.raises(InferenceServerException, match="needs 'Authorization: Bearer"):
        grpc_client.load_model("spare")
    with pytest.raises(InferenceServerException, match="not valid"):
        http_client.load_model("spare", headers={"authorization": "Bearer wrong"})

    grpc_client.load_model("spare", headers=AUTH)
    assert index(grpc_client)["spare"] == ("1", "READY", "")
    result = grpc_client.infer("spare", [features_input()])
    np.testing.assert_allclose(result.as_numpy("score"), scores(rankers["v2"]), rtol=1e-6)
    http_client.unload_model("spare", headers=AUTH)
    assert index(grpc_client)["spare"] == ("", "UNAVAILABLE", "unloaded")
    with pytest.raises(
        InferenceServerException, match="no model or endpoint named 'spare'"
    ) as refused:
        grpc_client.infer("spare", [features_input()])
    assert refused.value.status() == "StatusCode.NOT_FOUND"

    http_client.load_model("spare", headers=AUTH)
    assert http_client.is_model_ready("spare")
    grpc_client.unload_model("spare", headers=AUTH)
    assert not http_client.is_model_ready("ranker", "2")  # never loaded: not ready

    trail = admin_audit(gateway)
    assert [(e["identity"], e["action"]) for e in trail] == [
        ("admin (for mlengineer)", "load"),
        ("admin (for mlengineer)", "unload"),
        ("admin (for mlengineer)", "load"),
        ("admin (for mlengineer)", "unload"),
    ]
    text = scrape_metrics(gateway)
    assert metric_sum(text, "switchyard_model_loads_total", model="spare", result="loaded") == 2
    assert metric_sum(text, "switchyard_model_loads_total", model="spare", result="unloaded") == 2
    assert metric_sum(text, "switchyard_model_ready", model="ranker", version="1") == 1
    assert metric_sum(text, "switchyard_model_loaded_bytes", model="ranker", version="1") == (
        rankers["v1"].stat().st_size
    )


def test_bad_repository_calls_get_clear_errors(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    with pytest.raises(InferenceServerException, match="no model directory") as missing:
        client.load_model("nope", headers=AUTH)
    assert missing.value.status() == "StatusCode.FAILED_PRECONDITION"
    with pytest.raises(InferenceServerException, match="model files sent with a load"):
        client.load_model("spare", headers=AUTH, files={"file:1/model.onnx": b"\0"})
    with pytest.raises(InferenceServerException, match="is not loaded"):
        client.unload_model("spare", headers=AUTH)
    with pytest.raises(InferenceServerException, match="config JSON"):
        client.load_model("spare", headers=AUTH, config="{not json")
    status, body = post(gateway, "/v2/repository/models/spare/load", b"[1]")
    assert status == 400 and "must be a JSON object" in body["error"]


def test_config_pbtxt_batching_is_reported_and_applied(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    config = client.get_model_config("ranker", as_json=True)["config"]
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [2],
        "max_queue_delay_microseconds": "2000",
    }
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert [t["name"] for t in config["input"]] == ["features"]
    assert "model_warmup is not supported by Switchyard; ignored" in gateway.log()
    # Ten rows run as batches of at most four.
    rows = np.random.default_rng(1).normal(size=(10, 16)).astype(np.float32)
    client.infer("ranker", [features_input(rows)])
    text = scrape_metrics(gateway)
    labels = {"model": "ranker", "version": "1"}
    assert metric_sum(text, "switchyard_batch_size_rows_sum", **labels) == 10
    assert metric_sum(text, "switchyard_batch_size_rows_bucket", le="4.0", **labels) == (
        metric_sum(text, "switchyard_batch_size_rows_count", **labels)
    )


def test_a_corrupt_version_is_refused_while_the_served_one_stays(
    gateway: Gateway, repository: Path, rankers: dict[str, Path]
) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    corrupt = repository / "ranker" / "2" / "model.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"this is not an ONNX model")
    with pytest.raises(InferenceServerException, match="ranker") as refused:
        client.load_model("ranker", headers=AUTH)
    assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert index(client)["ranker"] == ("1", "READY", "")
    result = client.infer("ranker", [features_input()])
    assert result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("score"), scores(rankers["v1"]), rtol=1e-6)
    refusal = "model ranker: load by admin (for mlengineer) refused, what is served stays"
    assert refusal in gateway.log()

    place_version(repository, "ranker", 2, rankers["v2"])  # fixed: now it loads
    client.load_model("ranker", headers=AUTH)
    assert index(client)["ranker"] == ("2", "READY", "")  # latest 1: version 1 retired
    result = client.infer("ranker", [features_input()])
    assert result.get_response().model_version == "2"
    np.testing.assert_allclose(result.as_numpy("score"), scores(rankers["v2"]), rtol=1e-6)
    text = scrape_metrics(gateway)
    assert metric_sum(text, "switchyard_model_ready", model="ranker", version="1") == 0
    assert metric_sum(text, "switchyard_model_loads_total", model="ranker", result="failed") == 1


def admin_audit(gateway: Gateway) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{gateway.http_url}/admin/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request) as response:
        entries: list[dict[str, Any]] = json.load(response)["entries"]
    return entries


def post(gateway: Gateway, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{gateway.http_url}{path}",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def serve_with_flags(tmp_path: Path, *flags: str) -> Gateway:
    """`switchyard serve` with Triton's repository flags and no config file."""
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    env = {**os.environ, **{f"SWITCHYARD_{k.upper()}": str(v) for k, v in ports.items()}}
    env["SWITCHYARD_HOST"] = "127.0.0.1"
    log_path = tmp_path / "flags.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "switchyard.server.cli", "serve", *flags],
        cwd=tmp_path,  # the repository path is relative to where the command runs
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    gateway = Gateway(process, log_path=log_path, **ports)
    deadline = time.monotonic() + 60
    while not http_ok(f"http://{gateway.http_url}/v2/health/ready"):
        assert process.poll() is None and time.monotonic() < deadline, gateway.log()
        time.sleep(0.1)
    return gateway


@pytest.mark.parametrize(
    ("flags", "ready"),
    [
        ((), {"ranker": "1", "spare": "1"}),
        (("--model-control-mode", "explicit"), {}),  # Triton's explicit: none at start
        (("--model-control-mode", "explicit", "--load-model", "spare"), {"spare": "1"}),
        (("--model-control-mode", "none"), {"ranker": "1", "spare": "1"}),
    ],
)
def test_tritons_repository_flags_choose_what_loads(
    repository: Path, tmp_path: Path, flags: tuple[str, ...], ready: dict[str, str]
) -> None:
    relative = repository.relative_to(tmp_path)
    gateway = serve_with_flags(tmp_path, "--model-repository", str(relative), *flags)
    try:
        served = index(triton_grpc.InferenceServerClient(gateway.grpc_url))
        assert {name: v for name, (v, state, _) in served.items() if state == "READY"} == ready
        assert set(served) == {"ranker", "spare"}
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_load_model_naming_an_absent_model_stops_the_start(repository: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", "serve", "--model-repository",
         str(repository), "--model-control-mode", "explicit", "--load-model", "nope"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--load-model names models not in" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.stderr

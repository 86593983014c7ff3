"""Triton variants through the real gateway, against a real Triton server on CPU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.triton_process import TritonProcess, start_triton


@pytest.fixture(scope="module")
def triton(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonProcess]:
    server = start_triton(demo_model_path, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


def config(model_path: Path, triton_url: str) -> dict[str, Any]:
    triton_options = {"url": triton_url, "model_name": "ranker", "timeout_s": 2.0,
                      "breaker_failures": 2, "breaker_open_s": 0.5}  # fmt: skip
    return {
        "models": [
            {"name": "ranker", "versions": [{"version": "1", "path": str(model_path)}]},
            {
                "name": "ranker_triton",
                "runtime": "triton",
                "versions": [{"version": "1"}],
                "triton": triton_options,
            },
            {
                "name": "ranker_triton_batching",
                "runtime": "triton",
                "versions": [{"version": "1"}],
                "triton": {**triton_options, "batching": "triton"},
            },
        ],
        "endpoints": [
            {
                "name": "mirrored",
                "variants": {
                    "local": {"model": "ranker", "version": "1"},
                    "triton": {"model": "ranker_triton", "version": "1"},
                },
                "weights": {"local": 1},
                # Room for all ten shadows at once: a slow machine must not drop one.
                "shadow": {"variants": ["triton"], "fraction": 1.0, "max_concurrency": 16},
            },
            {
                "name": "split",
                "variants": {
                    "local": {"model": "ranker", "version": "1"},
                    "triton": {"model": "ranker_triton", "version": "1"},
                },
                "routing_key": {"parameter": "user_id"},
            },
        ],
    }


@pytest.fixture(scope="module")
def gateway(
    demo_model_path: Path, triton: TritonProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    running = start_gateway(config(demo_model_path, triton.grpc_url), workdir)
    yield running
    running.stop()


def features_input(rows: np.ndarray) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_metadata_and_config_come_from_triton(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    local = client.get_model_metadata("ranker")
    remote = client.get_model_metadata("ranker_triton")
    assert remote.platform.startswith("triton:")
    assert [(t.name, t.datatype, list(t.shape)) for t in remote.inputs] == [
        (t.name, t.datatype, list(t.shape)) for t in local.inputs
    ]
    assert sorted((t.name, t.datatype, list(t.shape)) for t in remote.outputs) == sorted(
        (t.name, t.datatype, list(t.shape)) for t in local.outputs
    )
    assert client.get_model_config("ranker_triton").config.max_batch_size == 64  # Triton's
    assert client.get_model_config("ranker_triton_batching").config.max_batch_size == 0
    assert client.is_model_ready("ranker_triton")


@pytest.mark.parametrize("model", ["ranker_triton", "ranker_triton_batching"])
def test_outputs_equal_the_local_onnxruntime_variant(
    gateway: Gateway, direct_session: ort.InferenceSession, model: str
) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    for rows in (1, 7, 100):
        x = np.random.default_rng(rows).normal(size=(rows, 16)).astype(np.float32)
        result = client.infer(model, [features_input(x)])
        expected_logit, expected_score = direct_session.run(["logit", "score"], {"features": x})
        np.testing.assert_allclose(result.as_numpy("score"), expected_score, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(result.as_numpy("logit"), expected_logit, rtol=1e-6, atol=1e-6)


def test_an_endpoint_splits_between_onnxruntime_and_triton(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    x = np.random.default_rng(3).normal(size=(4, 16)).astype(np.float32)
    served: dict[str, np.ndarray] = {}  # variant -> the scores it answered
    for user in range(40):
        result = client.infer("split", [features_input(x)], parameters={"user_id": f"u{user}"})
        variant = result.get_response().parameters["switchyard_variant"].string_param
        served.setdefault(variant, result.as_numpy("score"))
    assert set(served) == {"local", "triton"}
    np.testing.assert_allclose(served["local"], served["triton"], rtol=1e-6, atol=1e-7)


def test_a_triton_shadow_behind_an_onnx_primary_is_compared(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    x = np.random.default_rng(9).normal(size=(20, 16)).astype(np.float32)
    for _ in range(10):
        result = client.infer("mirrored", [features_input(x)])
        assert result.get_response().parameters["switchyard_variant"].string_param == "local"
    labels = {"endpoint": "mirrored", "variant": "triton"}
    deadline = time.monotonic() + 10
    while metric_sum(scrape_metrics(gateway), "switchyard_shadow_requests_total", **labels) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    text = scrape_metrics(gateway)
    outcomes = [line for line in text.splitlines() if line.startswith("switchyard_shadow_req")]
    ok = metric_sum(text, "switchyard_shadow_requests_total", outcome="ok", **labels)
    assert ok == 10, outcomes
    # Same model on both sides: agreement within float rounding, the same top items.
    assert metric_sum(text, "switchyard_shadow_max_abs_diff_bucket", le="1e-06", **labels) == 10
    assert metric_sum(text, "switchyard_shadow_top_k_overlap_bucket", le="0.99", **labels) == 0
    assert metric_sum(text, "switchyard_shadow_top_k_overlap_count", **labels) == 10


def test_triton_killed_opens_the_breaker_then_recovers(
    gateway: Gateway, triton: TritonProcess
) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    x = np.ones((2, 16), dtype=np.float32)
    client.infer("ranker_triton", [features_input(x)])
    triton.kill()
    codes = []
    for _ in range(6):
        with pytest.raises(InferenceServerException) as error:
            client.infer("ranker_triton", [features_input(x)])
        codes.append(error.value.status())
        messages = error.value.message()
    assert set(codes) == {"StatusCode.UNAVAILABLE"}
    assert "circuit open" in messages  # later calls fail fast without trying Triton
    labels = {"model": "ranker_triton", "version": "1"}
    assert metric_sum(scrape_metrics(gateway), "switchyard_circuit_state", **labels) == 2
    assert not client.is_model_ready("ranker_triton")
    # The local variant is unaffected.
    assert client.infer("ranker", [features_input(x)]).as_numpy("score").shape == (2, 1)

    triton.restart()
    deadline = time.monotonic() + 30
    while True:
        try:
            result = client.infer("ranker_triton", [features_input(x)])
            break
        except InferenceServerException:
            assert time.monotonic() < deadline, "no recovery within 30 s of Triton's restart"
            time.sleep(0.2)
    assert result.as_numpy("score").shape == (2, 1)
    assert metric_sum(scrape_metrics(gateway), "switchyard_circuit_state", **labels) == 0
    assert client.is_model_ready("ranker_triton")

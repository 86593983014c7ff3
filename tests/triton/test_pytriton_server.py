"""A real Triton Inference Server (PyTriton, CPU) serving the demo model, checked with the real
tritonclient.grpc and tritonclient.http clients against ONNX Runtime called directly."""

from __future__ import annotations

import queue
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from loadtests.triton_process import TritonProcess, start_triton

MODEL = "ranker"


@pytest.fixture(scope="module")
def triton(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonProcess]:
    server = start_triton(demo_model_path, tmp_path_factory.mktemp("triton"))
    yield server
    assert server.stop() == 0, server.log()


def grpc_infer(url: str, features: np.ndarray) -> dict[str, np.ndarray]:
    with triton_grpc.InferenceServerClient(url) as client:
        infer_input = triton_grpc.InferInput("features", list(features.shape), "FP32")
        infer_input.set_data_from_numpy(features)
        outputs = [triton_grpc.InferRequestedOutput(name) for name in ("logit", "score")]
        result = client.infer(MODEL, [infer_input], outputs=outputs)
        return {name: result.as_numpy(name) for name in ("logit", "score")}


def http_infer(url: str, features: np.ndarray) -> dict[str, np.ndarray]:
    with triton_http.InferenceServerClient(url) as client:
        infer_input = triton_http.InferInput("features", list(features.shape), "FP32")
        infer_input.set_data_from_numpy(features, binary_data=True)
        outputs = [
            triton_http.InferRequestedOutput(name, binary_data=True) for name in ("logit", "score")
        ]
        result = client.infer(MODEL, [infer_input], outputs=outputs)
        return {name: result.as_numpy(name) for name in ("logit", "score")}


def assert_matches_direct(
    served: dict[str, np.ndarray], session: ort.InferenceSession, features: np.ndarray
) -> None:
    # Bit-identical today (same onnxruntime release in both venvs); the tolerance only allows
    # for the server's 1-thread session summing in another order after an upgrade.
    logit, score = session.run(["logit", "score"], {"features": features})
    for name, expected in (("logit", logit), ("score", score)):
        assert served[name].dtype == np.float32
        assert served[name].shape == (len(features), 1)
        np.testing.assert_allclose(served[name], expected, rtol=1e-6, atol=1e-7, err_msg=name)


def test_server_and_model_ready(triton: TritonProcess) -> None:
    with triton_grpc.InferenceServerClient(triton.grpc_url) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
    with triton_http.InferenceServerClient(triton.http_url) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)


def test_model_metadata_and_config(triton: TritonProcess) -> None:
    expected_inputs = [("features", "FP32", [-1, 16])]
    expected_outputs = [("logit", "FP32", [-1, 1]), ("score", "FP32", [-1, 1])]

    with triton_grpc.InferenceServerClient(triton.grpc_url) as client:
        metadata = client.get_model_metadata(MODEL)
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == expected_inputs
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == expected_outputs
        config = client.get_model_config(MODEL).config
        assert config.max_batch_size == 64
        assert config.HasField("dynamic_batching")

    with triton_http.InferenceServerClient(triton.http_url) as client:
        metadata = client.get_model_metadata(MODEL)
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == (
            expected_inputs
        )
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == (
            expected_outputs
        )
        assert client.get_model_config(MODEL)["max_batch_size"] == 64


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_inference_matches_onnxruntime(
    triton: TritonProcess, direct_session: ort.InferenceSession, batch_size: int
) -> None:
    features = np.random.default_rng(batch_size).normal(size=(batch_size, 16)).astype(np.float32)
    assert_matches_direct(grpc_infer(triton.grpc_url, features), direct_session, features)
    assert_matches_direct(http_infer(triton.http_url, features), direct_session, features)


def test_concurrent_requests_are_batched_and_split_back(
    triton: TritonProcess, direct_session: ort.InferenceSession
) -> None:
    """Requests in flight together may share one model call; each gets its own rows back."""
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(n, 16)).astype(np.float32) for n in (1, 2, 3, 5, 8, 13)]
    with triton_grpc.InferenceServerClient(triton.grpc_url) as client:
        pending: list[tuple[np.ndarray, queue.Queue[tuple[Any, Any]]]] = []
        for features in batches:
            infer_input = triton_grpc.InferInput("features", list(features.shape), "FP32")
            infer_input.set_data_from_numpy(features)
            done: queue.Queue[tuple[Any, Any]] = queue.Queue()
            client.async_infer(
                MODEL, [infer_input], callback=lambda result, error, q=done: q.put((result, error))
            )
            pending.append((features, done))
        for features, done in pending:
            result, error = done.get(timeout=30)
            assert error is None, error
            served = {name: result.as_numpy(name) for name in ("logit", "score")}
            assert_matches_direct(served, direct_session, features)


@pytest.fixture
def crashable_triton(demo_model_path: Path, tmp_path: Path) -> Iterator[TritonProcess]:
    """A server of the test's own, as the test kills it."""
    server = start_triton(demo_model_path, tmp_path)
    yield server
    assert server.stop() == 0, server.log()


def test_kill_and_restart_on_same_ports(
    crashable_triton: TritonProcess, direct_session: ort.InferenceSession
) -> None:
    server = crashable_triton
    features = np.random.default_rng(11).normal(size=(4, 16)).astype(np.float32)
    assert_matches_direct(grpc_infer(server.grpc_url, features), direct_session, features)
    ports = (server.http_port, server.grpc_port, server.metrics_port)
    # PyTriton's process leads the group; comm names are cut to 15 characters.
    assert {"tritonserver", "triton_python_b"} <= set(server.live_processes().values())

    server.kill()
    assert not server.is_running()
    # The SIGKILL reached tritonserver and the backend stub too, not only PyTriton's process:
    # none of the group is left, and nothing listens on the ports any more.
    assert server.live_processes() == {}
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    server.restart()
    assert (server.http_port, server.grpc_port, server.metrics_port) == ports
    assert server.starts == 2
    assert_matches_direct(grpc_infer(server.grpc_url, features), direct_session, features)
    assert_matches_direct(http_infer(server.http_url, features), direct_session, features)

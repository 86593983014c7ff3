"""triton.tls: the gateway talks to a real Triton over gRPC with mutual TLS (tritonserver
--grpc-use-ssl-mutual); a Triton certificate of another CA fails the load, clearly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc

from loadtests.certificates import TestCA
from loadtests.gateway_process import Gateway, start_gateway
from loadtests.triton_process import TritonGrpcTls, TritonProcess, start_triton
from switchyard.runtimes.errors import ModelLoadError
from switchyard.runtimes.triton_runtime import TritonModel, TritonOptions

ROWS = np.random.default_rng(11).normal(size=(3, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def triton(
    demo_model_path: Path, ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonProcess]:
    tls = TritonGrpcTls(ca.issue("triton"), ca.ca_file, mutual=True)
    server = start_triton(demo_model_path, tmp_path_factory.mktemp("triton"), grpc_tls=tls)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    triton: TritonProcess, ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    client = ca.issue("gateway")
    tls = {"ca_file": str(ca.ca_file), "cert_file": str(client.cert_file),
           "key_file": str(client.key_file)}  # fmt: skip
    config = {
        "models": [
            {
                "name": "ranker_triton",
                "runtime": "triton",
                "versions": [{"version": "1"}],
                "triton": {"url": triton.grpc_url, "model_name": "ranker", "tls": tls},
            }
        ]
    }
    running = start_gateway(config, tmp_path_factory.mktemp("gateway"))
    yield running
    running.stop()


def test_inference_goes_to_triton_over_mutual_tls(gateway: Gateway, demo_model_path: Path) -> None:
    tensor = triton_grpc.InferInput("features", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = triton_grpc.InferenceServerClient(gateway.grpc_url).infer("ranker_triton", [tensor])
    session = ort.InferenceSession(str(demo_model_path), providers=["CPUExecutionProvider"])
    expected = np.asarray(session.run(["score"], {"features": ROWS})[0])
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5)


def test_plaintext_and_another_ca_are_refused_at_load(
    triton: TritonProcess, ca: TestCA, tmp_path: Path
) -> None:
    other = TestCA(tmp_path, "other CA")
    client = ca.issue("gateway-2")
    for ca_file in (other.ca_file, None):
        options = TritonOptions(
            url=triton.grpc_url,
            model_name="ranker",
            connect_timeout_s=2.0,
            tls_ca_file=ca_file,
            tls_cert_file=client.cert_file,
            tls_key_file=client.key_file,
        )
        with pytest.raises(ModelLoadError, match="did not answer within 2.0 s"):
            TritonModel(options, "ranker_triton").load()


def test_an_unreadable_certificate_fails_the_load_naming_the_key(tmp_path: Path) -> None:
    options = TritonOptions(
        url="127.0.0.1:1", model_name="ranker", tls_ca_file=tmp_path / "missing-ca.pem"
    )
    with pytest.raises(ModelLoadError, match=r"cannot read tls.ca_file .*missing-ca.pem"):
        TritonModel(options, "ranker_triton").load()

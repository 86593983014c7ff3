"""Nothing sensitive reaches clients or the info log, through a real gateway: a failed model
load answers without the server's absolute paths, and the log of requests that carry a
token and tensor values holds neither. The admin token is read from a file (from_file)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, start_gateway
from loadtests.recommend_setup import demo_features, gateway_config
from switchyard.demo.paths import artifacts_dir
from tests.server.model_repository_support import features_input, place_version

TOKEN = "leak-test-admin-token-9b1e47"
AUTH = {"authorization": f"Bearer {TOKEN}", "x-switchyard-actor": "mlengineer"}
# Values no log line would hold by chance.
ROWS = np.full((2, 16), 12345.678, np.float32)


@pytest.fixture(scope="module")
def gateway(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("leaks")
    (workdir / "admin-token").write_text(TOKEN + "\n")
    repository = workdir / "repository"
    place_version(repository, "spare", 1, demo_model_path)
    seeds = {"user": str(artifacts_dir() / "users.csv"), "item": str(artifacts_dir() / "items.csv")}
    config = {
        **gateway_config(
            demo_model_path, demo_features("", {"kind": "memory", "seed_files": seeds})
        ),
        "server": {"log_level": "info"},
        "admin": {"token": {"from_file": "admin-token"}},
        "model_repository": {"path": str(repository), "load": []},
    }
    running = start_gateway(config, workdir)
    yield running
    assert running.stop() == 0, running.log()


def rest(gateway: Gateway, method: str, path: str, body: object, token: bool) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
    connection.request(method, path, body=json.dumps(body), headers=headers)
    response = connection.getresponse()
    return response.status, response.read().decode()


def test_a_broken_model_load_answers_without_absolute_paths(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    repository = gateway.log_path.parent / "repository"
    corrupt = repository / "spare" / "2" / "model.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"this is not an ONNX model")
    try:
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("spare", headers=AUTH)
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        message = refused.value.message() or ""
        assert "<model repository>/spare/2/model.onnx" in message, message
        assert str(repository) not in message and "/tmp" not in message, message
        status, body = rest(gateway, "POST", "/v2/repository/models/spare/load", {}, token=True)
        assert status == 400 and "<model repository>/spare" in body, body
        assert str(repository) not in body and "Traceback" not in body, body
        # The server's own log keeps the whole path, for whoever runs it.
        assert str(corrupt) in gateway.log()
    finally:
        corrupt.unlink()
        corrupt.parent.rmdir()


def test_the_info_log_holds_no_token_and_no_tensor_values(gateway: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    result = client.infer("ranker", [features_input(ROWS)], headers=AUTH)
    assert result.as_numpy("score").shape[0] == 2
    status, body = rest(gateway, "GET", "/admin/v1/endpoints", None, token=True)
    assert status == 200, body
    status, _ = rest(gateway, "GET", "/admin/v1/endpoints", None, token=False)
    assert status == 401
    recommend = {"endpoint": "recs", "user_id": "u42", "candidate_ids": ["i1", "i2", "i3"], "k": 2}
    status, answer = rest(gateway, "POST", "/v1/recommend", recommend, token=False)
    assert status == 200, answer
    client.load_model("spare", headers=AUTH)  # an admin change, logged with its actor
    log = gateway.log()
    assert "model spare" in log or "spare" in log  # the log did record the requests' work
    assert TOKEN not in log and "Bearer" not in log
    assert "12345.678" not in log and "12345.7" not in log

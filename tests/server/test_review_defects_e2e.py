"""Defects a code review found, through the real gateway: a scalar-input model, a Recommend
whose score output the model lacks, shadows that time out, failed routed requests and an
HTTP 415 in the metrics, and start-up refusals that are config errors, not tracebacks."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml

from loadtests.gateway_process import REPO_ROOT, Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.recommend_setup import demo_features
from loadtests.slow_model import build_slow_model
from switchyard.protos import recommend_pb2 as recommend_pb
from switchyard.protos import recommend_pb2_grpc as recommend_grpc
from switchyard.server.error_status import INTERNAL_ERROR_MESSAGE
from tests.edge_models import build_scalar_model, build_warmup_failing_model

ROW = [0.5] * 16
SHADOW_TIMEOUT_S = 0.3


@pytest.fixture(scope="module")
def model_files(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("edge_models")
    return {
        "ranker": str(demo_model_path),
        "scalar": str(build_scalar_model(workdir / "scalar.onnx")),
        "x_input": str(build_slow_model(workdir / "x_input.onnx", work_dim=8)),
        "warmup_failing": str(build_warmup_failing_model(workdir / "warmup_failing.onnx")),
    }


def model(name: str, path: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "versions": [{"version": "1", "path": path}], **fields}


@pytest.fixture(scope="module")
def gateway(
    model_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("defects")
    config = {
        "models": [
            model("ranker", model_files["ranker"]),
            # The ranker behind a 2 s queue delay: a shadow of it outlives the shadow timeout.
            model(
                "ranker_slow",
                model_files["ranker"],
                batching={"max_batch_size": 1024, "max_queue_delay_s": 2.0},
            ),
            model("scalar", model_files["scalar"]),
            # Takes `x`, not `features`: every request routed to it is refused.
            model("x_input", model_files["x_input"]),
        ],
        "endpoints": [
            {
                "name": "mirrored",
                "variants": {"live": {"model": "ranker"}, "slow": {"model": "ranker_slow"}},
                "weights": {"live": 1},
                "shadow": {"variants": ["slow"], "fraction": 1.0, "max_concurrency": 64},
            },
            {
                "name": "failing",
                "variants": {"wrong": {"model": "x_input"}},
                "weights": {"wrong": 1},
            },
        ],
        "routing": {"shadow_timeout_s": SHADOW_TIMEOUT_S},
        "features": demo_features("defects:", {"kind": "memory"}),
        # The ranker's outputs are `logit` and `score`: this one is a mistake of the config.
        "recommend": {"score_output": "relevance"},
    }
    running = start_gateway(config, workdir)
    yield running
    assert running.stop() == 0, running.log()


def post(
    gateway: Gateway, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    connection.request("POST", path, body=json.dumps(body).encode(), headers=headers or {})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    return response.status, json.loads(raw or b"{}")


def infer_body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), 16], "data": rows}]
    }


def test_a_scalar_input_model_is_served(gateway: Gateway) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [], "data": [3.5]}]}
    status, answer = post(gateway, "/v2/models/scalar/infer", body)
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert (output["name"], output["shape"], output["data"]) == ("y", [], [7.0])
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    tensor = triton_grpc.InferInput("x", [], "FP32")
    tensor.set_data_from_numpy(np.array(-1.25, dtype=np.float32))
    result = client.infer("scalar", [tensor])
    np.testing.assert_array_equal(result.as_numpy("y"), np.array(-2.5, dtype=np.float32))


def test_a_score_output_the_model_lacks_is_a_server_fault(gateway: Gateway) -> None:
    request: dict[str, Any] = {"endpoint": "ranker", "user_id": "u1", "candidate_ids": ["i1", "i2"]}
    status, answer = post(gateway, "/v1/recommend", request)
    assert status == 500, answer
    assert answer == {"error": INTERNAL_ERROR_MESSAGE}  # nothing blamed on the caller
    with grpc.insecure_channel(gateway.grpc_url) as channel, pytest.raises(grpc.RpcError) as error:
        recommend_grpc.RecommenderStub(channel).Recommend(
            recommend_pb.RecommendRequest(**request), timeout=30
        )
    assert error.value.code() is grpc.StatusCode.INTERNAL
    assert error.value.details() == INTERNAL_ERROR_MESSAGE
    # The operator's log names the key to fix.
    assert "recommend.score_output is 'relevance'" in gateway.log()
    text = scrape_metrics(gateway)
    internal = metric_sum(text, "switchyard_requests_total", model="ranker", status="internal")
    assert internal == 2, internal


def test_shadows_that_time_out_are_counted(gateway: Gateway) -> None:
    for _ in range(3):
        status, answer = post(gateway, "/v2/models/mirrored/infer", infer_body([ROW]))
        assert status == 200, answer
    labels = {"endpoint": "mirrored", "variant": "slow"}
    deadline = time.monotonic() + 20
    timed_out = 0.0
    while time.monotonic() < deadline:
        text = scrape_metrics(gateway)
        timed_out = metric_sum(
            text, "switchyard_shadow_requests_total", outcome="timed_out", **labels
        )
        if timed_out >= 3:
            break
        time.sleep(0.2)
    print(f"shadows timed out after {SHADOW_TIMEOUT_S} s: {timed_out}")
    assert timed_out == 3
    assert metric_sum(text, "switchyard_shadow_requests_total", outcome="ok", **labels) == 0
    routed = metric_sum(text, "switchyard_routed_requests_total", variant="live", status="ok")
    assert routed == 3


def test_failed_routed_requests_are_counted_per_variant(gateway: Gateway) -> None:
    for _ in range(4):
        status, answer = post(gateway, "/v2/models/failing/infer", infer_body([ROW]))
        assert status == 400 and "inputs ['x']" in answer["error"], answer
    text = scrape_metrics(gateway)
    labels = {"endpoint": "failing", "variant": "wrong"}
    refused = metric_sum(
        text, "switchyard_routed_requests_total", status="invalid_argument", **labels
    )
    assert refused == 4
    assert metric_sum(text, "switchyard_routed_requests_total", status="ok", **labels) == 0


def test_an_unsupported_content_encoding_is_labelled_by_its_status(gateway: Gateway) -> None:
    before = metric_sum(
        scrape_metrics(gateway), "switchyard_requests_total", model="ranker", protocol="rest"
    )
    status, answer = post(
        gateway, "/v2/models/ranker/infer", infer_body([ROW]), {"Content-Encoding": "br"}
    )
    assert status == 415 and "not supported" in answer["error"], answer
    text = scrape_metrics(gateway)
    labels = {"model": "ranker", "protocol": "rest"}
    assert (
        metric_sum(text, "switchyard_requests_total", status="unsupported_media_type", **labels)
        == 1
    )
    assert metric_sum(text, "switchyard_requests_total", **labels) == before + 1  # none internal


def serve(config: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`switchyard serve` on `config`, expected to stop at start-up."""
    path = workdir / "switchyard.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0},
                **config,
            }
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", "serve", "--config", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        # No batch dimension: batching is off, and no preferred size can form.
        (
            "scalar",
            {"batching": {"preferred_batch_sizes": [4]}},
            "model 'scalar': batching.preferred_batch_sizes [4] cannot be formed",
        ),
        (
            "warmup_failing",
            {},
            "model 'warmup_failing:1': the warm-up run",
        ),
    ],
)
def test_a_model_that_cannot_be_served_stops_start_up_with_a_clear_error(
    model_files: dict[str, str], tmp_path: Path, name: str, fields: dict[str, Any], expected: str
) -> None:
    result = serve({"models": [model(name, model_files[name], **fields)]}, tmp_path)
    print(result.stderr[-2000:])
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr

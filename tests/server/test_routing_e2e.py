"""Endpoints through the real gateway: splits, stickiness, overrides, shadows, rollouts,
the admin API and live config reloads."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.slow_model import build_slow_model
from switchyard.demo.build_model import build

ADMIN_TOKEN = "test-admin-token-0123456789"
ROW = [0.5] * 16
# 20 candidates for one user: enough rows for top-k ranking comparisons.
CANDIDATES = np.random.default_rng(1).normal(size=(20, 16)).round(3).tolist()


@pytest.fixture(scope="module")
def model_paths(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("models")
    return {
        "v1": str(demo_model_path),
        "v2": str(build(workdir / "v2", seed=8)),  # another seed: outputs that differ
        "slow_input": str(build_slow_model(workdir / "other.onnx", work_dim=8)),
    }


def rollout_endpoint(name: str, canary: dict[str, str], **checks: float) -> dict[str, Any]:
    """An endpoint whose canary starts at 0% under a two-step rollout plan."""
    return {
        "name": name,
        "variants": {"stable": {"model": "ranker", "version": "1"}, "canary": canary},
        "weights": {"stable": 1},
        "rollout": {"stable": "stable", "canary": "canary", "steps_percent": [50, 100], **checks},
    }


def base_config(paths: dict[str, str], workdir: Path, **routing: Any) -> dict[str, Any]:
    versions = [{"version": "1", "path": paths["v1"]}, {"version": "2", "path": paths["v2"]}]
    return {
        "models": [
            {"name": "ranker", "versions": versions, "default_version": "1"},
            # The same v1 file behind a 2 s queue delay: a real, slow variant.
            {
                "name": "ranker_slow",
                "versions": [{"version": "1", "path": paths["v1"]}],
                "batching": {"max_batch_size": 1024, "max_queue_delay_s": 2.0},
            },
            # A 1 us timeout behind a 10 ms queue delay: every request expires in the queue
            # (DEADLINE_EXCEEDED).
            {
                "name": "ranker_expiring",
                "versions": [{"version": "1", "path": paths["v1"]}],
                "batching": {"timeout_s": 0.000001, "max_queue_delay_s": 0.01},
            },
            # Takes `x`, not `features`: every call routed to it fails.
            {"name": "wrong_input", "versions": [{"version": "1", "path": paths["slow_input"]}]},
        ],
        "routing": {
            "disagreement_log_path": str(workdir / "disagreements.jsonl"),
            "disagreement_window_s": 0.2,
            "rollout_tick_s": 0.1,
            "config_reload_s": 0.2,
            **routing,
        },
        "admin": {"token": ADMIN_TOKEN, "audit_log_path": str(workdir / "audit.jsonl")},
        "endpoints": [
            {
                "name": "recs",
                "variants": {
                    "stable": {"model": "ranker", "version": "1"},
                    "canary": {"model": "ranker", "version": "2"},
                },
                "weights": {"stable": 50, "canary": 50},
                "routing_key": {"parameter": "user_id", "header": "x-user-id"},
            },
            {
                "name": "locked",
                "variants": {"only": {"model": "ranker", "version": "1"}},
                "override": {"allowed": False},
            },
            {
                "name": "mirrored",
                "variants": {
                    "live": {"model": "ranker", "version": "1"},
                    "candidate": {"model": "ranker", "version": "2"},
                    "slow": {"model": "ranker_slow"},
                    "broken": {"model": "wrong_input"},
                },
                "weights": {"live": 1},
                "shadow": {
                    "variants": ["candidate", "slow", "broken"],
                    "fraction": 1.0,
                    "max_concurrency": 64,
                },
            },
            {
                "name": "mirrored_capped",
                "variants": {
                    "live": {"model": "ranker", "version": "1"},
                    "slow": {"model": "ranker_slow"},
                },
                "weights": {"live": 1},
                "shadow": {"variants": ["slow"], "fraction": 1.0, "max_concurrency": 2},
            },
            {
                "name": "split",
                "variants": {
                    "ranks": {"model": "ranker", "version": "1"},
                    "other": {"model": "wrong_input"},
                },
                "weights": {"ranks": 1, "other": 3},
            },
            rollout_endpoint(
                "rollout_ok",
                {"model": "ranker", "version": "2"},
                step_interval_s=0.3,
                min_requests=5,
                max_error_rate=0.05,
            ),
            rollout_endpoint(
                "rollout_failing",
                {"model": "ranker_expiring"},
                step_interval_s=0.3,
                min_requests=5,
                max_error_rate=0.05,
            ),
            rollout_endpoint(
                "rollout_slow",
                {"model": "ranker_slow"},
                step_interval_s=30,
                min_requests=3,
                max_p95_latency_s=0.5,
            ),
        ],
    }


@pytest.fixture(scope="module")
def routed(
    model_paths: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("routed")
    gateway = start_gateway(base_config(model_paths, workdir), workdir)
    yield gateway
    gateway.stop()


def workdir_of(gateway: Gateway) -> Path:
    """The folder the gateway was started in: its log, config and audit files lie there."""
    return gateway.log_path.parent


def request(
    gateway: Gateway,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    payload = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=payload, headers=headers or {})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    answer: dict[str, Any] = json.loads(raw or b"{}")  # a JSON object, of mixed values
    return response.status, {k.lower(): v for k, v in response.getheaders()}, answer


def infer(
    gateway: Gateway,
    endpoint: str,
    parameters: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    rows: list[list[float]] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    rows = rows or [ROW]
    tensor = {"name": "features", "datatype": "FP32", "shape": [len(rows), 16], "data": rows}
    body: dict[str, Any] = {"inputs": [tensor]}
    if parameters:
        body["parameters"] = parameters
    return request(gateway, "POST", f"/v2/models/{endpoint}/infer", body, headers)


def admin(
    gateway: Gateway, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"X-Switchyard-Actor": "alice"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request(gateway, method, f"/admin/v1{path}", body, headers)


def test_split_is_sticky_across_requests_and_protocols(routed: Gateway) -> None:
    served: dict[str, str] = {}
    for user in range(200):
        status, headers, body = infer(routed, "recs", {"user_id": f"u{user}"})
        assert status == 200, body
        variant = body["parameters"]["switchyard_variant"]
        assert headers["x-switchyard-variant"] == variant
        assert body["parameters"]["switchyard_endpoint"] == "recs"
        assert body["model_version"] == {"stable": "1", "canary": "2"}[variant]
        served[f"u{user}"] = variant
    shares = Counter(served.values())
    assert 60 <= shares["canary"] <= 140, shares  # 50% of 200, far beyond chance to miss
    client = triton_grpc.InferenceServerClient(routed.grpc_url)
    tensor = triton_grpc.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32))
    for user in range(0, 200, 10):
        # The header carries the same key over gRPC metadata; the answer names the variant.
        result = client.infer("recs", [tensor], headers={"x-user-id": f"u{user}"})
        params = result.get_response().parameters
        assert params["switchyard_variant"].string_param == served[f"u{user}"]
        _, _, body = infer(routed, "recs", {"user_id": f"u{user}"})
        assert body["parameters"]["switchyard_variant"] == served[f"u{user}"]


def test_grpc_trailing_metadata_names_the_variant(routed: Gateway) -> None:
    channel = grpc.insecure_channel(routed.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    message = service_pb2.ModelInferRequest(model_name="recs")
    tensor = message.inputs.add(name="features", datatype="FP32", shape=[1, 16])
    tensor.contents.fp32_contents.extend(ROW)
    message.parameters["variant"].string_param = "canary"
    response, call = stub.ModelInfer.with_call(message)
    assert dict(call.trailing_metadata())["x-switchyard-variant"] == "canary"
    assert response.parameters["switchyard_variant"].string_param == "canary"
    channel.close()


def test_override_and_its_refusal(routed: Gateway) -> None:
    for variant in ("stable", "canary"):
        status, _, body = infer(routed, "recs", headers={"X-Switchyard-Variant": variant})
        assert status == 200 and body["parameters"]["switchyard_variant"] == variant
    status, _, body = infer(routed, "recs", {"variant": "blue"})
    assert status == 400 and "blue" in body["error"] and "canary" in body["error"]
    status, _, body = infer(routed, "locked", {"variant": "only"})
    assert status == 400 and "does not allow choosing a variant" in body["error"]


def test_endpoint_answers_ready_metadata_and_config_like_a_model(routed: Gateway) -> None:
    grpc_client = triton_grpc.InferenceServerClient(routed.grpc_url)
    http_client = triton_http.InferenceServerClient(routed.http_url)
    ranker = http_client.get_model_metadata("ranker")
    ranker_config = http_client.get_model_config("ranker")
    for client in (grpc_client, http_client):
        assert client.is_model_ready("recs")
        # mirrored's shadows (one of them taking other inputs) count for neither answer.
        assert client.is_model_ready("mirrored")
    for name in ("recs", "mirrored"):
        metadata = http_client.get_model_metadata(name)
        expected = {**ranker, "name": name, "versions": []}
        assert metadata == expected
        grpc_metadata = grpc_client.get_model_metadata(name, as_json=True)
        assert grpc_metadata["name"] == name and "versions" not in grpc_metadata  # empty
        assert grpc_metadata["inputs"] == [
            {"name": "features", "datatype": "FP32", "shape": ["-1", "16"]}
        ]
        assert [o["name"] for o in grpc_metadata["outputs"]] == ["logit", "score"]
        assert http_client.get_model_config(name) == {**ranker_config, "name": name}
        grpc_config = grpc_client.get_model_config(name, as_json=True)["config"]
        assert grpc_config["name"] == name and grpc_config["platform"] == ranker["platform"]
    # Inference by the endpoint's name still routes, and names the variant that answered.
    tensor = triton_http.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32))
    result = http_client.infer("recs", [tensor], parameters={"user_id": "u1"})
    assert result.get_response()["parameters"]["switchyard_variant"] in ("stable", "canary")


def test_endpoint_metadata_is_its_heaviest_primary_variants(routed: Gateway) -> None:
    # split: ranker at weight 1, wrong_input (input `x`) at weight 3.
    wrong_input = triton_http.InferenceServerClient(routed.http_url).get_model_metadata(
        "wrong_input"
    )
    _, _, metadata = request(routed, "GET", "/v2/models/split")
    assert metadata["inputs"] == wrong_input["inputs"] and metadata["name"] == "split"


def test_unknown_name_is_not_found_on_every_call(routed: Gateway) -> None:
    client = triton_grpc.InferenceServerClient(routed.grpc_url)
    for call in (client.is_model_ready, client.get_model_metadata, client.get_model_config):
        with pytest.raises(InferenceServerException) as error:
            call("nope")
        assert error.value.status() == "StatusCode.NOT_FOUND"
        assert "no model or endpoint named 'nope'" in error.value.message()
        assert "recs" in error.value.message()  # the endpoints there are
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/config"):
        status, _, body = request(routed, "GET", path)
        assert status == 404 and "no model or endpoint named 'nope'" in body["error"], path


def test_endpoint_with_a_version_is_not_found(routed: Gateway) -> None:
    expected = "'recs' is an endpoint and has no version '1'"
    for path in ("/v2/models/recs/versions/1", "/v2/models/recs/versions/1/ready"):
        status, _, body = request(routed, "GET", path)
        assert status == 404 and expected in body["error"], (path, body)
    status, _, body = request(routed, "GET", "/v2/models/recs/versions/1/config")
    assert status == 404 and expected in body["error"]
    tensor = {"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [ROW]}
    status, _, body = request(
        routed, "POST", "/v2/models/recs/versions/1/infer", {"inputs": [tensor]}
    )
    assert status == 404 and expected in body["error"] and "name a model" in body["error"]
    client = triton_grpc.InferenceServerClient(routed.grpc_url)
    grpc_tensor = triton_grpc.InferInput("features", [1, 16], "FP32")
    grpc_tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32))
    calls: tuple[Callable[[], object], ...] = (
        lambda: client.is_model_ready("recs", "1"),
        lambda: client.get_model_metadata("recs", "1"),
        lambda: client.get_model_config("recs", "1"),
        lambda: client.infer("recs", [grpc_tensor], model_version="1"),
    )
    for call in calls:
        with pytest.raises(InferenceServerException) as error:
            call()
        assert error.value.status() == "StatusCode.NOT_FOUND" and expected in error.value.message()


def test_admin_405_names_the_allowed_method(routed: Gateway) -> None:
    for method, path, allowed in (
        ("POST", "/endpoints", "GET"),
        ("GET", "/endpoints/recs/weights", "PUT"),
        ("GET", "/endpoints/rollout_ok/rollout/start", "POST"),
    ):
        status, headers, body = admin(routed, method, path)
        assert status == 405 and headers["allow"] == allowed and allowed in body["error"]


def test_slow_and_failing_shadows_never_touch_the_primary(routed: Gateway) -> None:
    latencies = []
    for _ in range(10):
        started = time.perf_counter()
        status, headers, body = infer(routed, "mirrored", rows=CANDIDATES)
        latencies.append(time.perf_counter() - started)
        assert status == 200, body
        assert headers["x-switchyard-variant"] == "live"
    # The slow shadow waits 2 s in its queue; the caller never waits for it.
    assert max(latencies) < 1.0, latencies
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = scrape_metrics(routed)
        done = metric_sum(
            text, "switchyard_shadow_requests_total", endpoint="mirrored", variant="slow"
        )
        if done >= 10:
            break
        time.sleep(0.2)
    labels = {"endpoint": "mirrored"}
    assert (
        metric_sum(
            text, "switchyard_shadow_requests_total", variant="candidate", outcome="ok", **labels
        )
        == 10
    )
    assert (
        metric_sum(text, "switchyard_shadow_requests_total", variant="slow", outcome="ok", **labels)
        == 10
    )
    assert (
        metric_sum(
            text, "switchyard_shadow_requests_total", variant="broken", outcome="error", **labels
        )
        == 10
    )
    assert (
        metric_sum(text, "switchyard_shadow_max_abs_diff_count", variant="candidate", **labels)
        == 10
    )
    # The same model behind a slow queue agrees exactly and is slower.
    assert (
        metric_sum(
            text, "switchyard_shadow_max_abs_diff_bucket", variant="slow", le="0.0", **labels
        )
        == 10
    )
    assert (
        metric_sum(
            text,
            "switchyard_shadow_latency_delta_seconds_bucket",
            variant="slow",
            le="0.1",
            **labels,
        )
        == 0
    )
    assert (
        metric_sum(text, "switchyard_shadow_top_k_overlap_count", variant="candidate", **labels)
        == 10
    )


def test_shadows_over_the_cap_are_dropped_and_counted(routed: Gateway) -> None:
    for _ in range(6):  # each slow shadow holds its slot for 2 s
        status, _, _ = infer(routed, "mirrored_capped")
        assert status == 200
    text = scrape_metrics(routed)
    labels = {"endpoint": "mirrored_capped", "variant": "slow"}
    dropped = metric_sum(
        text, "switchyard_shadow_requests_total", outcome="dropped_at_capacity", **labels
    )
    assert dropped == 4


def test_disagreements_are_logged(routed: Gateway) -> None:
    for _ in range(5):
        infer(routed, "mirrored")
    time.sleep(0.3)  # the next comparison after a window closes writes that window's lines
    infer(routed, "mirrored")
    log_path = workdir_of(routed) / "disagreements.jsonl"
    deadline = time.monotonic() + 10
    while not (log_path.exists() and log_path.read_text().strip()) and time.monotonic() < deadline:
        infer(routed, "mirrored")
        time.sleep(0.3)
    lines = [json.loads(text) for text in log_path.read_text().splitlines()]
    # The only shadow that disagrees: `slow` runs the primary's model (a difference of 0 is
    # no disagreement) and `broken` never answers.
    assert {line["shadow"]["name"] for line in lines} == {"candidate"}
    line = lines[0]
    assert line["endpoint"] == "mirrored" and line["primary"]["name"] == "live"
    assert line["shadow"] == {"name": "candidate", "model": "ranker", "version": "2"}
    by_output = {output["name"]: output["max_abs_diff"] for output in line["outputs"]}
    assert set(by_output) == {"logit", "score"}
    # The line's difference is its largest output's, and a real one.
    assert line["max_abs_diff"] == max(by_output.values()) > 0


def rollout_state(gateway: Gateway, endpoint: str) -> dict[str, Any]:
    status, _, body = admin(gateway, "GET", "/endpoints")
    assert status == 200, body
    state: dict[str, Any] = body["rollouts"][endpoint]  # a JSON object, of mixed values
    return state


def drive(
    gateway: Gateway, endpoint: str, until: set[str], timeout_s: float = 20
) -> dict[str, Any]:
    """Send traffic until the rollout reaches one of `until` states."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for _ in range(5):
            infer(gateway, endpoint)
        state = rollout_state(gateway, endpoint)
        if state["state"] in until:
            return state
    raise AssertionError(f"rollout of {endpoint} did not reach {until}: {state}")


def test_healthy_canary_rolls_forward_to_completion(routed: Gateway) -> None:
    status, _, body = admin(routed, "POST", "/endpoints/rollout_ok/rollout/start")
    assert status == 200 and body == {"state": "running", "canary_percent": 50}
    state = drive(routed, "rollout_ok", {"completed", "rolled_back"})
    assert state["state"] == "completed" and state["canary_percent"] == 100
    for _ in range(5):
        _, _, body = infer(routed, "rollout_ok")
        assert body["parameters"]["switchyard_variant"] == "canary"
    text = scrape_metrics(routed)
    assert (
        metric_sum(
            text, "switchyard_rollout_events_total", endpoint="rollout_ok", to_state="completed"
        )
        == 1
    )
    assert metric_sum(text, "switchyard_rollout_canary_percent", endpoint="rollout_ok") == 100


def test_failing_canary_rolls_back(routed: Gateway) -> None:
    admin(routed, "POST", "/endpoints/rollout_failing/rollout/start")
    state = drive(routed, "rollout_failing", {"completed", "rolled_back"})
    assert state["state"] == "rolled_back" and state["canary_percent"] == 0
    for _ in range(10):
        _, _, body = infer(routed, "rollout_failing")
        assert body["parameters"]["switchyard_variant"] == "stable"


def test_slow_canary_rolls_back_on_p95(routed: Gateway) -> None:
    admin(routed, "POST", "/endpoints/rollout_slow/rollout/start")
    state = drive(routed, "rollout_slow", {"completed", "rolled_back"}, timeout_s=60)
    assert state["state"] == "rolled_back"
    audit = (workdir_of(routed) / "audit.jsonl").read_text()
    assert "rollout rolled_back" in audit and "p95" in audit


def test_admin_api_refuses_missing_and_wrong_tokens(routed: Gateway) -> None:
    status, _, body = admin(routed, "GET", "/endpoints", token=None)
    assert status == 401 and "Bearer" in body["error"]
    status, _, body = admin(routed, "GET", "/endpoints", token="not-the-token-at-all")
    assert status == 401 and "not valid" in body["error"]  # an unknown identity
    status, _, body = admin(
        routed, "PUT", "/endpoints/recs/weights", {"weights": {"canary": 100}}, token="nope"
    )
    assert status == 401
    _, _, listing = admin(routed, "GET", "/endpoints")
    recs = next(e for e in listing["endpoints"] if e["name"] == "recs")
    assert recs["weights"] == {"canary": 50, "stable": 50}  # the refused change did not apply


def test_admin_sets_weights_and_audits(routed: Gateway) -> None:
    status, _, body = admin(routed, "PUT", "/endpoints/locked/weights", {"weights": {"only": 2}})
    assert status == 200 and body["changes"] == ["endpoints.locked.weights.only: 1 -> 2"]
    status, _, body = admin(routed, "PUT", "/endpoints/recs/weights", {"weights": {"nope": 1}})
    assert status == 400 and "nope" in body["error"]
    status, _, body = admin(routed, "PUT", "/endpoints/absent/weights", {"weights": {"a": 1}})
    assert status == 404
    entries = [
        json.loads(line) for line in (workdir_of(routed) / "audit.jsonl").read_text().splitlines()
    ]
    entry = next(e for e in entries if e["action"] == "set weights")
    assert entry["identity"] == "admin (for alice)" and entry["changes"] == [
        "endpoints.locked.weights.only: 1 -> 2"
    ]
    assert entry["time"].endswith("Z")


def test_admin_reasons_are_audited_and_the_gateways_file_verifies(routed: Gateway) -> None:
    headers = {
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "X-Switchyard-Actor": "carol",
        "X-Switchyard-Reason": "ticket 42",
    }
    path = "/admin/v1/endpoints/locked/weights"
    status, _, body = request(routed, "PUT", path, {"weights": {"only": 3}}, headers)
    assert status == 200, body
    status, _, body = request(
        routed,
        "PUT",
        path,
        {"weights": {"only": 4}, "reason": "the body's wins\n2026 INFO forged line"},
        headers,
    )
    assert status == 200, body
    status, _, body = request(routed, "PUT", path, {"weights": {"only": 5}, "reason": 7}, headers)
    assert status == 400 and '"reason" must be a string' in body["error"], body
    _, _, trail = admin(routed, "GET", "/audit")
    mine = [e for e in trail["entries"] if e["identity"] == "admin (for carol)"]
    # A newline would forge a line of the gateway's text log: kept as a space.
    assert [e["reason"] for e in mine] == ["ticket 42", "the body's wins 2026 INFO forged line"]
    assert all(e["peer"].startswith("127.0.0.1:") and e["role"] == "admin" for e in mine)
    assert mine[1]["seq"] == mine[0]["seq"] + 1 and mine[1]["prev"] == mine[0]["hash"]
    audit_file = str(workdir_of(routed) / "audit.jsonl")
    command = [sys.executable, "-m", "switchyard.server.cli", "audit", "verify", audit_file]
    verify = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and "chain intact" in verify.stdout, verify


def test_config_reload_under_load_fails_no_request(
    model_paths: dict[str, str], tmp_path: Path
) -> None:
    config = base_config(model_paths, tmp_path)
    gateway = start_gateway(config, tmp_path)
    config_path = tmp_path / "switchyard.yaml"
    failures: list[str] = []
    variants: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status, _, body = infer(gateway, "recs", {"user_id": "steady-user"})
            if status != 200:
                failures.append(f"{status}: {body}")
            else:
                variants.append(body["parameters"]["switchyard_variant"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        written = yaml.safe_load(config_path.read_text())
        for weights in ({"stable": 100, "canary": 0}, {"stable": 0, "canary": 100}) * 2:
            written["endpoints"][0]["weights"] = weights
            config_path.write_text(yaml.safe_dump(written))
            only = next(name for name, weight in weights.items() if weight)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                count = len(variants)
                time.sleep(0.3)
                if variants[count:] and set(variants[count:]) == {only}:
                    break
            else:
                raise AssertionError(f"weights {weights} never took effect")
        # An invalid edit is refused and the routing in force stays.
        config_path.write_text("endpoints: [\n")
        time.sleep(0.6)
        count = len(variants)
        time.sleep(0.3)
        assert set(variants[count:]) == {"canary"}
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        gateway.stop()
    assert failures == []
    assert len(variants) > 50
    assert "config change ignored" in gateway.log()


def wait_for_reloads(gateway: Gateway, result: str, count: int, timeout_s: float = 10) -> None:
    """Until the gateway has counted `count` config reloads with `result`."""
    deadline = time.monotonic() + timeout_s
    seen = 0.0
    while time.monotonic() < deadline:
        seen = metric_sum(scrape_metrics(gateway), "switchyard_config_reloads_total", result=result)
        if seen >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{seen} reloads with result {result}, not {count}:\n{gateway.log()}")


def served_variants(gateway: Gateway, endpoint: str, count: int = 20) -> set[str]:
    variants = set()
    for _ in range(count):
        status, _, body = infer(gateway, endpoint)
        assert status == 200, body
        variants.add(body["parameters"]["switchyard_variant"])
    return variants


def test_a_reload_whose_new_model_fails_to_load_is_refused_whole(
    model_paths: dict[str, str], tmp_path: Path
) -> None:
    gateway = start_gateway(base_config(model_paths, tmp_path), tmp_path)
    config_path = tmp_path / "switchyard.yaml"
    try:
        _, _, before = admin(gateway, "GET", "/endpoints")
        written = yaml.safe_load(config_path.read_text())
        corrupt = tmp_path / "corrupt.onnx"
        corrupt.write_bytes(b"not a model")
        written["models"].append(
            {"name": "fresh", "versions": [{"version": "1", "path": str(corrupt)}]}
        )
        written["models"][0]["versions"].append({"version": "9", "path": model_paths["v2"]})
        recs = written["endpoints"][0]
        recs["variants"] = {
            "stable": {"model": "ranker", "version": "9"},
            "canary": {"model": "fresh"},
        }
        written["endpoints"][1]["weights"] = {"only": 5}  # valid on its own: refused with the rest
        config_path.write_text(yaml.safe_dump(written))
        wait_for_reloads(gateway, "refused", 1)
        assert served_variants(gateway, "recs") <= {"stable", "canary"}  # every answer a 200
        _, _, after = admin(gateway, "GET", "/endpoints")
        assert after["endpoints"] == before["endpoints"] and after["version"] == before["version"]
        log = gateway.log()
        assert "config change refused, what is served stays" in log
        assert str(corrupt) in log
        # Version 9 loaded beside the others for the change, then freed with it.
        text = scrape_metrics(gateway)
        assert metric_sum(text, "switchyard_model_ready", model="ranker", version="9") == 0
        assert metric_sum(text, "switchyard_model_loads_total", model="fresh", result="failed") == 1
    finally:
        gateway.stop()


def test_with_model_control_off_a_reload_that_changes_models_is_refused(
    model_paths: dict[str, str], tmp_path: Path
) -> None:
    config = {**base_config(model_paths, tmp_path), "model_repository": {"control_mode": "none"}}
    gateway = start_gateway(config, tmp_path)
    config_path = tmp_path / "switchyard.yaml"
    try:
        written = yaml.safe_load(config_path.read_text())
        written["models"][0]["versions"].append({"version": "9", "path": model_paths["v2"]})
        config_path.write_text(yaml.safe_dump(written))
        wait_for_reloads(gateway, "refused", 1)
        assert "model control mode is 'none': it applies on restart" in gateway.log()
    finally:
        gateway.stop()


def test_admin_weights_outlive_unrelated_edits_until_the_file_changes_the_endpoint(
    model_paths: dict[str, str], tmp_path: Path
) -> None:
    gateway = start_gateway(base_config(model_paths, tmp_path), tmp_path)
    config_path = tmp_path / "switchyard.yaml"
    written = yaml.safe_load(config_path.read_text())

    def edit(change: Callable[[dict[str, Any]], None]) -> None:
        change(written)
        config_path.write_text(yaml.safe_dump(written))

    try:
        status, _, _ = admin(
            gateway, "PUT", "/endpoints/recs/weights", {"weights": {"stable": 0, "canary": 1}}
        )
        assert status == 200 and served_variants(gateway, "recs") == {"canary"}
        # Not an endpoints edit at all, then another endpoint's: the override stays.
        edit(lambda w: w["server"].update(log_level="warning"))
        wait_for_reloads(gateway, "unchanged", 1)
        edit(lambda w: w["endpoints"][2]["shadow"].update(fraction=0.5))
        wait_for_reloads(gateway, "applied", 1)
        assert served_variants(gateway, "recs") == {"canary"}
        _, _, listing = admin(gateway, "GET", "/endpoints")
        assert listing["overrides"]["recs"]["actor"] == "admin (for alice)"
        assert listing["overrides"]["recs"]["weights"] == {"stable": 0, "canary": 1}
        # An edit of recs's own weights replaces the override: the file is in force again.
        edit(lambda w: w["endpoints"][0].update(weights={"stable": 1, "canary": 0}))
        wait_for_reloads(gateway, "applied", 2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and served_variants(gateway, "recs", 5) != {"stable"}:
            time.sleep(0.1)
        assert served_variants(gateway, "recs") == {"stable"}
        _, _, listing = admin(gateway, "GET", "/endpoints")
        assert "recs" not in listing["overrides"]
        # And an explicit reset through the admin API does the same.
        admin(gateway, "PUT", "/endpoints/recs/weights", {"weights": {"canary": 1}})
        assert served_variants(gateway, "recs") == {"canary"}
        status, _, body = admin(gateway, "DELETE", "/endpoints/recs/override")
        assert status == 200 and body["changes"] == [
            "endpoints.recs.weights.canary: 1 -> 0",
            "endpoints.recs.weights.stable: 0 -> 1",
        ]
        assert served_variants(gateway, "recs") == {"stable"}
        _, _, trail = admin(gateway, "GET", "/audit")
        actions = [(e["identity"], e["action"]) for e in trail["entries"]]
        assert actions == [
            ("admin (for alice)", "set weights"),
            ("config-file", "reload switchyard.yaml"),
            ("config-file", "reload switchyard.yaml"),
            ("config-file", actions[3][1]),
            ("admin (for alice)", "set weights"),
            ("admin (for alice)", "reset to the config file"),
        ]
        assert actions[3][1].startswith("reset: the config file changed")
    finally:
        gateway.stop()


def test_a_file_caught_half_written_is_never_applied(
    model_paths: dict[str, str], tmp_path: Path
) -> None:
    """An editor writing in place: first a truncated file (valid YAML without endpoints),
    then the whole file. Only the whole file applies; recs is served throughout."""
    config = base_config(model_paths, tmp_path, config_reload_s=0.05, config_settle_s=0.5)
    gateway = start_gateway(config, tmp_path)
    config_path = tmp_path / "switchyard.yaml"
    try:
        whole = yaml.safe_load(config_path.read_text())
        whole["endpoints"][0]["weights"] = {"stable": 1, "canary": 0}
        half = {key: value for key, value in whole.items() if key != "endpoints"}
        config_path.write_text(yaml.safe_dump(half))
        deadline = time.monotonic() + 0.3  # within the settle time: rewritten before read
        while time.monotonic() < deadline:
            assert infer(gateway, "recs")[0] == 200
            time.sleep(0.02)
        config_path.write_text(yaml.safe_dump(whole))
        wait_for_reloads(gateway, "applied", 1)
        assert served_variants(gateway, "recs") == {"stable"}
        _, _, trail = admin(gateway, "GET", "/audit")
        changes = [
            c for e in trail["entries"] if e["identity"] == "config-file" for c in e["changes"]
        ]
        assert changes and all(c.startswith("endpoints.recs.weights") for c in changes), changes
    finally:
        gateway.stop()

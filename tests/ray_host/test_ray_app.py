"""The Ray Serve host on a real local Ray, two ingress replicas with co-located models beside
deployed ones: the same answers as the standalone host over Serve's gRPC and HTTP proxies,
and a slow variant that autoscales on its latency.

One Ray and one Serve application for the whole module (Ray takes seconds to start), beside
a standalone gateway serving the same config file.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, free_port, start_gateway
from loadtests.redis_process import RedisServer
from loadtests.slow_model import build_slow_model
from switchyard.protos import recommend_pb2, recommend_pb2_grpc
from switchyard.server.config import load_config
from tests.ray_host.support import (
    ADMIN_TOKEN,
    INGRESS_REPLICAS,
    LOCAL_PAIR_MODEL,
    LOCAL_SLOW_MODEL,
    PAIR_MODEL,
    SLOW_MODEL,
    app_config,
)

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from switchyard.server.ray_host.app import IngressEndpoint, start_on_local_ray  # noqa: E402
from switchyard.server.ray_host.deployments import APP_NAME, fast_path_env  # noqa: E402

# Our config sets metrics_interval_s, which Ray 2.60 still reads but has deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s`:DeprecationWarning")

ITEMS = [f"i{n}" for n in range(0, 200, 7)]


@dataclass(frozen=True)
class RayApp:
    http_port: int  # Serve's proxies
    grpc_port: int
    endpoints: tuple[IngressEndpoint, ...] = ()  # the ingress replicas' own (direct ingress)
    control_store: str = "memory"  # redis where redis-server is installed

    def replica_urls(self, protocol: str) -> list[str]:
        return [f"{e.host}:{e.port}" for e in self.endpoints if e.protocol == protocol]

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@pytest.fixture(scope="module")
def config(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("models")
    return app_config(demo_model_path, build_slow_model(workdir / "slow.onnx"), workdir)


@pytest.fixture(scope="module")
def ray_app(config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayApp]:
    http_port, grpc_port = free_port(), free_port()
    server = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port}
    workdir = tmp_path_factory.mktemp("ray")
    path = workdir / "switchyard.yaml"
    # The ingress replicas share one routing state through Redis, as standalone pods do
    # (the standalone gateway keeps the memory store: it must not share theirs).
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        control = {"store": "memory"}
        if shutil.which("redis-server") is not None:
            redis_server = RedisServer(workdir)
            stack.callback(redis_server.stop)
            redis_server.start()
            prefix = f"{uuid.uuid4().hex}:"
            control = {"store": "redis", "url": redis_server.url, "prefix": prefix}
        path.write_text(yaml.safe_dump({**config, "server": server, "control": control}))
        loaded = load_config(path)
        # Serve's fast path, as `switchyard serve --engine ray` sets it before Ray starts.
        for name, value in fast_path_env(loaded, local=True).items():
            env.setenv(name, value)
        # Logical CPUs: replicas reserve CPUs, and this machine may have only 2.
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
        try:
            endpoints = start_on_local_ray(loaded, path)
            yield RayApp(http_port, grpc_port, tuple(endpoints), control["store"])
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def standalone(
    config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gateway = start_gateway(config, tmp_path_factory.mktemp("standalone"))
    yield gateway
    assert gateway.stop() == 0, gateway.log()


def grpc_clients(*urls: str) -> list[triton_grpc.InferenceServerClient]:
    return [triton_grpc.InferenceServerClient(url) for url in urls]


def features_input(data: np.ndarray, client: Any = triton_grpc) -> Any:
    """The ranker's input for tritonclient's grpc or http module (`client`)."""
    tensor = client.InferInput("features", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def test_health_and_metadata_match_standalone(ray_app: RayApp, standalone: Gateway) -> None:
    ray_client, standalone_client = grpc_clients(ray_app.grpc_url, standalone.grpc_url)
    assert ray_client.is_server_live() and ray_client.is_server_ready()
    assert ray_client.is_model_ready("ranker", "1")
    for call in ("get_server_metadata", "get_model_metadata", "get_model_config"):
        args = () if call == "get_server_metadata" else ("ranker",)
        got = getattr(ray_client, call)(*args, as_json=True)
        assert got == getattr(standalone_client, call)(*args, as_json=True), call
    rest = triton_http.InferenceServerClient(ray_app.http_url)
    assert rest.is_server_ready()
    expected = triton_http.InferenceServerClient(standalone.http_url).get_model_metadata("ranker")
    assert rest.get_model_metadata("ranker") == expected


def test_infer_over_grpc_and_rest_equals_onnxruntime(
    ray_app: RayApp, direct_session: ort.InferenceSession, features: np.ndarray
) -> None:
    logit, score = direct_session.run(["logit", "score"], {"features": features})
    result = triton_grpc.InferenceServerClient(ray_app.grpc_url).infer(
        "ranker", [features_input(features)], request_id="r1"
    )
    assert result.get_response().id == "r1"
    np.testing.assert_array_equal(result.as_numpy("logit"), logit)
    np.testing.assert_array_equal(result.as_numpy("score"), score)
    rest = triton_http.InferenceServerClient(ray_app.http_url)
    for binary in (True, False):
        tensor = triton_http.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features, binary_data=binary)
        outputs = [triton_http.InferRequestedOutput("score", binary_data=binary)]
        result = rest.infer("ranker", [tensor], outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("score"), score)


def test_routed_endpoint_answers_as_standalone(
    ray_app: RayApp, standalone: Gateway, features: np.ndarray
) -> None:
    answers = []
    for url in (ray_app.grpc_url, standalone.grpc_url):
        with grpc.insecure_channel(url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            message = service_pb2.ModelInferRequest(model_name="recs")
            tensor = message.inputs.add(name="features", datatype="FP32", shape=features.shape)
            tensor.contents.fp32_contents.extend(features.ravel().tolist())
            response, call = stub.ModelInfer.with_call(message, metadata=[("x-user-id", "u7")])
        assert dict(call.trailing_metadata())["x-switchyard-variant"] == "stable"
        assert response.parameters["switchyard_endpoint"].string_param == "recs"
        answers.append(list(response.raw_output_contents))
    assert answers[0] == answers[1]
    tensor = features_input(features, triton_http)
    result = triton_http.InferenceServerClient(ray_app.http_url).infer("recs", [tensor])
    assert result.get_response()["parameters"]["switchyard_variant"] == "stable"


def test_endpoint_ready_and_metadata_answer_as_standalone(
    ray_app: RayApp, standalone: Gateway
) -> None:
    ray_client, standalone_client = grpc_clients(ray_app.grpc_url, standalone.grpc_url)
    assert ray_client.is_model_ready("recs")
    metadata = ray_client.get_model_metadata("recs", as_json=True)
    assert metadata == standalone_client.get_model_metadata("recs", as_json=True)
    assert metadata["name"] == "recs" and metadata["inputs"][0]["name"] == "features"
    config = ray_client.get_model_config("recs", as_json=True)
    assert config == standalone_client.get_model_config("recs", as_json=True)
    rest, standalone_rest = (
        triton_http.InferenceServerClient(url) for url in (ray_app.http_url, standalone.http_url)
    )
    assert rest.is_model_ready("recs")
    assert rest.get_model_metadata("recs") == standalone_rest.get_model_metadata("recs")
    with pytest.raises(InferenceServerException) as error:
        ray_client.get_model_metadata("recs", "1")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    assert "'recs' is an endpoint" in error.value.message()


class RecommendBody(TypedDict):
    """A /v1/recommend request body, also the RecommendRequest message's keywords."""

    endpoint: str
    user_id: str
    candidate_ids: list[str]
    k: int


def rest_recommend(http_port: int, body: Mapping[str, object]) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    connection.request("POST", "/v1/recommend", body=json.dumps(body))
    response = connection.getresponse()
    assert response.status == 200
    answer: dict[str, Any] = json.loads(response.read())  # a JSON object, of mixed values
    return answer


def test_recommend_answers_as_standalone(ray_app: RayApp, standalone: Gateway) -> None:
    request: RecommendBody = {"endpoint": "recs", "user_id": "u42", "candidate_ids": ITEMS, "k": 5}
    expected = rest_recommend(standalone.http_port, request)
    answer = rest_recommend(ray_app.http_port, request)
    # Each its own: the gateway makes one; Ray Serve's proxy passes its x-request-id on.
    assert answer.pop("request_id") != expected.pop("request_id") != ""
    assert answer == expected
    with grpc.insecure_channel(ray_app.grpc_url) as channel:
        response = recommend_pb2_grpc.RecommenderStub(channel).Recommend(
            recommend_pb2.RecommendRequest(**request), timeout=30
        )
    assert [(i.item_id, i.score) for i in response.items] == [
        (i["item_id"], pytest.approx(i["score"])) for i in expected["items"]
    ]


# tritonclient ships no types: its infer()'s arguments are passed on as they come.
def grpc_error(
    client: triton_grpc.InferenceServerClient, *args: Any, **kwargs: Any
) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as error:
        client.infer(*args, **kwargs)
    return str(error.value.status()), error.value.message()


def test_bad_input_gets_the_statuses_standalone_gives(ray_app: RayApp, standalone: Gateway) -> None:
    ray_client, standalone_client = grpc_clients(ray_app.grpc_url, standalone.grpc_url)
    bad_shape = triton_grpc.InferInput("features", [2, 15], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((2, 15), np.float32))
    uneven = []
    for name, rows in (("a", 2), ("b", 3)):
        uneven.append(triton_grpc.InferInput(name, [rows, 4], "FP32"))
        uneven[-1].set_data_from_numpy(np.zeros((rows, 4), np.float32))
    for args, code, fragment in (
        (("nope", [bad_shape]), "StatusCode.NOT_FOUND", "no model or endpoint named 'nope'"),
        (("ranker", [bad_shape]), "StatusCode.INVALID_ARGUMENT", "tensor 'features': shape"),
        # Refused by the variant's batcher, in another process: its own message comes back.
        ((PAIR_MODEL, uneven), "StatusCode.INVALID_ARGUMENT", "disagree on the batch"),
        # Refused by the co-located batcher, in the ingress replica.
        ((LOCAL_PAIR_MODEL, uneven), "StatusCode.INVALID_ARGUMENT", "disagree on the batch"),
    ):
        status, message = grpc_error(ray_client, *args)
        assert (status, message) == grpc_error(standalone_client, *args)
        assert status == code and fragment in message and "Traceback" not in message


def test_two_ingress_replicas_run_the_colocated_models_without_deployments(
    ray_app: RayApp,
) -> None:
    deployments = serve.status().applications[APP_NAME].deployments
    # ranker and pair_local run inside the ingress replicas: no deployment of their own.
    assert set(deployments) == {"ingress", f"{SLOW_MODEL}:1", f"{PAIR_MODEL}:1"}
    assert running_replicas("ingress") == INGRESS_REPLICAS


def test_each_ingress_replica_answers_as_standalone_on_its_own_ports(
    ray_app: RayApp,
    standalone: Gateway,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    grpc_urls, http_urls = ray_app.replica_urls("gRPC"), ray_app.replica_urls("HTTP")
    assert len(grpc_urls) == len(http_urls) == INGRESS_REPLICAS, ray_app.endpoints
    (score,) = direct_session.run(["score"], {"features": features})
    (standalone_client,) = grpc_clients(standalone.grpc_url)
    bad_shape = triton_grpc.InferInput("features", [2, 15], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((2, 15), np.float32))
    for client in grpc_clients(*grpc_urls):
        result = client.infer("ranker", [features_input(features)])
        np.testing.assert_array_equal(result.as_numpy("score"), score)
        assert client.get_model_metadata("recs", as_json=True) == (
            standalone_client.get_model_metadata("recs", as_json=True)
        )
        for args in (("nope", [bad_shape]), ("ranker", [bad_shape])):
            assert grpc_error(client, *args) == grpc_error(standalone_client, *args)
    for url in http_urls:
        rest = triton_http.InferenceServerClient(url)
        result = rest.infer("ranker", [features_input(features, triton_http)])
        np.testing.assert_array_equal(result.as_numpy("score"), score)
        # Each replica's own Switchyard metrics: its requests, and its co-located batcher's.
        host, port = url.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        samples = response.read().decode().splitlines()
        for metric, labels in (
            ("switchyard_requests_total", ('model="ranker"', 'protocol="rest"')),
            ("switchyard_batch_size_rows_count", ('model="ranker"', 'version="1"')),
        ):
            assert any(
                line.startswith(metric + "{") and all(label in line for label in labels)
                for line in samples
            ), (metric, samples)


def http_json(url: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
    host, port = url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Switchyard-Actor": "alice"}
    payload = None if body is None else json.dumps(body)
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def served_variant(url: str, features: np.ndarray) -> str:
    tensor = features_input(features, triton_http)
    result = triton_http.InferenceServerClient(url).infer("flip", [tensor])
    variant: str = result.get_response()["parameters"]["switchyard_variant"]
    return variant


def test_a_weight_change_on_one_ingress_replica_is_served_by_the_other(
    ray_app: RayApp, features: np.ndarray
) -> None:
    if ray_app.control_store != "redis":
        pytest.skip("needs redis-server: the replicas share routing state through Redis")
    first, second = ray_app.replica_urls("HTTP")
    assert served_variant(second, features) == "a"
    status, _ = http_json(first, "PUT", "/admin/v1/endpoints/flip/weights", {"weights": {"b": 1}})
    try:
        assert status == 200
        deadline_s = time.monotonic() + 5.0  # resync_s is 1 s; change notifications are faster
        while (variant := served_variant(second, features)) != "b":
            assert time.monotonic() < deadline_s, variant
            time.sleep(0.1)
    finally:  # back to the config's weights, for the tests after
        assert http_json(second, "DELETE", "/admin/v1/endpoints/flip/override")[0] == 200
    deadline_s = time.monotonic() + 5.0
    while (variant := served_variant(first, features)) != "a":
        assert time.monotonic() < deadline_s, variant
        time.sleep(0.1)


def test_colocated_and_deployed_versions_of_one_model_answer_alike(ray_app: RayApp) -> None:
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    tensors = []
    for name, data in (("a", a), ("b", b)):
        tensors.append(triton_grpc.InferInput(name, [3, 4], "FP32"))
        tensors[-1].set_data_from_numpy(data)
    client = triton_grpc.InferenceServerClient(ray_app.grpc_url)
    # Several calls each: Serve's proxy spreads them over both ingress replicas.
    for _ in range(8):
        for model in (LOCAL_PAIR_MODEL, PAIR_MODEL):
            np.testing.assert_array_equal(client.infer(model, tensors).as_numpy("z"), a + b)


def running_replicas(deployment: str) -> int:
    # `serve` comes from pytest.importorskip, so Any: replica_states maps state to count.
    status = serve.status().applications[APP_NAME].deployments[deployment]
    count: int = status.replica_states.get("RUNNING", 0)
    return count


def wait_for_replicas(
    deployment: str, done: Callable[[int], bool], timeout_s: float
) -> tuple[int, float]:
    started_s = time.monotonic()
    while (elapsed_s := time.monotonic() - started_s) < timeout_s:
        count = running_replicas(deployment)
        if done(count):
            return count, elapsed_s
        time.sleep(0.5)
    count = running_replicas(deployment)
    raise AssertionError(f"{deployment}: {count} replicas after {timeout_s} s")


def drive_until(
    ray_app: RayApp, model: str, callers: int, deployment: str, done: Callable[[int], bool]
) -> int:
    """Closed-loop callers of `model` until `deployment` has `done` replicas; their count."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def closed_loop() -> None:  # one caller: the next request as soon as the last answered
        client = triton_grpc.InferenceServerClient(ray_app.grpc_url)
        tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        while not stop.is_set():
            try:
                client.infer(model, [tensor])
            except Exception as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=closed_loop) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        replicas, _ = wait_for_replicas(deployment, done, timeout_s=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, [str(exc) for exc in failures]
    return replicas


def test_slow_variant_scales_up_under_load_and_back_down_after(ray_app: RayApp) -> None:
    deployment = f"{SLOW_MODEL}:1"
    assert running_replicas(deployment) == 1
    replicas = drive_until(ray_app, SLOW_MODEL, 4, deployment, lambda n: n >= 2)
    assert 2 <= replicas <= 3  # the policy's max_replicas
    # No traffic: the policy asks for min_replicas once the stats window has emptied.
    wait_for_replicas(deployment, lambda n: n == 1, timeout_s=60)


def test_colocated_slow_model_scales_the_ingress_up_and_back_down(ray_app: RayApp) -> None:
    assert running_replicas("ingress") == INGRESS_REPLICAS  # the policy's min_replicas
    # Six callers over two replicas of a one-call-at-a-time model: p95 well over 30 ms.
    replicas = drive_until(ray_app, LOCAL_SLOW_MODEL, 6, "ingress", lambda n: n > INGRESS_REPLICAS)
    assert replicas == INGRESS_REPLICAS + 1  # the policy's max_replicas
    wait_for_replicas("ingress", lambda n: n == INGRESS_REPLICAS, timeout_s=60)


def test_a_model_unloaded_through_one_ingress_replica_goes_from_both(ray_app: RayApp) -> None:
    if ray_app.control_store != "redis":
        pytest.skip("needs redis-server: the replicas share the loaded models through Redis")
    first, second = grpc_clients(*ray_app.replica_urls("gRPC"))
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def ready_on(client: triton_grpc.InferenceServerClient) -> bool:
        listed = client.get_model_repository_index(as_json=True)["models"]
        return any(m["name"] == LOCAL_PAIR_MODEL and m["state"] == "READY" for m in listed)

    def eventually(check: Callable[[], bool]) -> None:
        deadline_s = time.monotonic() + 5.0
        while not check():
            assert time.monotonic() < deadline_s
            time.sleep(0.1)

    assert ready_on(first) and ready_on(second)
    first.unload_model(LOCAL_PAIR_MODEL, headers=auth)
    try:
        assert not ready_on(first)
        eventually(lambda: not ready_on(second))
    finally:
        second.load_model(LOCAL_PAIR_MODEL, headers=auth)
    eventually(lambda: ready_on(first))
    assert ready_on(second)

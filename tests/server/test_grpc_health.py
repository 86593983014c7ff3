"""grpc.health.v1 and server reflection on a real gateway's gRPC port: statuses that follow
readiness and the drain, answers under overload, and reflection of our private-pool stubs."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.slow_model import build_slow_model

OIP_SERVICE = "inference.GRPCInferenceService"
RECOMMEND_SERVICE = "switchyard.recommend.v1.Recommender"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_CONCURRENT_RPCS = 2


def slow_config(model: Path, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "models": [
            {
                "name": "slow",
                "versions": [{"version": "1", "path": str(model)}],
                "runtime_options": {"intra_op_threads": 1},
                # No shedding by expected wait: the drain test needs every call admitted.
                "batching": {"max_batch_size": 0, "max_queue_size": 256, "max_queue_wait_s": None},
            }
        ],
    }


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Tens of ms a call, served one at a time: a few dozen calls keep the gateway busy.
    return build_slow_model(tmp_path_factory.mktemp("model") / "slow.onnx", work_dim=1536)


@pytest.fixture(scope="module")
def gateway(slow_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = slow_config(slow_model, max_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    running = start_gateway(config, tmp_path_factory.mktemp("health"))
    yield running
    assert running.stop() == 0, running.log()


def check(gateway: Gateway, service: str) -> health_pb2.HealthCheckResponse.ServingStatus:
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        status: health_pb2.HealthCheckResponse.ServingStatus = response.status
        return status


def infer(gateway: Gateway) -> grpc.StatusCode:
    request = service_pb2.ModelInferRequest(model_name="slow")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code: grpc.StatusCode = cast(grpc.Call, exc).code()
            return code


def in_threads(count: int, gateway: Gateway) -> tuple[list[threading.Thread], list[Any]]:
    """`count` inference calls at once, each in a thread (started); their results list."""
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(infer(gateway))) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads, results


@pytest.mark.parametrize("service", ["", OIP_SERVICE, RECOMMEND_SERVICE])
def test_check_is_serving_once_ready(gateway: Gateway, service: str) -> None:
    assert check(gateway, service) == SERVING


def test_check_of_a_service_not_served_is_not_found_with_the_served_names(
    gateway: Gateway,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        check(gateway, "no.such.Service")
    call = cast(grpc.Call, raised.value)
    assert call.code() == grpc.StatusCode.NOT_FOUND
    assert "'no.such.Service'" in (call.details() or "")
    assert f"'{OIP_SERVICE}'" in (call.details() or "")


def test_watch_of_a_service_not_served_says_unknown_and_stays_open(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=2
        )
        first = next(stream)
        assert first.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)  # nothing more until the client's deadline
        assert cast(grpc.Call, raised.value).code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_is_answered_while_calls_are_refused_for_capacity(gateway: Gateway) -> None:
    shed_before = metric_sum(
        scrape_metrics(gateway), "switchyard_shed_requests_total", reason="max_concurrent_rpcs"
    )
    stop = threading.Event()
    outcomes: list[grpc.StatusCode] = []

    def keep_calling() -> None:  # the slots stay taken: a freed one is taken again at once
        while not stop.is_set():
            outcomes.append(infer(gateway))

    load = [threading.Thread(target=keep_calling) for _ in range(3 * MAX_CONCURRENT_RPCS)]
    for thread in load:
        thread.start()
    try:
        time.sleep(0.3)
        statuses = [check(gateway, service) for service in ("", OIP_SERVICE) * 10]
    finally:
        stop.set()
        for thread in load:
            thread.join()
    shed = metric_sum(
        scrape_metrics(gateway), "switchyard_shed_requests_total", reason="max_concurrent_rpcs"
    )
    refused = outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    print(f"{len(outcomes)} calls, {refused} refused for capacity, during 20 health checks")
    assert refused > 0 and shed >= shed_before + refused  # the server was at capacity
    assert statuses == [SERVING] * 20


def test_reflection_lists_the_services_and_resolves_their_descriptors(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {
            OIP_SERVICE,
            RECOMMEND_SERVICE,
            HEALTH_SERVICE,
            REFLECTION_SERVICE,
        }
        pool = DescriptorPool(database)
        oip = pool.FindServiceByName(OIP_SERVICE)
        assert oip.file.name == "switchyard/protos/open_inference.proto"
        infer_method = oip.methods_by_name["ModelInfer"]
        assert infer_method.input_type.full_name == "inference.ModelInferRequest"
        assert "raw_input_contents" in infer_method.input_type.fields_by_name
        recommend = pool.FindServiceByName(RECOMMEND_SERVICE).methods_by_name["Recommend"]
        assert recommend.output_type.full_name == "switchyard.recommend.v1.RecommendResponse"
        health = pool.FindServiceByName(HEALTH_SERVICE)
        assert set(health.methods_by_name) == {"Check", "Watch"}
        with pytest.raises(KeyError):
            pool.FindServiceByName("no.such.Service")


def test_watch_streams_serving_then_not_serving_as_the_drain_starts(
    slow_model: Path, tmp_path: Path
) -> None:
    # A long grace: the Watch must end with the drain, not hold the stop until the grace.
    gateway = start_gateway(slow_config(slow_model, shutdown_grace_s=30.0), tmp_path)
    try:
        with grpc.insecure_channel(gateway.grpc_url) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=OIP_SERVICE), timeout=60
            )
            assert next(stream).status == SERVING
            threads, results = in_threads(24, gateway)  # about a second or more of work
            time.sleep(0.3)
            gateway.process.send_signal(signal.SIGTERM)
            assert next(stream).status == NOT_SERVING
            # Said at the start of the drain, while the calls it lets finish still run.
            assert len(results) < len(threads)
            with pytest.raises(StopIteration):
                next(stream)  # the stream ends (status OK) after NOT_SERVING
            for thread in threads:
                thread.join()
        assert results == [grpc.StatusCode.OK] * len(threads), gateway.log()
        started_s = time.monotonic()
        assert gateway.stop(timeout_s=15) == 0, gateway.log()
        print(f"stopped {time.monotonic() - started_s:.2f} s after the calls were answered")
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()

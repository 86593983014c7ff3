"""HTTP beyond capacity, and shutdown under load, against a real gateway serving a slow model.

No timing is asserted (a shared, noisy machine); the measured figures are printed."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import orjson
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.slow_model import build_slow_model

ROW = [1.0, 2.0, 3.0, 4.0]
REST_BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
)


def slow_config(path: Path, queue_sizes: dict[str, int], **server: Any) -> dict[str, Any]:
    """One serial model per entry of `queue_sizes` (name -> its queue), all on `path`."""
    return {
        "server": server,
        "models": [
            {
                "name": name,
                "versions": [{"version": "1", "path": str(path)}],
                "runtime_options": {"intra_op_threads": 1},
                # The queue is the test's: no wait bound refuses part of it first.
                "batching": {
                    "max_batch_size": 0,
                    "max_queue_size": queue_size,
                    "max_queue_wait_s": None,
                },
            }
            for name, queue_size in queue_sizes.items()
        ],
    }


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # About 70 ms a call on one thread: a few dozen calls outlast a grace of 0.5 s.
    return build_slow_model(tmp_path_factory.mktemp("model") / "slow.onnx", work_dim=1536)


@pytest.fixture(scope="module")
def capped_gateway(slow_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = slow_config(slow_model, {"slow": 128, "tiny_queue": 1}, http_max_concurrent_requests=4)
    running = start_gateway(config, tmp_path_factory.mktemp("capped"))
    yield running
    assert running.stop() == 0, running.log()


def rest_infer(gateway: Gateway, model: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=60)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", REST_BODY)
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def grpc_infer(gateway: Gateway, model: str) -> tuple[grpc.StatusCode, str]:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(ROW)
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=60)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            call = cast(grpc.Call, exc)  # a stub's RpcError is also the call
            code: grpc.StatusCode = call.code()
            return code, call.details() or ""


def all_at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread at the same time; their results, in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # a connection error is an outcome of its own
            results[i] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_http_requests_beyond_the_request_cap_get_503_with_retry_after(
    capped_gateway: Gateway,
) -> None:
    results = all_at_once([lambda: rest_infer(capped_gateway, "slow")] * 16)
    statuses = Counter(status for status, _, _ in results)
    print(f"16 concurrent requests with a cap of 4: {dict(statuses)}")
    assert set(statuses) == {200, 503}
    for status, headers, body in results:
        if status == 503:
            assert headers["retry-after"] == "1"
            assert b"serving its maximum of 4 requests at once" in body
    shed = metric_sum(
        scrape_metrics(capped_gateway),
        "switchyard_shed_requests_total",
        protocol="rest",
        reason="concurrency_limit",
    )
    assert shed == statuses[503]


def test_a_full_queue_answers_503_with_retry_after(capped_gateway: Gateway) -> None:
    results = all_at_once([lambda: rest_infer(capped_gateway, "tiny_queue")] * 4)
    refused = [(headers, body) for status, headers, body in results if status == 503]
    print(f"4 concurrent requests into a queue of 1: {len(refused)} refused")
    assert refused
    for headers, _ in refused:
        assert headers["retry-after"] == "1"


def test_requests_outliving_the_grace_get_503_and_unavailable(
    slow_model: Path, tmp_path: Path
) -> None:
    """shutdown_grace_s 0.5 (below a second), gRPC and HTTP in flight together: what the
    grace does not cover is answered 503 / UNAVAILABLE, never a 500, a CANCELLED or a
    traceback, and the gateway exits."""
    gateway = start_gateway(slow_config(slow_model, {"slow": 128}, shutdown_grace_s=0.5), tmp_path)
    try:
        calls: list[Callable[[], Any]] = [lambda: rest_infer(gateway, "slow")] * 30
        calls += [lambda: grpc_infer(gateway, "slow")] * 30
        results: list[Any] = []
        load = threading.Thread(target=lambda: results.extend(all_at_once(calls)))
        load.start()
        time.sleep(0.5)  # every call sent; a few served, most still queued
        signalled_s = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        returncode = gateway.process.wait(60)
        stopped_s = time.monotonic() - signalled_s
        load.join()
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    rest = Counter(r[0] if isinstance(r, tuple) else r for r in results[:30])
    grpc_codes = Counter(r[0].name if isinstance(r, tuple) else r for r in results[30:])
    print(f"stopped {stopped_s:.2f} s after SIGTERM (grace 0.5 s); REST {dict(rest)}, "
          f"gRPC {dict(grpc_codes)}")  # fmt: skip
    log = gateway.log()
    assert returncode == 0, log
    assert "Traceback" not in log and "switchyard stopped" in log
    assert set(rest) <= {200, 503} and rest[503] > 0, rest
    assert set(grpc_codes) <= {"OK", "UNAVAILABLE"} and grpc_codes["UNAVAILABLE"] > 0, grpc_codes
    for status, headers, body in results[:30]:
        if status == 503:
            assert headers["retry-after"] == "1" and b"shutting down" in body
    for code, details in results[30:]:
        if code is grpc.StatusCode.UNAVAILABLE:  # said by us, not grpc-core's cancellation
            assert "the server is shutting down" in details, details
    assert f"{rest[503]} HTTP request(s) answered 503" in log
    assert "gRPC call(s) answered UNAVAILABLE" in log

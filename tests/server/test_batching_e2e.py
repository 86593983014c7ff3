"""Batching, load shedding and deadlines through the real gateway, on a ~20 ms model."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.slow_model import build_slow_model

T = TypeVar("T")


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("slow")
    path = str(build_slow_model(workdir / "slow.onnx"))
    options = {"intra_op_threads": 1}
    config = {
        "models": [
            {
                "name": "slow_batched",
                "versions": [{"version": "1", "path": path}],
                "runtime_options": options,
                "batching": {"max_batch_size": 8, "max_queue_size": 64},
            },
            {
                "name": "slow_serial",
                "versions": [{"version": "1", "path": path}],
                "runtime_options": options,
                "batching": {"max_batch_size": 0, "max_queue_size": 2},
            },
        ]
    }
    gateway = start_gateway(config, workdir)
    yield gateway
    assert gateway.stop() == 0, gateway.log()


def rows(value: float) -> np.ndarray:
    return np.full((1, 4), value, dtype=np.float32)


async def infer_many(
    gateway: Gateway,
    model: str,
    values: list[float],
    **kwargs: float,  # infer()'s timeout (µs) or client_timeout (s)
) -> list[np.ndarray | InferenceServerException]:
    client = triton_aio.InferenceServerClient(gateway.grpc_url)

    async def one(value: float) -> np.ndarray | InferenceServerException:
        tensor = triton_aio.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(rows(value))
        try:
            return (await client.infer(model, [tensor], **kwargs)).as_numpy("y")
        except InferenceServerException as exc:
            return exc

    try:
        return await asyncio.gather(*(one(v) for v in values))
    finally:
        await client.close()


def test_concurrent_requests_share_batches_and_get_their_own_rows(slow_gateway: Gateway) -> None:
    values = [float(i) for i in range(1, 17)]
    results = asyncio.run(infer_many(slow_gateway, "slow_batched", values))
    for value, result in zip(values, results, strict=True):
        np.testing.assert_array_equal(result, rows(2 * value))
    batches = metric_sum(
        scrape_metrics(slow_gateway),
        "switchyard_batch_requests_count",
        model="slow_batched",
        version="1",
    )
    merged = metric_sum(
        scrape_metrics(slow_gateway),
        "switchyard_batch_requests_sum",
        model="slow_batched",
        version="1",
    )
    assert merged == len(values)
    # 16 requests arriving within one ~20 ms model call cannot have needed 16 calls.
    assert batches < len(values)


def test_full_queue_is_refused_at_once(slow_gateway: Gateway) -> None:
    results = asyncio.run(infer_many(slow_gateway, "slow_serial", [1.0] * 12))
    refused = [r for r in results if isinstance(r, InferenceServerException)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert refused, "12 concurrent requests into a queue of 2 must shed some"
    assert len(served) >= 3  # one running and two queued at least
    for error in refused:
        assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "queue is full (max_queue_size 2)" in error.message()
    for result in served:
        np.testing.assert_array_equal(result, rows(2.0))
    assert metric_sum(
        scrape_metrics(slow_gateway),
        "switchyard_refused_requests_total",
        model="slow_serial",
        reason="queue_full",
    ) >= len(refused)


def post_infer(gateway: Gateway, model: str, timeout_us: int | None) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]
    }
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    connection.request("POST", f"/v2/models/{model}/infer", body=json.dumps(body))
    response = connection.getresponse()
    answer: dict[str, Any] = json.loads(response.read())  # a JSON object, of mixed values
    return response.status, answer


async def busy_then(gateway: Gateway, coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Occupy the serial model with two requests, then run the probe while they compute."""
    busy = asyncio.create_task(infer_many(gateway, "slow_serial", [1.0, 1.0]))
    await asyncio.sleep(0.005)
    try:
        return await coro_factory()
    finally:
        await busy


def test_request_past_its_deadline_is_dropped_before_running(slow_gateway: Gateway) -> None:
    status, body = asyncio.run(
        busy_then(
            slow_gateway, lambda: asyncio.to_thread(post_infer, slow_gateway, "slow_serial", 5000)
        )
    )
    assert status == 504, body
    assert "deadline" in body["error"]
    grpc_results = asyncio.run(
        busy_then(
            slow_gateway, lambda: infer_many(slow_gateway, "slow_serial", [1.0], timeout=5000)
        )
    )
    assert isinstance(grpc_results[0], InferenceServerException)
    assert grpc_results[0].status() == "StatusCode.DEADLINE_EXCEEDED"
    assert (
        metric_sum(
            scrape_metrics(slow_gateway),
            "switchyard_refused_requests_total",
            model="slow_serial",
            reason="deadline_exceeded",
        )
        >= 2
    )
    # A generous timeout is served normally.
    status, body = post_infer(slow_gateway, "slow_serial", 10_000_000)
    assert status == 200 and body["outputs"][0]["data"] == [2.0] * 4


def test_grpc_deadline_propagates(slow_gateway: Gateway) -> None:
    """A caller whose gRPC deadline passes while queued is never run."""

    async def probe() -> list[np.ndarray | InferenceServerException]:
        return await infer_many(slow_gateway, "slow_serial", [1.0], client_timeout=0.005)

    labels = {"model": "slow_serial", "version": "1"}
    ran_before = metric_sum(scrape_metrics(slow_gateway), "switchyard_batch_requests_sum", **labels)
    (result,) = asyncio.run(busy_then(slow_gateway, probe))
    assert isinstance(result, InferenceServerException)
    assert "DEADLINE_EXCEEDED" in result.status()
    # Only the two busy requests ran; the probe left the queue without reaching the model.
    assert (
        metric_sum(scrape_metrics(slow_gateway), "switchyard_batch_requests_sum", **labels)
        == ran_before + 2
    )


def test_batch_metrics_are_exported(slow_gateway: Gateway) -> None:
    asyncio.run(infer_many(slow_gateway, "slow_batched", [1.0, 2.0]))
    text = scrape_metrics(slow_gateway)
    for name in (
        "switchyard_batch_size_rows_bucket",
        "switchyard_queue_time_seconds_bucket",
        "switchyard_compute_time_seconds_bucket",
        "switchyard_queue_depth",
    ):
        assert re.search(rf'^{name}{{.*model="slow_batched"', text, re.M), name


def test_grpc_calls_over_the_concurrency_cap_are_refused_at_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("capped")
    path = str(build_slow_model(workdir / "slow.onnx"))
    config = {
        "server": {"max_concurrent_rpcs": 2},
        "models": [
            {
                "name": "slow_serial",
                "versions": [{"version": "1", "path": path}],
                "batching": {"max_batch_size": 0},
            }
        ],
    }
    gateway = start_gateway(config, workdir)
    try:
        results = asyncio.run(infer_many(gateway, "slow_serial", [1.0] * 8))
    finally:
        gateway.stop()
    refused = [r for r in results if isinstance(r, InferenceServerException)]
    assert refused and all(r.status() == "StatusCode.RESOURCE_EXHAUSTED" for r in refused)
    assert sum(isinstance(r, np.ndarray) for r in results) >= 2

"""gRPC overload through the real gateway: shed by Switchyard's bounds with RESOURCE_EXHAUSTED
at once and counted, never by grpc-core (CANCELLED) or left to miss deadlines.

Statuses and counts are asserted, timing only as a generous bound on accepted latency (ten
times the configured wait bound, against about twenty without it); the figures are printed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest

from loadtests.clients import RequestSpec, error_kind, open_client
from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.loadgen import LoadGenerator
from loadtests.overload import OverloadSettings, format_report, gateway_config, measure
from loadtests.slow_model import build_slow_model
from switchyard.demo.build_model import ensure_built
from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import open_inference_pb2_grpc as pb_grpc
from switchyard.server.config import parse_config
from switchyard.server.grpc_ingress import InferenceServicer, create_grpc_server
from switchyard.server.inference import InferenceService
from switchyard.server.metrics import ServerMetrics
from switchyard.server.repository_api import RepositoryApi

SHED = "switchyard_shed_requests_total"

# A model of about 10-20 ms a run, one row per run: capacity is tens of requests a second,
# so that 3x of it leaves the event loop and the client idle most of the time.
OVERLOAD = OverloadSettings(
    model="slow",
    work_dim=768,
    max_batch_size=1,
    max_queue_wait_s=0.2,
    factor=3.0,
    capacity_concurrency=4,
    capacity_s=1.5,
    warmup_s=0.5,
    duration_s=3.0,
    # Far more than the queue-wait bound: without it (a queue of 1024 runs) requests miss it.
    timeout_s=2.0,
    processes=1,
)


@pytest.fixture(scope="module")
def overload_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("overload")
    gateway = start_gateway(gateway_config(OVERLOAD, workdir), workdir)
    yield gateway
    assert gateway.stop() == 0, gateway.log()


def test_three_times_capacity_is_shed_with_resource_exhausted_and_counted(
    overload_gateway: Gateway,
) -> None:
    with LoadGenerator(OVERLOAD.processes, progress=False) as generator:
        report = measure(overload_gateway, OVERLOAD, generator)
    print(format_report(report))
    assert set(report.statuses) <= {"OK", "RESOURCE_EXHAUSTED"}, report.statuses
    assert report.statuses.get("OK", 0) > 0, "nothing was served"
    assert report.refusals_seen > 0, "3x capacity was not shed"
    assert report.shed_counted == {"queue_wait": report.refusals_seen}
    assert report.run["first_error"] is None or "retry later" in report.run["first_error"]


def _request(value: float) -> pb.ModelInferRequest:
    x = np.full((1, 4), value, dtype=np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
    return pb.ModelInferRequest(
        model_name="slow", inputs=[tensor], raw_input_contents=[x.tobytes()]
    )


async def _concurrent_calls(url: str, count: int) -> list[grpc.StatusCode | str]:
    """`count` ModelInfer calls at once; each answer's code, or its details when refused."""
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def one(value: float) -> grpc.StatusCode | str:
            try:
                await stub.ModelInfer(_request(value), timeout=30)
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return error.details() or ""
                return error.code()
            return grpc.StatusCode.OK

        live = stub.ServerLive(pb.ServerLiveRequest(), timeout=30)
        answers = await asyncio.gather(*(one(float(i)) for i in range(count)))
        assert (await live).live  # liveness is never refused, even at the bound
        return list(answers)


def test_calls_beyond_max_concurrent_rpcs_are_refused_by_us_and_counted(tmp_path: Path) -> None:
    config = {
        "server": {"max_concurrent_rpcs": 2},
        "models": [
            {
                "name": "slow",
                "versions": [
                    {"version": "1", "path": str(build_slow_model(tmp_path / "slow.onnx"))}
                ],
                "runtime_options": {"intra_op_threads": 1},
                "batching": {"max_batch_size": 0},
            }
        ],
    }
    gateway = start_gateway(config, tmp_path)
    try:
        answers = asyncio.run(_concurrent_calls(gateway.grpc_url, 12))
        shed = metric_sum(scrape_metrics(gateway), SHED, protocol="grpc")
        by_reason = metric_sum(
            scrape_metrics(gateway), SHED, protocol="grpc", reason="max_concurrent_rpcs"
        )
    finally:
        assert gateway.stop() == 0, gateway.log()
    counts = Counter(a if isinstance(a, grpc.StatusCode) else "refused" for a in answers)
    print(f"12 calls at once, max_concurrent_rpcs 2: {dict(counts)}")
    refusals = [a for a in answers if isinstance(a, str)]
    assert set(counts) == {grpc.StatusCode.OK, "refused"}, counts
    assert counts[grpc.StatusCode.OK] >= 2  # the two admitted ran
    for details in refusals:
        assert "server.max_concurrent_rpcs 2" in details and "retry later" in details
    assert shed == by_reason == len(refusals)


class _Live:
    def live(self) -> bool:
        return True


class _LoopBlockingServicer(InferenceServicer):
    """ModelInfer holds the event loop for `block_s`: the Python front end is the bottleneck,
    and calls pile up inside grpc-core."""

    def __init__(self, block_s: float = 0.001) -> None:
        inference = cast(InferenceService, _Live())  # only ServerLive asks it anything
        super().__init__(inference, ServerMetrics(), cast(RepositoryApi, None))
        self._block_s = block_s

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:
        time.sleep(self._block_s)  # blocking on purpose
        return pb.ModelInferResponse(model_name=request.model_name)


def _serve_in_thread(
    ready: threading.Event,
    port: list[int],
    stop: threading.Event,
    servicer: InferenceServicer | None = None,
    max_pending_wait_s: float | None = None,
) -> None:
    async def serve() -> None:
        server, port[0] = create_grpc_server(
            servicer or _LoopBlockingServicer(),
            "127.0.0.1",
            0,
            1 << 20,
            max_concurrent_rpcs=100_000,
            max_pending_wait_s=max_pending_wait_s,
        )
        await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(None)

    asyncio.run(serve())


def test_grpc_core_never_sheds_calls_the_server_has_not_picked_up_yet() -> None:
    """grpc-core refuses calls waiting for the application beyond 1000 at random (3000 at
    most) as CANCELLED; create_grpc_server raises those limits, so that only our bounds
    shed. 2500 calls at once on a server whose loop is busy: every one is answered OK."""
    ready, stop, port = threading.Event(), threading.Event(), [0]
    thread = threading.Thread(target=_serve_in_thread, args=(ready, port, stop))
    thread.start()
    try:
        assert ready.wait(10)

        async def calls() -> Counter[str]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port[0]}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)

                async def one() -> str:
                    try:
                        await stub.ModelInfer(pb.ModelInferRequest(model_name="m"), timeout=60)
                    except grpc.aio.AioRpcError as error:
                        return error.code().name
                    return "OK"

                return Counter(await asyncio.gather(*(one() for _ in range(2500))))

        statuses = asyncio.run(calls())
    finally:
        stop.set()
        thread.join(30)
    print(f"2500 calls at once on a busy loop: {dict(statuses)}")
    assert statuses == {"OK": 2500}


BLOCK_S = 0.005  # each served call holds the loop this long: capacity ~200 calls a second
MAX_PENDING_WAIT_S = 0.2
BURST_CALLS = 800  # 4 s of work at once: 20x what the bound lets wait


async def _burst(url: str, count: int) -> tuple[list[tuple[str, float]], bool, str]:
    """`count` ModelInfer calls at once and a ServerLive among them: each call's status and
    seconds; whether the liveness call was answered live; one refusal's details."""
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ServerLive(pb.ServerLiveRequest(), timeout=10)  # connected
        details: list[str] = []

        async def one() -> tuple[str, float]:
            started_s = time.perf_counter()
            try:
                await stub.ModelInfer(pb.ModelInferRequest(model_name="m"), timeout=30)
            except grpc.aio.AioRpcError as error:
                details.append(error.details() or "")
                return error.code().name, time.perf_counter() - started_s
            return "OK", time.perf_counter() - started_s

        calls = [asyncio.ensure_future(one()) for _ in range(count)]
        live = await stub.ServerLive(pb.ServerLiveRequest(), timeout=30)
        answers = await asyncio.gather(*calls)
        refused = next((d for d in details if d), "")
        return list(answers), live.live, refused


def test_a_front_end_bound_burst_is_shed_by_pending_wait_with_accepted_latency_bounded() -> None:
    """The Python front end is the bottleneck (ModelInfer blocks the loop), so calls queue
    inside grpc-core, where neither max_concurrent_rpcs nor any queue of ours sees them.
    Calls that waited there longer than max_pending_wait_s are refused at once, counted, and
    the accepted ones stay within a generous multiple of the bound; without it every call
    would be served, the last after the whole burst's 4 s of work."""
    servicer = _LoopBlockingServicer(block_s=BLOCK_S)
    ready, stop, port = threading.Event(), threading.Event(), [0]
    thread = threading.Thread(
        target=_serve_in_thread, args=(ready, port, stop, servicer, MAX_PENDING_WAIT_S)
    )
    thread.start()
    try:
        assert ready.wait(10)
        answers, live, refused = asyncio.run(_burst(f"127.0.0.1:{port[0]}", BURST_CALLS))
    finally:
        stop.set()
        thread.join(30)
    statuses = Counter(status for status, _ in answers)
    accepted_s = sorted(seconds for status, seconds in answers if status == "OK")
    refused_s = sorted(seconds for status, seconds in answers if status != "OK")
    counted = servicer.metrics.registry.get_sample_value(
        SHED, {"protocol": "grpc", "reason": "pending_wait"}
    )
    p99 = accepted_s[int(0.99 * (len(accepted_s) - 1))] if accepted_s else float("nan")
    refusal_p99 = refused_s[int(0.99 * (len(refused_s) - 1))] if refused_s else float("nan")
    print(
        f"{BURST_CALLS} calls at once, {BLOCK_S * 1e3:g} ms of loop each, max_pending_wait_s "
        f"{MAX_PENDING_WAIT_S:g}: {dict(statuses)}; accepted p99 {p99 * 1e3:.0f} ms, max "
        f"{accepted_s[-1] * 1e3 if accepted_s else float('nan'):.0f} ms; refusal p99 "
        f"{refusal_p99 * 1e3:.0f} ms; counted {counted}"
    )
    assert set(statuses) <= {"OK", "RESOURCE_EXHAUSTED"}, statuses
    assert statuses["OK"] > 0, "nothing was served"
    assert statuses["RESOURCE_EXHAUSTED"] > BURST_CALLS / 2, "the burst was not shed"
    assert counted == statuses["RESOURCE_EXHAUSTED"]
    assert "server.grpc_max_pending_wait_s 0.2" in refused and "retry later" in refused
    assert live  # liveness is never refused, even at the bound
    # Without the bound the accepted p99 is the whole burst, about 4 s.
    assert p99 < 10 * MAX_PENDING_WAIT_S


def test_overload_is_shed_by_default_and_each_bound_can_be_turned_off(tmp_path: Path) -> None:
    """A config that says nothing about overload bounds both queues (the batcher's and
    grpc-core's) at half a second of waiting; null turns each off."""
    model = {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}
    config = parse_config({"models": [model]}, tmp_path, "x.yaml", env={})
    options = config.models[0].batching.to_options(8)
    print(
        f"defaults: batching.max_queue_wait_s {options.max_queue_wait_s}, "
        f"server.grpc_max_pending_wait_s {config.server.grpc_max_pending_wait_s}"
    )
    assert options.max_queue_wait_s == 0.5
    assert config.server.grpc_max_pending_wait_s == 0.5
    off = parse_config(
        {
            "server": {"grpc_max_pending_wait_s": None},
            "models": [{**model, "batching": {"max_queue_wait_s": None}}],
        },
        tmp_path,
        "x.yaml",
        env={},
    )
    assert off.models[0].batching.to_options(8).max_queue_wait_s is None
    assert off.server.grpc_max_pending_wait_s is None


GATEWAY_BURST_CALLS = 6000  # ~2 s of the demo's front-end work (~320 us a call here)


async def _gateway_burst(url: str, count: int) -> list[tuple[str, float]]:
    client = open_client(RequestSpec(url=url, model="demo", timeout_s=30.0))
    try:
        await client.check()  # connected and answering

        async def one() -> tuple[str, float]:
            started_s = time.perf_counter()
            try:
                await client.call()
            except Exception as exc:
                return error_kind(exc), time.perf_counter() - started_s
            return "OK", time.perf_counter() - started_s

        return list(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        await client.close()


def test_the_gateway_sheds_a_front_end_bound_burst_by_pending_wait(tmp_path: Path) -> None:
    """The real gateway on the demo model (cheap, run on the event loop: the Python front
    end is the bottleneck): a burst of calls at once queues inside grpc-core; the calls that
    waited there longer than server.grpc_max_pending_wait_s are refused and counted, and
    nothing but OK and RESOURCE_EXHAUSTED comes back. (No latency is asserted here: the
    client shares the machine's two cores; the figures are printed.)"""
    config = {
        # Room for the whole burst: only the pending wait sheds here (a front end quick to
        # pick calls up can otherwise admit over 1024 in the first bound's worth of time).
        "server": {
            "grpc_max_pending_wait_s": MAX_PENDING_WAIT_S,
            "max_concurrent_rpcs": GATEWAY_BURST_CALLS,
        },
        "models": [
            {
                "name": "demo",
                "versions": [{"version": "1", "path": str(ensure_built())}],
                "runtime_options": {"intra_op_threads": 1},
                # No queue-wait bound in the batcher: the pending wait is what sheds here.
                "batching": {"max_batch_size": 1, "max_queue_wait_s": None},
            }
        ],
    }
    gateway = start_gateway(config, tmp_path)
    try:
        answers = asyncio.run(_gateway_burst(gateway.grpc_url, GATEWAY_BURST_CALLS))
        metrics = scrape_metrics(gateway)
    finally:
        assert gateway.stop() == 0, gateway.log()
    statuses = Counter(status for status, _ in answers)
    accepted_s = sorted(seconds for status, seconds in answers if status == "OK")
    counted = metric_sum(metrics, SHED, protocol="grpc", reason="pending_wait")
    # Every refusal is counted, whichever bound made it (a call admitted just under the
    # pending wait can still find the batcher's queue full).
    counted_all = metric_sum(metrics, SHED, protocol="grpc")
    p99 = accepted_s[int(0.99 * (len(accepted_s) - 1))] if accepted_s else float("nan")
    print(
        f"gateway, demo model, {GATEWAY_BURST_CALLS} calls at once, grpc_max_pending_wait_s "
        f"{MAX_PENDING_WAIT_S:g}: {dict(statuses)}; accepted p99 {p99 * 1e3:.0f} ms; "
        f"shed counter {counted:.0f}"
    )
    assert set(statuses) <= {"OK", "RESOURCE_EXHAUSTED"}, statuses
    assert statuses["OK"] > 0
    assert statuses["RESOURCE_EXHAUSTED"] > 0, "the burst was not shed"
    assert counted > 0, "the pending wait refused nothing"
    assert counted_all == statuses["RESOURCE_EXHAUSTED"]

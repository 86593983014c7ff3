"""The Triton runtime's retries, deadline and circuit breaker against a real gRPC server
whose answers the test scripts (the real-Triton tests live in tests/triton/)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest

from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import open_inference_pb2_grpc as pb_grpc
from switchyard.runtimes.circuit_breaker import CircuitState
from switchyard.runtimes.errors import DeadlineExceeded, InvalidArgument, Unavailable
from switchyard.runtimes.triton_runtime import TritonModel, TritonOptions
from switchyard.server.config import ModelConfig
from switchyard.server.metrics import ServerMetrics
from switchyard.server.repository import create_runtime


class ScriptedTriton(pb_grpc.GRPCInferenceServiceServicer):
    """Answers ModelInfer with `2 * x`, after failing as `script` says (one entry a call)."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode | float] = []
        self.calls = 0

    async def ModelInfer(
        self,
        request: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[pb.ModelInferRequest, pb.ModelInferResponse],
    ) -> pb.ModelInferResponse:
        self.calls += 1
        step = self.script.pop(0) if self.script else None
        if isinstance(step, grpc.StatusCode):
            await context.abort(step, f"scripted {step.name}")
        if isinstance(step, float):
            await asyncio.sleep(step)
        x = np.frombuffer(request.raw_input_contents[0], np.float32)
        output = pb.ModelInferResponse.InferOutputTensor(
            name="y", datatype="FP32", shape=request.inputs[0].shape
        )
        return pb.ModelInferResponse(outputs=[output], raw_output_contents=[(2 * x).tobytes()])

    async def ModelReady(
        self,
        request: pb.ModelReadyRequest,
        context: grpc.aio.ServicerContext[pb.ModelReadyRequest, pb.ModelReadyResponse],
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)


def run(scenario: Callable[[ScriptedTriton, str], Awaitable[None]]) -> None:
    async def main() -> None:
        servicer = ScriptedTriton()
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            await scenario(servicer, f"127.0.0.1:{port}")
        finally:
            await server.stop(0)

    asyncio.run(main())


class SkippableClock:
    """Monotonic time that a test can move forward at once."""

    def __init__(self) -> None:
        self.skipped_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped_s


def state(runtime: TritonModel) -> CircuitState:
    """The breaker's state now: read through a call, so that mypy keeps no narrowing from a
    check before the calls that changed it."""
    return runtime.breaker_state


def model(url: str, clock: SkippableClock | None = None, max_attempts: int = 3) -> TritonModel:
    options = TritonOptions(
        url=url,
        model_name="m",
        max_attempts=max_attempts,
        backoff_initial_s=0.01,
        breaker_failures=3,
        breaker_open_s=0.3,
    )
    return TritonModel(options, "m:1", clock=clock or SkippableClock())


X = {"x": np.arange(4, dtype=np.float32).reshape(2, 2)}


def test_transient_unavailable_is_retried_inside_the_deadline() -> None:
    async def scenario(servicer: ScriptedTriton, url: str) -> None:
        runtime = model(url)
        servicer.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
        outputs = await runtime.infer(X, ["y"])
        np.testing.assert_array_equal(outputs["y"], 2 * X["x"])
        assert servicer.calls == 3
        assert state(runtime) is CircuitState.CLOSED
        await runtime.aclose()

    run(scenario)


def test_caller_errors_pass_through_without_retry() -> None:
    async def scenario(servicer: ScriptedTriton, url: str) -> None:
        runtime = model(url)
        servicer.script = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(InvalidArgument, match="scripted INVALID_ARGUMENT"):
            await runtime.infer(X, ["y"])
        assert servicer.calls == 1
        await runtime.aclose()

    run(scenario)


def test_the_deadline_bounds_the_call() -> None:
    async def scenario(servicer: ScriptedTriton, url: str) -> None:
        runtime = model(url)
        servicer.script = [0.5]  # Triton takes 500 ms
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeadlineExceeded):
            await runtime.infer(X, ["y"], deadline_s=time.monotonic() + 0.05)
        assert loop.time() - started < 0.4
        await runtime.aclose()

    run(scenario)


async def opened_breaker(servicer: ScriptedTriton, url: str, clock: SkippableClock) -> TritonModel:
    """A runtime whose breaker three UNAVAILABLE answers in a row opened."""
    runtime = model(url, clock, max_attempts=1)
    servicer.script = [grpc.StatusCode.UNAVAILABLE] * 3
    for _ in range(3):
        with pytest.raises(Unavailable, match="unavailable"):
            await runtime.infer(X, ["y"])
    assert state(runtime) is CircuitState.OPEN
    return runtime


def test_the_breaker_opens_fails_fast_and_recovers() -> None:
    async def scenario(servicer: ScriptedTriton, url: str) -> None:
        clock = SkippableClock()
        runtime = await opened_breaker(servicer, url, clock)
        calls = servicer.calls
        with pytest.raises(Unavailable, match="circuit open"):
            await runtime.infer(X, ["y"])
        assert servicer.calls == calls  # failed fast, nothing sent
        assert not await runtime.ready()
        clock.skipped_s += 0.3  # breaker_open_s passed: the next call is the probe
        outputs = await runtime.infer(X, ["y"])
        np.testing.assert_array_equal(outputs["y"], 2 * X["x"])
        assert state(runtime) is CircuitState.CLOSED
        assert await runtime.ready()
        await runtime.aclose()

    run(scenario)


def test_a_probe_failing_outside_grpc_reopens_the_circuit() -> None:
    async def scenario(servicer: ScriptedTriton, url: str) -> None:
        clock = SkippableClock()
        runtime = await opened_breaker(servicer, url, clock)
        # The client side breaks: its channel is closed under it (grpc.aio raises its own
        # UsageError, no status from Triton).
        assert runtime._channel is not None
        await runtime._channel.close()
        clock.skipped_s += 0.3
        with pytest.raises(Unavailable, match=r"failed in the client \(UsageError\)"):
            await runtime.infer(X, ["y"])  # the probe
        assert state(runtime) is CircuitState.OPEN  # reported: not half-open for ever
        with pytest.raises(Unavailable, match="circuit open"):
            await runtime.infer(X, ["y"])
        clock.skipped_s += 0.3
        # The next probe goes out (and meets the closed channel again).
        with pytest.raises(Unavailable, match="failed in the client"):
            await runtime.infer(X, ["y"])
        await runtime.aclose()

    run(scenario)


def test_the_channel_carries_requests_up_to_the_servers_size() -> None:
    """A request over the channel's old fixed 64 MiB, under a server size of 96 MiB."""
    size_bytes = 96 * 1024 * 1024

    async def main() -> None:
        servicer = ScriptedTriton()
        limits = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        server = grpc.aio.server(options=limits)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        config = ModelConfig.model_validate(
            {
                "name": "m",
                "runtime": "triton",
                "versions": [{"version": "1"}],
                "triton": {"url": f"127.0.0.1:{port}", "batching": "triton"},
            }
        )
        runtime = create_runtime(
            config, config.versions[0], ServerMetrics(), max_request_size_bytes=size_bytes
        )
        try:
            x = np.ones((70, 256 * 1024), dtype=np.float32)  # 70 MiB
            outputs = await runtime.infer({"x": x}, ["y"], deadline_s=time.monotonic() + 60)
            assert outputs["y"].shape == x.shape and float(outputs["y"][-1, -1]) == 2.0
        finally:
            await runtime.aclose()
            await server.stop(0)

    asyncio.run(main())

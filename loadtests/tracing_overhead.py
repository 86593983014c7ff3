"""What tracing costs per ModelInfer: the gRPC servicer called in process, no network, on
the demo ranker (a model of microseconds, so that the serving path's own cost shows).

    python -m loadtests.tracing_overhead --tracing off   # also runs on a tree without tracing
    python -m loadtests.tracing_overhead --tracing on    # every span recorded, none exported

Prints the median of the rounds' mean microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import NoReturn

import grpc
import numpy as np

from switchyard.demo.paths import artifacts_dir
from switchyard.protos import open_inference_pb2 as pb
from switchyard.server.app import StandaloneServer
from switchyard.server.config import parse_config


class InProcessContext:
    """The servicer's view of a call, without a network: metadata and no deadline."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise RuntimeError(f"{code.name}: {details}")


async def measure(tracing_on: bool, calls: int, rounds: int) -> float:
    raw = {
        "server": {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0},
        "models": [
            {"name": "ranker", "versions": [{"version": "1", "path": "ranker.onnx"}]},
        ],
    }
    config = parse_config(raw, artifacts_dir(), "benchmark", env={})
    server = StandaloneServer(config)
    await server.start()
    if tracing_on:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from switchyard.server.tracing import TracingSettings, configure_tracing

        configure_tracing(TracingSettings(enabled=True), InMemorySpanExporter())
    try:
        servicer = server.core.oip_servicer()
        features = np.ones((4, 16), np.float32)
        request = pb.ModelInferRequest(model_name="ranker")
        request.inputs.add(name="features", datatype="FP32", shape=features.shape)
        request.raw_input_contents.append(features.tobytes())
        context = InProcessContext(
            (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
        )
        means_us = []
        for _ in range(rounds):
            started_s = time.perf_counter()
            for _ in range(calls):
                await servicer.ModelInfer(request, context)
            means_us.append((time.perf_counter() - started_s) / calls * 1e6)
    finally:
        await server.stop()
    return statistics.median(means_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracing", choices=["on", "off"], default="off")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    median_us = asyncio.run(measure(args.tracing == "on", args.calls, args.rounds))
    print(f"tracing {args.tracing}: {median_us:.1f} us per ModelInfer (median of rounds)")


if __name__ == "__main__":
    main()

"""Where the standalone gateway's time goes, set against the bare grpc.aio echo server.

Over gRPC, in alternating rounds (the machine is noisy: medians of the rounds), a closed
loop of ModelInfer (1 row of 16 FP32, pre-serialized, from the comparison's client
processes) and one caller back to back, against:

  echo        loadtests/echo_server.py: the ceiling of a Python gRPC front end here
  shell       Switchyard standalone whose ModelInfer answers as the echo server does
              (loadtests/front_end_shell.py): the gateway without its inference path
  model       the same shell whose ModelInfer runs the model with ONNX Runtime and answers,
              nothing else: the floor of any Python handler that runs the model
  standalone  Switchyard standalone as it serves (the demo config, as in loadtests.compare)

and, in this process without gRPC, the CPU one ModelInfer costs through the servicer
(decode, route, batch, ONNX Runtime, metrics, drift, encode), one call at a time: the
handler's own cost. The standalone's gap to echo is the shell's share plus the handler's;
`model` says how much of the handler's no Python gateway can avoid.

Run: `.venv/bin/python -m loadtests.bench_front_end [--rounds 5] [--duration-s 4]`
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import uvloop

from loadtests import targets
from loadtests.clients import RequestSpec
from loadtests.loadgen import LoadGenerator, LoadSpec
from loadtests.report import markdown_table, num
from loadtests.tracing_overhead import InProcessContext
from switchyard.demo.build_model import ensure_built
from switchyard.protos import open_inference_pb2 as pb
from switchyard.server.app import StandaloneServer
from switchyard.server.config import parse_config

SHELL_COMMAND = [sys.executable, "-m", "loadtests.front_end_shell"]
SERVERS = ("echo", "shell", "model", "standalone")
CLOSED_CALLERS = 64
SEQUENTIAL_DURATION_S = 2.0
IN_PROCESS_REPEATS = 9  # timed slices; the spread says how noisy the machine was


def infer_request_bytes(rows: int = 1) -> bytes:
    features = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
    message = pb.ModelInferRequest(model_name="ranker")
    message.inputs.add(name="features", datatype="FP32", shape=[rows, 16])
    message.raw_input_contents.append(features.tobytes())
    return message.SerializeToString()


async def handler_cpu_us(model_path: Path, calls: int) -> list[float]:
    """CPU microseconds per ModelInfer through the servicer, per timed slice of the calls:
    the wire bytes parsed, served and the answer serialized, as grpc would."""
    config = parse_config(targets.demo_serving_config(model_path), Path.cwd(), "bench")
    server = StandaloneServer(config)
    await server.core.start()
    try:
        infer = server.core.oip_servicer().ModelInfer
        wire, context = infer_request_bytes(), InProcessContext(())

        async def call() -> None:
            answer = await infer(pb.ModelInferRequest.FromString(wire), context)
            answer.SerializeToString()

        for _ in range(calls // 10):  # warm-up: the run placement settles, caches fill
            await call()
        per_slice = max(1, calls // IN_PROCESS_REPEATS)
        slices_us = []
        for _ in range(IN_PROCESS_REPEATS):
            started_s = time.process_time()
            for _ in range(per_slice):
                await call()
            slices_us.append((time.process_time() - started_s) / per_slice * 1e6)
        return slices_us
    finally:
        await server.core.stop()


def start(name: str, model_path: Path, workdir: Path) -> targets.Server:
    if name == "echo":
        return targets.start_echo(model_path, workdir)
    answer = {"shell": "echo", "model": "model"}.get(name)
    command = None if answer is None else [*SHELL_COMMAND, answer]
    return targets.start_standalone(model_path, workdir / name, command=command)


def measure(rounds: int, duration_s: float, model_path: Path) -> dict[str, dict[str, list[float]]]:
    """Per server, per round: closed-loop req/s, server CPU us a request, sequential p50 ms."""
    figures: dict[str, dict[str, list[float]]] = {
        name: {"closed_per_s": [], "server_us": [], "sequential_p50_ms": []} for name in SERVERS
    }
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for name in SERVERS:
            (workdir / name).mkdir()
        servers: dict[str, targets.Server] = {}
        try:
            for name in SERVERS:
                servers[name] = start(name, model_path, workdir)
            with LoadGenerator(2, progress=False) as generator:
                for round_index in range(rounds):
                    for name, server in servers.items():
                        request = RequestSpec(kind="grpc", url=server.grpc_url, rows=1)
                        closed = generator.run(
                            LoadSpec(request, "closed", concurrency=CLOSED_CALLERS,
                                     duration_s=duration_s, warmup_s=1.0),
                            server_cpu_s=server.cpu_s,
                        )  # fmt: skip
                        sequential = generator.run(
                            LoadSpec(request, "closed", concurrency=1,
                                     duration_s=SEQUENTIAL_DURATION_S, warmup_s=0.5)
                        )  # fmt: skip
                        if closed.errors or sequential.errors:
                            raise RuntimeError(f"{name} answered errors: {closed.first_error}")
                        served = figures[name]
                        served["closed_per_s"].append(closed.throughput_per_s)
                        cores = closed.server_cpu_cores or 0.0
                        served["server_us"].append(cores / closed.throughput_per_s * 1e6)
                        served["sequential_p50_ms"].append(sequential.p50_ms)
                    print(f"round {round_index + 1}/{rounds} done", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    return figures


def report(figures: dict[str, dict[str, list[float]]], handler_us: list[float]) -> str:
    echo = figures["echo"]
    rows = []
    for name, served in figures.items():
        pairs = zip(served["closed_per_s"], echo["closed_per_s"], strict=True)
        ratios = [ours / base for ours, base in pairs]
        pairs = zip(served["sequential_p50_ms"], echo["sequential_p50_ms"], strict=True)
        over_ms = [ours - base for ours, base in pairs]
        rows.append([
            name,
            num(statistics.median(served["closed_per_s"]), 0),
            f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})",
            num(statistics.median(served["server_us"]), 0),
            num(statistics.median(served["sequential_p50_ms"]), 2),
            f"{statistics.median(over_ms):+.2f}",
        ])  # fmt: skip
    headers = ["server", f"closed loop ({CLOSED_CALLERS} callers) req/s",
               "x echo, median (rounds)", "server CPU us/req", "sequential p50 ms",
               "p50 over echo, ms"]  # fmt: skip
    spread = sorted(handler_us)
    return (
        markdown_table(headers, rows)
        + f"\n\nIn process, no gRPC: {statistics.median(spread):.0f} us CPU per ModelInfer "
        f"through the servicer (median of {len(spread)} slices; {spread[0]:.0f} to "
        f"{spread[-1]:.0f})."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=4.0, help="closed loop, each")
    parser.add_argument("--in-process-calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    model_path = ensure_built()
    handler_us = uvloop.run(handler_cpu_us(model_path, args.in_process_calls))
    figures = measure(args.rounds, args.duration_s, model_path)
    print(report(figures, handler_us))
    return 0


if __name__ == "__main__":
    sys.exit(main())

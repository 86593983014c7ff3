"""Dynamic batching on versus off: single-row ModelInfer from many concurrent gRPC callers.

Runs the gateway twice on the demo model, once with the batcher's defaults
(max_batch_size 64, max_queue_delay_s 0) and once with max_batch_size 0 (one model call
per request), under the same closed-loop load, and prints throughput and p50/p99 side by
side. Both gateways run in turn, never at once, on the same machine.

Run: `.venv/bin/python -m loadtests.bench_batching [--concurrency 64] [--duration-s 10]`
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from loadtests.gateway_process import demo_model_config, start_gateway
from loadtests.grpc_load import LoadResult, run_closed_loop
from switchyard.demo.build_model import ensure_built


def measure(batching: dict[str, int], args: argparse.Namespace) -> LoadResult:
    config = demo_model_config(ensure_built())
    config["models"][0]["batching"] = batching
    with tempfile.TemporaryDirectory() as workdir:
        gateway = start_gateway(config, Path(workdir))
        try:
            return run_closed_loop(
                gateway.grpc_url,
                "ranker",
                args.concurrency,
                processes=args.processes,
                warmup_s=args.warmup_s,
                duration_s=args.duration_s,
            )
        finally:
            gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--max-queue-delay-s", type=float, default=0.0)
    args = parser.parse_args()
    runs = {
        "batching off (max_batch_size 0)": measure({"max_batch_size": 0}, args),
        f"batching on (64 rows, delay {args.max_queue_delay_s:g} s)": measure(
            {"max_batch_size": 64, "max_queue_delay_s": args.max_queue_delay_s}, args
        ),
    }
    off, on = runs.values()
    print(
        f"\n{args.concurrency} concurrent single-row callers, {args.processes} client processes, "
        f"{args.duration_s:.0f} s each"
    )
    print(f"| {'gateway':<36} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for name, result in runs.items():
        print(
            f"| {name:<36} | {result.throughput_per_s:8.0f} | {result.p50_ms:7.2f} "
            f"| {result.percentile_ms(0.99):7.2f} | {result.errors:6d} |"
        )
    print(
        f"throughput ratio on/off: {on.throughput_per_s / off.throughput_per_s:.2f}x; "
        f"p99 ratio on/off: {on.percentile_ms(0.99) / off.percentile_ms(0.99):.2f}x"
    )


if __name__ == "__main__":
    main()

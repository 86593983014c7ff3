"""What online drift costs: the demo ranker behind a real gateway process, drift off and on
(every request binned: no sampling), closed-loop gRPC load, rounds alternating in one run.

    python -m loadtests.bench_drift [--duration-s 10] [--rounds 2] [--concurrency 16]

Prints requests per second and the server's CPU microseconds per request for each setting
(the median of its rounds). The client shares the machine: compare the two, not absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from loadtests.gateway_process import demo_model_config, start_gateway
from loadtests.grpc_load import run_closed_loop
from loadtests.procstat import tree_cpu_s
from switchyard.demo.build_model import ensure_built


def measure(
    drift_on: bool, workdir: Path, concurrency: int, rows: int, duration_s: float
) -> tuple[float, float]:
    """(requests per second, server CPU us per request) of one round."""
    config = demo_model_config(ensure_built())
    # Every request binned: the cost of drift at its most, not of its sampling.
    config["drift"] = {"enabled": drift_on, "max_rows_per_s": 1e9, "queue_size": 100_000}
    gateway = start_gateway(config, workdir)
    try:
        run_closed_loop(gateway.grpc_url, "ranker", concurrency, 1, rows, 0.5, 1.0)  # warm
        cpu_before_s = tree_cpu_s(gateway.process.pid)
        result = run_closed_loop(gateway.grpc_url, "ranker", concurrency, 1, rows, 0.0, duration_s)
        cpu_s = tree_cpu_s(gateway.process.pid) - cpu_before_s
    finally:
        gateway.stop()
    assert result.errors == 0, f"{result.errors} requests failed"
    return result.throughput_per_s, cpu_s / max(result.completed, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for drift_on in (False, True):
                workdir = Path(tmp) / f"{round_index}-{drift_on}"
                workdir.mkdir()
                results[drift_on].append(
                    measure(drift_on, workdir, args.concurrency, args.rows, args.duration_s)
                )
    for drift_on, rounds in results.items():
        rate = statistics.median(r for r, _ in rounds)
        cpu_us = statistics.median(c for _, c in rounds)
        print(
            f"drift {'on ' if drift_on else 'off'}: {rate:8.0f} req/s, "
            f"{cpu_us:6.1f} server CPU us/req ({args.rows} row(s)/request, "
            f"{args.concurrency} callers, median of {len(rounds)} rounds)"
        )


if __name__ == "__main__":
    main()

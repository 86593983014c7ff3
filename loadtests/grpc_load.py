"""Closed-loop gRPC ModelInfer load from several client processes (tritonclient.grpc.aio)."""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from loadtests.latency import percentile_s


@dataclass(frozen=True)
class LoadResult:
    completed: int
    errors: int
    duration_s: float
    latencies_s: list[float]

    @property
    def throughput_per_s(self) -> float:
        return self.completed / self.duration_s

    def percentile_ms(self, q: float) -> float:
        return percentile_s(self.latencies_s, q) * 1e3

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1e3 if self.latencies_s else float("nan")


async def _closed_loop(
    url: str, model: str, concurrency: int, rows: int, warmup_s: float, duration_s: float
) -> LoadResult:
    client = triton_aio.InferenceServerClient(url)
    features = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    async def caller() -> None:
        nonlocal errors
        tensor = triton_aio.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        while (sent := time.perf_counter()) < stop_at:
            try:
                await client.infer(model, [tensor])
            except InferenceServerException:
                errors += sent >= measure_from
                continue
            if sent >= measure_from:
                latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await client.close()
    return LoadResult(len(latencies), errors, duration_s, latencies)


def _worker(args: tuple[str, str, int, int, float, float]) -> LoadResult:
    return asyncio.run(_closed_loop(*args))


def run_closed_loop(
    url: str,
    model: str,
    concurrency: int,
    processes: int = 2,
    rows: int = 1,
    warmup_s: float = 2.0,
    duration_s: float = 10.0,
) -> LoadResult:
    """`concurrency` callers spread over `processes` client processes, each sending as soon
    as its previous answer arrives; only requests sent after the warm-up are counted."""
    per_process = [
        concurrency // processes + (i < concurrency % processes) for i in range(processes)
    ]
    jobs = [(url, model, n, rows, warmup_s, duration_s) for n in per_process if n]
    with ProcessPoolExecutor(len(jobs)) as pool:
        parts = list(pool.map(_worker, jobs))
    return LoadResult(
        completed=sum(p.completed for p in parts),
        errors=sum(p.errors for p in parts),
        duration_s=duration_s,
        latencies_s=[x for p in parts for x in p.latencies_s],
    )

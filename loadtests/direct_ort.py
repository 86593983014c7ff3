"""The compute floor: ONNX Runtime called in this process, no network, no serving code.

Two measurements of the same session (intra-op threads 1, as the served targets):
- `closed`: `threads` loops calling the model back to back: its request ceiling here;
- `open`: one call every 1/rate seconds from one thread, latency from the scheduled time.
Both bounded by time and by a call count.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from loadtests.latency import LatencyHistogram

MAX_CALLS_PER_THREAD = 10_000_000  # a bound on the loop besides its duration
SPIN_S = 0.0005  # the open loop spins the last half millisecond before each call


@dataclass(frozen=True)
class DirectResult:
    mode: str
    rows: int
    threads: int
    offered_rate_per_s: float | None
    duration_s: float
    calls: int
    throughput_per_s: float  # calls per second (each of `rows` rows)
    latency_ms: dict[str, float]
    cpu_cores: float  # this process over the run


def _session(model_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class DirectOrt:
    def __init__(self, model_path: Path, rows: int = 1, columns: int = 16) -> None:
        self.rows = rows
        self._session = _session(model_path)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        self._features = np.random.default_rng(0).normal(size=(rows, columns)).astype(np.float32)

    def call(self) -> None:
        self._session.run(self._outputs, {self._input: self._features})

    def closed(self, duration_s: float, threads: int = 1, warmup_s: float = 0.5) -> DirectResult:
        histograms = [LatencyHistogram() for _ in range(threads)]
        start_s = time.perf_counter() + 0.05
        measure_from_s, end_s = start_s + warmup_s, start_s + warmup_s + duration_s
        cpu_marks: list[float] = []

        def loop(hist: LatencyHistogram) -> None:
            time.sleep(max(0.0, start_s - time.perf_counter()))
            for _ in range(MAX_CALLS_PER_THREAD):
                sent_s = time.perf_counter()
                if sent_s >= end_s:
                    return
                self.call()
                if sent_s >= measure_from_s:
                    hist.record_s(time.perf_counter() - sent_s)

        workers = [threading.Thread(target=loop, args=(h,)) for h in histograms]
        for worker in workers:
            worker.start()
        time.sleep(max(0.0, measure_from_s - time.perf_counter()))
        cpu_marks.append(time.process_time())
        for worker in workers:
            worker.join()
        cpu_marks.append(time.process_time())
        merged = LatencyHistogram()
        for hist in histograms:
            merged.add_encoded(hist.encode())
        return self._result("closed", threads, None, duration_s, merged, cpu_marks)

    def open(self, rate_per_s: float, duration_s: float, warmup_s: float = 0.5) -> DirectResult:
        hist = LatencyHistogram()
        start_s = time.perf_counter()
        measure_from_s = start_s + warmup_s
        total = round(rate_per_s * (warmup_s + duration_s))
        cpu_marks: list[float] = []
        for index in range(total):
            scheduled_s = start_s + index / rate_per_s
            if scheduled_s >= measure_from_s and not cpu_marks:
                cpu_marks.append(time.process_time())
            delay_s = scheduled_s - time.perf_counter()
            if delay_s > SPIN_S:  # sleep most of the wait; a wake-up can be late by ~0.1 ms
                time.sleep(delay_s - SPIN_S)
            while time.perf_counter() < scheduled_s:
                pass
            self.call()
            if scheduled_s >= measure_from_s:
                hist.record_s(time.perf_counter() - scheduled_s)
        cpu_marks.append(time.process_time())
        return self._result("open", 1, rate_per_s, duration_s, hist, cpu_marks)

    def _result(
        self,
        mode: str,
        threads: int,
        rate_per_s: float | None,
        duration_s: float,
        hist: LatencyHistogram,
        cpu_marks: list[float],
    ) -> DirectResult:
        return DirectResult(
            mode=mode,
            rows=self.rows,
            threads=threads,
            offered_rate_per_s=rate_per_s,
            duration_s=duration_s,
            calls=hist.count,
            throughput_per_s=hist.count / duration_s,
            latency_ms=hist.summary(),
            cpu_cores=(cpu_marks[-1] - cpu_marks[0]) / duration_s if len(cpu_marks) > 1 else 0.0,
        )

"""Open- and closed-loop load from several client processes, recorded in HDR histograms.

Open loop: requests leave on a fixed schedule at a constant total rate, interleaved across
the client processes. Each latency runs from the request's scheduled send time (or its
actual send, when that was earlier), so a stalled server cannot hide its tail behind a
client that waited for it (no coordinated omission). How late the client itself sent is
recorded apart (`send_lag_ms`): a late client is a saturated client, not a slow server.
Closed loop: `concurrency` callers, each sending as soon as its previous answer arrives.

Only requests scheduled (open) or sent (closed) inside the measured window count toward
latency and errors; throughput is the successful answers that arrived inside it. The
warm-up runs first, under the same load. Every loop is bounded in time and count, and every
request carries a deadline.

  .venv/bin/python -m loadtests.loadgen --target grpc --url 127.0.0.1:8001 \
      --mode open --rate 200 400 800 --duration-s 5 --processes 2 [--plot lat.png]
  .venv/bin/python -m loadtests.loadgen --target recommend-rest --url 127.0.0.1:8000 \
      --mode closed --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import uvloop
from tqdm import tqdm

from loadtests.clients import KINDS, Client, RequestSpec, check_once, error_kind, open_client
from loadtests.latency import LatencyHistogram
from loadtests.procstat import machine_busy_cpu_s

# uvloop's timers have millisecond resolution (shorter sleeps return at once and would spin
# a core), so requests due within the next millisecond leave together, slightly early.
SEND_LEAD_S = 0.001
MIN_SLEEP_S = 0.001
START_DELAY_S = 0.3  # lets every client process pick up its job before the common start
DRAIN_MARGIN_S = 2.0  # past the request deadline, what is still running is cancelled
ERROR_BACKOFF_S = 0.001  # a closed-loop caller whose request failed waits, not spins
MAX_CALLS_PER_CALLER = 10_000_000  # closed loop: a count bound besides the time bound
POLL_S = 0.1
RUN_MARGIN_S = 60.0  # past the run's planned end and drain, the parent gives up on it


@dataclass(frozen=True)
class LoadSpec:
    request: RequestSpec
    mode: str = "open"  # open | closed
    rate_per_s: float = 100.0  # open loop: all client processes together
    concurrency: int = 8  # closed loop: callers over all client processes
    duration_s: float = 5.0
    warmup_s: float = 1.0
    max_in_flight: int = 4096  # per client process (open loop); beyond it requests are dropped


@dataclass
class LoadResult:
    kind: str
    url: str
    mode: str
    processes: int
    offered_rate_per_s: float | None  # open loop
    concurrency: int | None  # closed loop
    warmup_s: float
    duration_s: float
    requests: int  # scheduled (open) or sent (closed) inside the window
    ok: int
    errors: int
    throughput_per_s: float  # successful answers that arrived inside the window, per second
    latency_ms: dict[str, float]
    send_lag_ms: dict[str, float]  # open loop: how late the client sent, from the schedule
    client_cpu_cores: float  # all client processes, over the window
    machine_cpu_cores: float  # every process on the machine, over the window
    server_cpu_cores: float | None = None  # the server's process tree, when one was given
    error_kinds: dict[str, int] = field(default_factory=dict)
    # Per error kind, how long its answers took (as latency_ms): a refusal should be fast.
    error_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # Every answer of the run by kind ("OK" too), inside the window or not: what the server
    # answered, to set against its own counters.
    answered_kinds: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["p50_ms"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["p99_ms"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- in each client process ----------------------------------------------------------------

_progress: Any = None  # shared counters of answers, one slot per job (set by _init_worker)


def _init_worker(progress: Any) -> None:
    global _progress
    _progress = progress
    import grpc  # noqa: F401  (paid once per process, not inside the first timed run)


@dataclass(frozen=True)
class _Job:
    spec: LoadSpec
    index: int
    processes: int
    start_wall_s: float


@dataclass
class _Recorder:
    """Counts one process's answers; only those whose origin lies in the window count."""

    slot: int
    measure_from_s: float
    measure_to_s: float
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    answered: int = 0
    answered_kinds: Counter[str] = field(default_factory=Counter)  # window or not
    requests: int = 0
    ok_in_window: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_latency: dict[str, LatencyHistogram] = field(default_factory=dict)
    first_error: str | None = None
    cpu_marks: list[tuple[float, float]] = field(default_factory=list)  # (wall, process CPU)

    def mark_cpu(self) -> None:
        self.cpu_marks.append((time.perf_counter(), time.process_time()))

    def done(self, origin_s: float, sent_s: float, exc: BaseException | None) -> None:
        now_s = time.perf_counter()
        self.answered += 1
        _progress[self.slot] = self.answered
        self.answered_kinds["OK" if exc is None else error_kind(exc)] += 1
        if exc is None and self.measure_from_s <= now_s < self.measure_to_s:
            self.ok_in_window += 1
        if not self.measure_from_s <= origin_s < self.measure_to_s:
            return
        self.requests += 1
        self.send_lag.record_s(max(0.0, sent_s - origin_s))
        latency_s = now_s - min(origin_s, sent_s)
        if exc is None:
            self.latency.record_s(latency_s)
        else:
            kind = self.fail(exc)
            self.error_latency.setdefault(kind, LatencyHistogram()).record_s(latency_s)

    def fail(self, exc: BaseException | str) -> str:
        """Count a failure; returns its kind."""
        kind = exc if isinstance(exc, str) else error_kind(exc)
        self.errors[kind] += 1
        self.first_error = self.first_error or (exc if isinstance(exc, str) else repr(exc))
        return kind


async def _timed(client: Client, rec: _Recorder, origin_s: float) -> None:
    sent_s = time.perf_counter()
    try:
        await client.call()
    except Exception as exc:
        rec.done(origin_s, sent_s, exc)
        return
    rec.done(origin_s, sent_s, None)


async def _open_loop(client: Client, job: _Job, start_s: float, rec: _Recorder) -> None:
    spec = job.spec
    period_s = job.processes / spec.rate_per_s
    first_s = start_s + job.index / spec.rate_per_s  # the processes' schedules interleave
    end_s = start_s + spec.warmup_s + spec.duration_s
    total = max(0, math.ceil((end_s - first_s) / period_s))
    pending: set[asyncio.Task[None]] = set()
    sent = 0
    while sent < total:
        horizon_s = time.perf_counter() + SEND_LEAD_S
        while sent < total and (origin_s := first_s + sent * period_s) <= horizon_s:
            sent += 1
            if len(pending) >= spec.max_in_flight:  # a dead server must not eat the memory
                if rec.measure_from_s <= origin_s < rec.measure_to_s:
                    rec.requests += 1
                    rec.fail("client in-flight limit")
                continue
            task = asyncio.create_task(_timed(client, rec, origin_s))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if sent < total:
            next_s = first_s + sent * period_s - SEND_LEAD_S
            await asyncio.sleep(max(MIN_SLEEP_S, next_s - time.perf_counter()))
    await _drain(pending, spec, rec)


async def _drain(pending: set[asyncio.Task[None]], spec: LoadSpec, rec: _Recorder) -> None:
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=spec.request.timeout_s + DRAIN_MARGIN_S)
    for task in late:  # deadlines make this rare; counted, not lost
        task.cancel()
        rec.requests += 1
        rec.fail("unfinished at drain")


async def _closed_loop(client: Client, job: _Job, start_s: float, rec: _Recorder) -> None:
    spec = job.spec
    callers = spec.concurrency // job.processes + (job.index < spec.concurrency % job.processes)
    end_s = start_s + spec.warmup_s + spec.duration_s

    async def caller() -> None:
        for _ in range(MAX_CALLS_PER_CALLER):
            sent_s = time.perf_counter()
            if sent_s >= end_s:
                return
            try:
                await client.call()
            except Exception as exc:
                rec.done(sent_s, sent_s, exc)
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            rec.done(sent_s, sent_s, None)

    await asyncio.gather(*(caller() for _ in range(callers)))


async def _drive(job: _Job) -> dict[str, Any]:
    spec = job.spec
    _progress[job.index] = 0
    start_s = time.perf_counter() + (job.start_wall_s - time.time())
    rec = _Recorder(job.index, start_s + spec.warmup_s, start_s + spec.warmup_s + spec.duration_s)
    loop = asyncio.get_running_loop()
    for at_s in (rec.measure_from_s, rec.measure_to_s):
        loop.call_later(at_s - time.perf_counter(), rec.mark_cpu)
    client = open_client(spec.request)
    try:
        await asyncio.sleep(max(0.0, start_s - time.perf_counter()))
        await (_open_loop if spec.mode == "open" else _closed_loop)(client, job, start_s, rec)
        # The last answer may come before the window closes: the CPU mark must not be lost.
        await asyncio.sleep(max(0.0, rec.measure_to_s - time.perf_counter()))
    finally:
        await client.close()
    if len(rec.cpu_marks) < 2:
        rec.mark_cpu()
    (wall0_s, cpu0_s), (wall1_s, cpu1_s) = rec.cpu_marks[:2]
    return {
        "latency": rec.latency.encode(),
        "send_lag": rec.send_lag.encode(),
        "requests": rec.requests,
        "ok_in_window": rec.ok_in_window,
        "errors": dict(rec.errors),
        "answered_kinds": dict(rec.answered_kinds),
        "error_latency": {kind: hist.encode() for kind, hist in rec.error_latency.items()},
        "first_error": rec.first_error,
        "cpu_cores": (cpu1_s - cpu0_s) / (wall1_s - wall0_s),
    }


def _run_job(job: _Job) -> dict[str, Any]:
    return uvloop.run(_drive(job))


# ---- in the parent ---------------------------------------------------------------------------


class LoadGenerator:
    """A pool of client processes, kept for run after run (spawning one costs about a second).

    Spawned, not forked: the parent may already hold gRPC channels, which do not survive a fork.
    """

    def __init__(self, processes: int = 2, progress: bool = True) -> None:
        self.processes = processes
        self.progress = progress
        context = multiprocessing.get_context("spawn")
        self._counters = context.Array("q", processes, lock=False)
        self._pool = ProcessPoolExecutor(
            processes, mp_context=context, initializer=_init_worker, initargs=(self._counters,)
        )
        # Start every process now (the pool spawns lazily), so that runs start together.
        list(self._pool.map(time.sleep, [0.2] * processes))

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def check(self, request: RequestSpec) -> str:
        """One validated request from this process; raises when the target answers wrongly."""
        return uvloop.run(check_once(request))

    def run(
        self, spec: LoadSpec, label: str = "", server_cpu_s: Callable[[], float] | None = None
    ) -> LoadResult:
        """One load run; `server_cpu_s` reads the server's CPU seconds so far, when known."""
        for slot in range(self.processes):
            self._counters[slot] = 0
        start_wall_s = time.time() + START_DELAY_S
        jobs = [_Job(spec, i, self.processes, start_wall_s) for i in range(self.processes)]
        futures = [self._pool.submit(_run_job, job) for job in jobs]
        window_s = (start_wall_s + spec.warmup_s, start_wall_s + spec.warmup_s + spec.duration_s)
        marks: list[tuple[float, float, float]] = []  # (wall, machine CPU, server CPU)
        give_up_s = window_s[1] + spec.request.timeout_s + DRAIN_MARGIN_S + RUN_MARGIN_S
        expected = round(spec.rate_per_s * (spec.warmup_s + spec.duration_s))
        with tqdm(
            total=expected if spec.mode == "open" else None,
            desc=label or f"{spec.mode} {spec.request.kind}",
            unit="req",
            leave=False,
            disable=not self.progress,
            file=sys.stderr,
        ) as bar:
            while True:
                done, _ = wait(futures, timeout=POLL_S, return_when=FIRST_EXCEPTION)
                now_s = time.time()
                while len(marks) < 2 and now_s >= window_s[len(marks)]:
                    server_s = server_cpu_s() if server_cpu_s else math.nan
                    marks.append((now_s, machine_busy_cpu_s(), server_s))
                bar.update(sum(self._counters) - bar.n)
                if len(done) == len(futures) or any(f.exception() for f in done):
                    break
                if now_s > give_up_s:
                    raise TimeoutError(f"client processes still running {RUN_MARGIN_S:.0f} s late")
        parts = [f.result() for f in futures]  # raises what a client process raised
        return _merge(spec, self.processes, parts, marks)


def _merge(
    spec: LoadSpec,
    processes: int,
    parts: list[dict[str, Any]],
    marks: list[tuple[float, float, float]],
) -> LoadResult:
    latency, send_lag = LatencyHistogram(), LatencyHistogram()
    errors: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    error_latency: dict[str, LatencyHistogram] = {}
    for part in parts:
        latency.add_encoded(part["latency"])
        send_lag.add_encoded(part["send_lag"])
        errors.update(part["errors"])
        answered.update(part["answered_kinds"])
        for kind, encoded in part["error_latency"].items():
            error_latency.setdefault(kind, LatencyHistogram()).add_encoded(encoded)
    machine_cores = server_cores = math.nan
    if len(marks) == 2:
        (t0, machine0, server0), (t1, machine1, server1) = marks
        machine_cores = (machine1 - machine0) / (t1 - t0)
        server_cores = (server1 - server0) / (t1 - t0)
    open_loop = spec.mode == "open"
    return LoadResult(
        kind=spec.request.kind,
        url=spec.request.url,
        mode=spec.mode,
        processes=processes,
        offered_rate_per_s=spec.rate_per_s if open_loop else None,
        concurrency=None if open_loop else spec.concurrency,
        warmup_s=spec.warmup_s,
        duration_s=spec.duration_s,
        requests=sum(p["requests"] for p in parts),
        ok=latency.count,
        errors=sum(errors.values()),
        throughput_per_s=sum(p["ok_in_window"] for p in parts) / spec.duration_s,
        latency_ms=latency.summary(),
        send_lag_ms=send_lag.summary() if open_loop else {},
        client_cpu_cores=sum(p["cpu_cores"] for p in parts),
        machine_cpu_cores=machine_cores,
        server_cpu_cores=None if math.isnan(server_cores) else server_cores,
        error_kinds=dict(errors),
        error_latency_ms={kind: hist.summary() for kind, hist in error_latency.items()},
        answered_kinds=dict(answered),
        first_error=next((p["first_error"] for p in parts if p["first_error"]), None),
    )


# ---- command line ----------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=KINDS, default="grpc", help="what to send")
    parser.add_argument("--url", default="127.0.0.1:8001", help="host:port (loopback)")
    parser.add_argument("--mode", choices=("open", "closed"), default="open")
    parser.add_argument("--rate", type=float, nargs="+", default=[100.0], help="req/s (open)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8], help="callers (closed)")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--max-in-flight", type=int, default=4096, help="per client process")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="each request's deadline")
    parser.add_argument("--model", default="ranker")
    parser.add_argument("--rows", type=int, default=1, help="ModelInfer rows of 16 FP32")
    parser.add_argument("--endpoint", default="recs")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=Path("loadgen.json"), help="results file")
    parser.add_argument("--plot", type=Path, default=None, help="latency/throughput PNG")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from loadtests.report import format_runs_table, plot_latency_vs_throughput, write_json

    args = _parse(argv)
    request = RequestSpec(
        kind=args.target,
        url=args.url,
        model=args.model,
        rows=args.rows,
        endpoint=args.endpoint,
        users=args.users,
        candidates=args.candidates,
        k=args.k,
        timeout_s=args.timeout_s,
    )
    base = LoadSpec(
        request,
        mode=args.mode,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        max_in_flight=args.max_in_flight,
    )
    if args.mode == "open":
        specs = [replace(base, rate_per_s=rate) for rate in args.rate]
    else:
        specs = [replace(base, concurrency=n) for n in args.concurrency]
    results: list[LoadResult] = []
    with LoadGenerator(args.processes, progress=not args.no_progress) as generator:
        print(f"check: {generator.check(request)}", file=sys.stderr)
        for spec in specs:
            results.append(generator.run(spec))
            print(format_runs_table(results[-1:], header=len(results) == 1), flush=True)
    write_json(args.json, {"command": sys.argv, "runs": [r.to_dict() for r in results]})
    print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_latency_vs_throughput({f"{args.target} {args.url}": results}, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

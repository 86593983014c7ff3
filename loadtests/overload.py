"""Overload over gRPC against a real gateway: is it shed by Switchyard, fast and counted?

  .venv/bin/python -m loadtests.overload                      # slow model, 3x, about 30 s
  .venv/bin/python -m loadtests.overload --model demo --factor 1.5 --capacity-steps 4 \
      --grpc-max-pending-wait-s none 0.5 --server-cpus 0     # front-end bound, off vs on
  .venv/bin/python -m loadtests.overload --max-queue-wait-s none   # the queue bound alone

1. Starts `switchyard serve` (loadtests/gateway_process.py) on one model: `slow`, a model of
   a few milliseconds per run off the event loop (loadtests/slow_model.py; the model is the
   bottleneck, as in production), or `demo`, the tiny ranker that runs on the event loop (the
   Python front end is the bottleneck). `--server-cpus` pins it (taskset) and the load
   generator to the other CPUs, so that on a small machine the two do not trade cores.
2. Capacity: a closed loop (`--capacity-concurrency` callers) for `--capacity-s`, then
   `--capacity-steps` open-loop steps up while the gateway keeps up (the closed loop
   underestimates a front end whose cost per call falls as calls overlap).
3. Overload: an open loop at `--factor` x capacity for `--duration-s` (loadtests/loadgen.py,
   latency from the scheduled send time, every request with a deadline).
4. Prints the shed fraction and every status seen, the p50/p99 of accepted requests, the p99
   of the refusals, and the gateway's switchyard_shed_requests_total{protocol="grpc"} by
   reason next to the RESOURCE_EXHAUSTED answers the client saw (they must be equal).
   Writes `--json`.

Several `--grpc-max-pending-wait-s` values run one gateway each, one after the other, at
the same offered rate (the capacity found on the first), reported one after the other.
REST is not driven here (the load generator has no OIP REST client).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from loadtests.clients import RequestSpec
from loadtests.gateway_process import Gateway, scrape_metrics, start_gateway
from loadtests.loadgen import LoadGenerator, LoadResult, LoadSpec
from loadtests.procstat import tree_cpu_s
from loadtests.report import num, write_json
from loadtests.slow_model import build_slow_model
from switchyard.demo.build_model import ensure_built

SHED_METRIC = "switchyard_shed_requests_total"
REFUSED = "RESOURCE_EXHAUSTED"
MODELS = ("slow", "demo")


@dataclass(frozen=True)
class OverloadSettings:
    model: str = "slow"
    work_dim: int = 768  # the slow model's matrix size: its run time (~10 ms here)
    max_batch_size: int = 1
    max_queue_size: int = 1024
    max_queue_wait_s: float | None = 0.25
    max_concurrent_rpcs: int = 1024
    grpc_max_pending_wait_s: float | None = 0.5  # server.grpc_max_pending_wait_s; None: off
    factor: float = 3.0
    capacity_concurrency: int = 4
    capacity_s: float = 3.0
    capacity_steps: int = 0  # open-loop steps after the closed loop (find_capacity)
    capacity_step_factor: float = 1.25
    capacity_p99_ms: float = 50.0
    warmup_s: float = 1.0
    duration_s: float = 5.0
    timeout_s: float = 5.0
    processes: int = 2
    server_cpus: str | None = None  # taskset list for the gateway; the clients get the rest


@dataclass
class OverloadReport:
    settings: OverloadSettings
    capacity_per_s: float
    offered_per_s: float
    requests: int
    statuses: dict[str, int]  # every answer of the overload run, OK included
    shed_fraction: float  # RESOURCE_EXHAUSTED answers of all requests
    accepted_latency_ms: dict[str, float]
    shed_latency_ms: dict[str, float]
    shed_counted: dict[str, float]  # the gateway's shed counter over the run, by reason
    server_cpu_cores: float | None
    run: dict[str, Any] = field(default_factory=dict)  # the whole LoadResult
    refusals_seen: int = 0  # RESOURCE_EXHAUSTED answers of the run, in the window or not

    @property
    def refusals_counted(self) -> float:
        return sum(self.shed_counted.values())


def gateway_config(settings: OverloadSettings, workdir: Path) -> dict[str, Any]:
    if settings.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {settings.model!r}")
    if settings.model == "slow":
        path = build_slow_model(workdir / "slow.onnx", work_dim=settings.work_dim)
    else:
        path = ensure_built()
    batching: dict[str, Any] = {
        "max_batch_size": settings.max_batch_size,
        "max_queue_size": settings.max_queue_size,
        "max_queue_wait_s": settings.max_queue_wait_s,  # null: off (the default is on)
    }
    return {
        "server": {
            "max_concurrent_rpcs": settings.max_concurrent_rpcs,
            "grpc_max_pending_wait_s": settings.grpc_max_pending_wait_s,
        },
        "models": [
            {
                "name": settings.model,
                "versions": [{"version": "1", "path": str(path)}],
                "runtime_options": {"intra_op_threads": 1},
                "batching": batching,
            }
        ],
    }


def request_spec(settings: OverloadSettings, gateway: Gateway) -> RequestSpec:
    if settings.model == "slow":
        return RequestSpec(
            url=gateway.grpc_url,
            model="slow",
            input_name="x",
            columns=4,
            timeout_s=settings.timeout_s,
        )
    return RequestSpec(url=gateway.grpc_url, model="demo", timeout_s=settings.timeout_s)


def shed_counts(gateway: Gateway) -> dict[str, float]:
    """switchyard_shed_requests_total{protocol="grpc"} by reason."""
    counts: dict[str, float] = {}
    for line in scrape_metrics(gateway).splitlines():
        if line.startswith(SHED_METRIC + "{") and 'protocol="grpc"' in line:
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = counts.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def find_capacity(gateway: Gateway, settings: OverloadSettings, generator: LoadGenerator) -> float:
    """Successful answers a second the gateway sustains.

    A closed loop first (`capacity_concurrency` callers); it underestimates a front end
    whose cost per call falls as calls overlap (the demo model), so with `capacity_steps`
    open-loop steps follow, each `capacity_step_factor` x the last, while the gateway keeps
    up (answers at least 95% of what is offered, accepted p99 under `capacity_p99_ms`):
    the capacity is the best throughput of the steps that kept up."""
    request = request_spec(settings, gateway)
    closed = generator.run(
        LoadSpec(
            request,
            mode="closed",
            concurrency=settings.capacity_concurrency,
            warmup_s=settings.warmup_s,
            duration_s=settings.capacity_s,
        ),
        label="capacity",
    )
    if closed.throughput_per_s <= 0:
        raise RuntimeError(f"no request succeeded while finding capacity: {closed.first_error}")
    capacity = closed.throughput_per_s
    rate = capacity
    for _ in range(settings.capacity_steps):
        step = generator.run(
            LoadSpec(request, mode="open", rate_per_s=rate, warmup_s=0.5, duration_s=1.5),
            label=f"capacity {rate:.0f}/s",
        )
        kept_up = (
            step.throughput_per_s >= 0.95 * rate
            and step.errors == 0
            and step.p99_ms < settings.capacity_p99_ms
        )
        if not kept_up:
            break
        capacity = max(capacity, step.throughput_per_s)
        rate *= settings.capacity_step_factor
    return capacity


def measure(
    gateway: Gateway,
    settings: OverloadSettings,
    generator: LoadGenerator,
    capacity_per_s: float | None = None,
) -> OverloadReport:
    """`factor` x capacity (found first unless given); the gateway must already serve
    settings.model."""
    request = request_spec(settings, gateway)
    if capacity_per_s is None:
        capacity_per_s = find_capacity(gateway, settings, generator)
    offered_per_s = settings.factor * capacity_per_s
    before = shed_counts(gateway)
    # No warm-up: every request of the run is counted, so that the client's refusals and
    # the gateway's counter cover the same requests.
    overload = generator.run(
        LoadSpec(
            request,
            mode="open",
            rate_per_s=offered_per_s,
            warmup_s=0.0,
            duration_s=settings.duration_s,
        ),
        label=f"{settings.factor:g}x",
        server_cpu_s=lambda: tree_cpu_s(gateway.process.pid),
    )
    after = shed_counts(gateway)
    return _report(settings, capacity_per_s, overload, before, after)


def _report(
    settings: OverloadSettings,
    capacity_per_s: float,
    overload: LoadResult,
    before: dict[str, float],
    after: dict[str, float],
) -> OverloadReport:
    statuses = {"OK": overload.ok, **overload.error_kinds}
    nan = float("nan")
    shed_latency = overload.error_latency_ms.get(REFUSED, {"p50_ms": nan, "p99_ms": nan})
    return OverloadReport(
        settings=settings,
        capacity_per_s=capacity_per_s,
        offered_per_s=overload.offered_rate_per_s or 0.0,
        requests=overload.requests,
        statuses=statuses,
        shed_fraction=statuses.get(REFUSED, 0) / max(1, overload.requests),
        accepted_latency_ms=overload.latency_ms,
        shed_latency_ms=shed_latency,
        shed_counted={
            reason: after[reason] - before.get(reason, 0.0)
            for reason in after
            if after[reason] != before.get(reason, 0.0)
        },
        server_cpu_cores=overload.server_cpu_cores,
        refusals_seen=overload.answered_kinds.get(REFUSED, 0),
        run=overload.to_dict(),
    )


def format_report(report: OverloadReport) -> str:
    s = report.settings
    statuses = ", ".join(f"{name} {count}" for name, count in sorted(report.statuses.items()))
    counted = ", ".join(f"{r} {n:.0f}" for r, n in sorted(report.shed_counted.items())) or "none"
    accepted, shed = report.accepted_latency_ms, report.shed_latency_ms
    wait = "unset" if s.max_queue_wait_s is None else f"{s.max_queue_wait_s:g} s"
    pending = "off" if s.grpc_max_pending_wait_s is None else f"{s.grpc_max_pending_wait_s:g} s"
    return "\n".join(
        [
            f"model {s.model}: max_batch_size {s.max_batch_size}, max_queue_size "
            f"{s.max_queue_size}, max_queue_wait_s {wait}, max_concurrent_rpcs "
            f"{s.max_concurrent_rpcs}, grpc_max_pending_wait_s {pending}",
            f"capacity {num(report.capacity_per_s, 0)} req/s; offered "
            f"{num(report.offered_per_s, 0)} req/s ({s.factor:g}x) for {s.duration_s:g} s: "
            f"{report.requests} requests",
            f"statuses: {statuses}",
            f"shed: {report.shed_fraction:.1%} as {REFUSED}; refusal p50 "
            f"{num(shed.get('p50_ms'), 2)} ms, p99 {num(shed.get('p99_ms'), 2)} ms",
            f"accepted: p50 {num(accepted.get('p50_ms'), 2)} ms, p99 "
            f"{num(accepted.get('p99_ms'), 2)} ms, max {num(accepted.get('max_ms'), 1)} ms",
            f"shed counter (grpc): {counted}; client saw {report.refusals_seen} refusals "
            f"({'equal' if report.refusals_counted == report.refusals_seen else 'NOT equal'})",
            f"server CPU {num(report.server_cpu_cores, 2)} cores",
        ]
    )


def _parse(argv: Sequence[str] | None) -> tuple[list[OverloadSettings], Path]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = OverloadSettings()
    parser.add_argument("--model", choices=MODELS, default=defaults.model)
    parser.add_argument("--work-dim", type=int, default=defaults.work_dim, help="slow model size")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--max-queue-size", type=int, default=defaults.max_queue_size)
    parser.add_argument(
        "--max-queue-wait-s",
        default=str(defaults.max_queue_wait_s),
        help="seconds, or none for no queue-wait bound",
    )
    parser.add_argument("--max-concurrent-rpcs", type=int, default=defaults.max_concurrent_rpcs)
    parser.add_argument(
        "--grpc-max-pending-wait-s",
        nargs="+",
        default=[str(defaults.grpc_max_pending_wait_s)],
        help="server.grpc_max_pending_wait_s: seconds, or none for off; several: one gateway "
        "each, at the same offered rate (the capacity of the first), reported side by side",
    )
    parser.add_argument("--capacity-steps", type=int, default=defaults.capacity_steps)
    parser.add_argument("--capacity-p99-ms", type=float, default=defaults.capacity_p99_ms)
    parser.add_argument(
        "--server-cpus",
        default=defaults.server_cpus,
        help="CPUs of the gateway (a taskset list, e.g. 0); the load generator gets the others",
    )
    parser.add_argument("--factor", type=float, default=defaults.factor, help="x capacity")
    parser.add_argument("--capacity-concurrency", type=int, default=defaults.capacity_concurrency)
    parser.add_argument("--capacity-s", type=float, default=defaults.capacity_s)
    parser.add_argument("--warmup-s", type=float, default=defaults.warmup_s)
    parser.add_argument("--duration-s", type=float, default=defaults.duration_s)
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s)
    parser.add_argument("--processes", type=int, default=defaults.processes)
    parser.add_argument("--json", type=Path, default=Path("overload.json"))
    args = parser.parse_args(argv)
    wait = _seconds_or_none(args.max_queue_wait_s)
    settings = replace(
        defaults,
        model=args.model,
        work_dim=args.work_dim,
        max_batch_size=args.max_batch_size,
        max_queue_size=args.max_queue_size,
        max_queue_wait_s=wait,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        grpc_max_pending_wait_s=_seconds_or_none(args.grpc_max_pending_wait_s[0]),
        capacity_steps=args.capacity_steps,
        capacity_p99_ms=args.capacity_p99_ms,
        server_cpus=args.server_cpus,
        factor=args.factor,
        capacity_concurrency=args.capacity_concurrency,
        capacity_s=args.capacity_s,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        timeout_s=args.timeout_s,
        processes=args.processes,
    )
    variants = [
        replace(settings, grpc_max_pending_wait_s=_seconds_or_none(text))
        for text in args.grpc_max_pending_wait_s
    ]
    return variants, args.json


def _seconds_or_none(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _pin_clients(server_cpus: str | None) -> list[str]:
    """The command prefix that puts the gateway on `server_cpus`; this process (and so its
    load-generator processes) moves to the other CPUs."""
    if server_cpus is None:
        return []
    cpus = {int(cpu) for cpu in server_cpus.split(",")}
    others = os.sched_getaffinity(0) - cpus
    if not others:
        raise ValueError(f"--server-cpus {server_cpus} leaves no CPU for the load generator")
    os.sched_setaffinity(0, others)
    return ["taskset", "-c", server_cpus]


def main(argv: Sequence[str] | None = None) -> int:
    variants, json_path = _parse(argv)
    prefix = _pin_clients(variants[0].server_cpus)
    command = [*prefix, sys.executable, "-m", "switchyard.server.cli"]
    reports: list[OverloadReport] = []
    capacity_per_s: float | None = None
    with LoadGenerator(variants[0].processes, progress=False) as generator:
        for settings in variants:
            with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
                workdir = Path(tmp)
                config = gateway_config(settings, workdir)
                gateway = start_gateway(config, workdir, command=command)
                try:
                    report = measure(gateway, settings, generator, capacity_per_s)
                finally:
                    gateway.stop()
            capacity_per_s = report.capacity_per_s  # the next variants get the same load
            reports.append(report)
            print(format_report(report) + "\n", flush=True)
    write_json(json_path, {"command": sys.argv, "runs": [asdict(r) for r in reports]})
    print(f"wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

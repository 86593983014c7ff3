"""Side by side on this machine: the same model, the same gRPC client and payload, targets:

  (1) echo            a bare grpc.aio server answering with the same payload size: the
                      ceiling of a Python gRPC front end here
  (2) ort             ONNX Runtime called in process, no network: the compute floor
  (3) standalone      Switchyard standalone (`switchyard serve`), one process
  (3w) standalone-workers   the same with `server.workers: auto` (Redis control store)
  (4) ray             Switchyard on Ray Serve (`serve --engine ray`), the model co-located
                      in the ingress, on Serve's fast path (its default)
  (4d) ray-deployment the same with the model in a deployment of its own
  (5) plain-ray       a Ray Serve deployment with @serve.batch around the same model,
                      through Ray Serve's gRPC proxy: what users build today
  (5f) plain-ray-fast the same in Serve's throughput-optimized mode (direct ingress on the
                      replica's port): the anchor to beat
  (6) triton          the same model on Triton (PyTriton, CPU)

Each server target, one at a time: started, checked with one request, then open-loop
ModelInfer at a fixed rate (p50/p99 there), one caller back to back (sequential p50), then a
step search over rising rates for the
highest throughput whose p99 stays under the bound (a step fails on p99, errors, or
answers falling behind the offered rate; the bracket is then narrowed), then a closed loop
(saturation throughput). Switchyard targets also answer Recommend over gRPC and REST at a
fixed rate. A target that cannot start is reported as not run; the others go on.

  .venv/bin/python -m loadtests.compare [--quick] [--targets echo standalone ...] \
      [--out loadtests/results]

Writes results.json, results.md (tables, ratios against (1) and (5), machine, command) and
latency_vs_throughput.png into --out.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from loadtests import targets
from loadtests.clients import RequestSpec
from loadtests.compare_report import machine_info, write_outputs
from loadtests.direct_ort import DirectOrt
from loadtests.loadgen import LoadGenerator, LoadResult, LoadSpec
from loadtests.procstat import machine_busy_cpu_s
from switchyard.demo.build_model import ensure_built

TARGETS = {
    "echo": "(1) grpc.aio echo server",
    "ort": "(2) ONNX Runtime in process",
    "standalone": "(3) Switchyard standalone",
    "standalone-workers": "(3w) Switchyard standalone, workers: auto",
    "ray": "(4) Switchyard on Ray Serve, co-located, fast path",
    "ray-deployment": "(4d) Switchyard on Ray Serve, model deployment, fast path",
    "plain-ray": "(5) plain Ray Serve + @serve.batch, gRPC proxy",
    "plain-ray-fast": "(5f) plain Ray Serve + @serve.batch, throughput-optimized",
    "triton": "(6) Triton (PyTriton)",
}


@dataclass(frozen=True)
class Settings:
    targets: tuple[str, ...] = tuple(TARGETS)
    rows: int = 1
    processes: int = 2
    p99_bound_ms: float = 50.0
    fixed_rate_per_s: float = 100.0
    fixed_duration_s: float = 5.0
    first_warmup_s: float = 2.0  # before the first run on a fresh server
    warmup_s: float = 1.0
    step_duration_s: float = 3.0
    start_rate_per_s: float = 200.0
    step_factor: float = 1.6
    max_rate_per_s: float = 50_000.0
    max_steps: int = 12
    refine_steps: int = 2
    max_error_fraction: float = 0.001
    min_done_fraction: float = 0.95
    closed_concurrency: int = 64  # a closed-loop run after the search; 0: none
    recommend_rate_per_s: float = 100.0  # 0: no Recommend runs
    settle_s: float = 0.5  # between runs, so a backlog left by an overloaded step is gone
    idle_sample_s: float = 1.0  # machine CPU sampled with the server idle, before any load
    ort_threads: int = 1
    plain_ray_batch_wait_timeout_s: float = 0.005


QUICK = {
    "fixed_duration_s": 1.5,
    "first_warmup_s": 0.5,
    "warmup_s": 0.5,
    "step_duration_s": 1.0,
    "step_factor": 2.5,
    "max_steps": 5,
    "refine_steps": 0,
    "recommend_rate_per_s": 50.0,
    "settle_s": 0.2,
    "idle_sample_s": 0.3,
}


def verdict(run: LoadResult, settings: Settings) -> tuple[bool, str]:
    """Whether a search step holds the bound, and if not, why."""
    reasons = []
    if not run.ok:
        reasons.append("no answers")
    elif run.p99_ms > settings.p99_bound_ms:
        reasons.append(f"p99 {run.p99_ms:.1f} ms > {settings.p99_bound_ms:g} ms")
    if run.errors > settings.max_error_fraction * max(1, run.requests):
        reasons.append(f"{run.errors} errors in {run.requests}")
    offered = run.offered_rate_per_s or 0.0
    if run.throughput_per_s < settings.min_done_fraction * offered:
        reasons.append(f"{run.throughput_per_s:.0f}/s done of {offered:.0f}/s offered")
    return not reasons, "; ".join(reasons)


def step_search(
    run_at: Callable[[float], dict[str, Any]], settings: Settings, steps: list[dict[str, Any]]
) -> None:
    """Geometric steps up from the start rate until one fails (down, if the first fails),
    then `refine_steps` geometric bisections of the pass/fail bracket; into `steps`."""
    passed_at: float | None = None
    failed_at: float | None = None
    rate = settings.start_rate_per_s
    while len(steps) < settings.max_steps and 1.0 <= rate <= settings.max_rate_per_s:
        step = run_at(rate)
        steps.append(step)
        if step["passed"]:
            passed_at = rate
            if failed_at is not None:
                break
            rate *= settings.step_factor
        else:
            failed_at = rate
            if passed_at is not None:
                break
            rate /= settings.step_factor
    for _ in range(settings.refine_steps):
        if passed_at is None or failed_at is None:
            break
        rate = math.sqrt(passed_at * failed_at)
        step = run_at(rate)
        steps.append(step)
        if step["passed"]:
            passed_at = rate
        else:
            failed_at = rate


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(name: str, run: LoadResult) -> str:
    if run.mode == "open":
        load = f"{run.offered_rate_per_s:,.0f} req/s offered"
    else:
        load = f"{run.concurrency} callers"
    return (
        f"  [{name}] {run.kind} {load}: {run.throughput_per_s:,.0f}/s done, "
        f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, errors {run.errors}, "
        f"server CPU {run.server_cpu_cores or 0:.2f}, client CPU {run.client_cpu_cores:.2f}"
    )


def measure_server(
    name: str,
    server: targets.Server,
    generator: LoadGenerator,
    settings: Settings,
    outcome: dict[str, Any],
) -> None:
    """Fixed rate, step search, closed loop and (Switchyard) Recommend on a running server,
    into `outcome` as they finish (so a failure keeps what was measured before it)."""
    outcome.update(check=server.check, startup_s=server.startup_s)
    before_s = machine_busy_cpu_s()
    time.sleep(settings.idle_sample_s)
    outcome["idle_machine_cpu_cores"] = (machine_busy_cpu_s() - before_s) / settings.idle_sample_s
    request = RequestSpec(kind="grpc", url=server.grpc_url, rows=settings.rows)

    def run(spec: LoadSpec, label: str) -> LoadResult:
        result = generator.run(spec, label=f"{name} {label}", server_cpu_s=server.cpu_s)
        _log(_describe(name, result))
        time.sleep(settings.settle_s)
        return result

    fixed = LoadSpec(
        request,
        rate_per_s=settings.fixed_rate_per_s,
        duration_s=settings.fixed_duration_s,
        warmup_s=settings.first_warmup_s,
    )
    outcome["fixed"] = run(fixed, "fixed rate").to_dict()

    def run_at(rate: float) -> dict[str, Any]:
        spec = LoadSpec(
            request,
            rate_per_s=rate,
            duration_s=settings.step_duration_s,
            warmup_s=settings.warmup_s,
        )
        result = run(spec, f"{rate:,.0f} req/s")
        passed, why = verdict(result, settings)
        return {**result.to_dict(), "passed": passed, "why": why}

    outcome["steps"] = []
    step_search(run_at, settings, outcome["steps"])
    sequential = replace(fixed, mode="closed", concurrency=1, duration_s=settings.step_duration_s)
    outcome["sequential"] = run(
        replace(sequential, warmup_s=settings.warmup_s), "1 caller"
    ).to_dict()
    if settings.closed_concurrency > 0:
        n = settings.closed_concurrency
        spec = replace(fixed, mode="closed", concurrency=n, duration_s=settings.step_duration_s)
        spec = replace(spec, warmup_s=settings.warmup_s)
        outcome["closed_loop"] = run(spec, f"{n} callers").to_dict()
    if server.serves_recommend and settings.recommend_rate_per_s > 0:
        outcome["recommend"] = {}
        for kind, url in (("recommend-grpc", server.grpc_url), ("recommend-rest", server.http_url)):
            assert url is not None
            spec = replace(
                fixed,
                request=RequestSpec(kind=kind, url=url),
                rate_per_s=settings.recommend_rate_per_s,
                warmup_s=settings.warmup_s,
            )
            outcome["recommend"][kind] = {
                "check": generator.check(spec.request),
                **run(spec, kind).to_dict(),
            }


def measure_direct(model_path: Path, settings: Settings) -> dict[str, Any]:
    """The floor: one thread at the fixed rate, `ort_threads` back to back, and 64-row calls."""
    direct = DirectOrt(model_path, rows=settings.rows)
    fixed = direct.open(settings.fixed_rate_per_s, settings.fixed_duration_s, settings.warmup_s)
    closed = direct.closed(settings.step_duration_s, settings.ort_threads, settings.warmup_s)
    batched = DirectOrt(model_path, rows=64).closed(settings.step_duration_s, 1, settings.warmup_s)
    _log(
        f"  [ort] {closed.throughput_per_s:,.0f} calls/s of {settings.rows} row(s); p99 at "
        f"{settings.fixed_rate_per_s:g}/s {fixed.latency_ms['p99_ms']:.3f} ms; "
        f"{batched.throughput_per_s * 64:,.0f} rows/s in 64-row calls"
    )
    return {
        "check": f"{settings.rows} row(s) of 16 FP32 per call, intra-op threads 1",
        "fixed": asdict(fixed),
        "closed": asdict(closed),
        "batched_64_rows": asdict(batched),
    }


def starters(settings: Settings) -> dict[str, Callable[[Path, Path], targets.Server]]:
    return {
        "echo": targets.start_echo,
        "standalone": targets.start_standalone,
        "standalone-workers": partial(targets.start_standalone, workers="auto"),
        "ray": targets.start_switchyard_ray,
        "ray-deployment": partial(targets.start_switchyard_ray, placement="deployment"),
        "plain-ray": partial(
            targets.start_plain_ray,
            batch_wait_timeout_s=settings.plain_ray_batch_wait_timeout_s,
        ),
        "plain-ray-fast": partial(
            targets.start_plain_ray,
            batch_wait_timeout_s=settings.plain_ray_batch_wait_timeout_s,
            fast_path=True,
        ),
        "triton": targets.start_triton_server,
    }


def run_comparison(settings: Settings, progress: bool = True) -> list[dict[str, Any]]:
    """Every target in turn, each isolated: a failure is recorded and the next one runs."""
    model_path = ensure_built()
    outcomes = []
    with LoadGenerator(settings.processes, progress=progress) as generator:
        for name in settings.targets:
            _log(f"{TARGETS[name]}")
            outcome: dict[str, Any] = {"name": name, "title": TARGETS[name], "status": "ok"}
            with tempfile.TemporaryDirectory(prefix=f"compare-{name}-") as workdir:
                try:
                    if name == "ort":
                        outcome.update(measure_direct(model_path, settings))
                    else:
                        server = starters(settings)[name](model_path, Path(workdir))
                        try:
                            measure_server(name, server, generator, settings, outcome)
                        finally:
                            server.stop()
                except targets.TargetUnavailable as exc:
                    outcome["status"] = f"not run: {exc}"
                except Exception as exc:  # isolated: the comparison goes on without it
                    outcome["status"] = f"failed: {exc!r}"
            if outcome["status"] != "ok":
                _log(f"  [{name}] {outcome['status'][:500]}")
            outcomes.append(outcome)
    return outcomes


def _parse(argv: Sequence[str] | None) -> tuple[Settings, Path, bool]:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long steps (a smoke run)")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--out", type=Path, default=Path("loadtests/results"))
    parser.add_argument("--no-progress", action="store_true")
    for field_name, default in asdict(defaults).items():
        if field_name == "targets":
            continue
        flag = "--" + field_name.replace("_", "-")
        parser.add_argument(flag, type=type(default), default=None, help=f"default {default}")
    args = parser.parse_args(argv)
    # Any: each field its own type, which argparse checked (type=type(default)).
    values: dict[str, Any] = {**(QUICK if args.quick else {}), "targets": tuple(args.targets)}
    for field_name in asdict(defaults):
        given = getattr(args, field_name, None)
        if given is not None and field_name != "targets":
            values[field_name] = given
    return replace(defaults, **values), args.out, not args.no_progress


def main(argv: Sequence[str] | None = None) -> int:
    settings, out_dir, progress = _parse(argv)
    command = shlex.join(
        ["python", "-m", "loadtests.compare", *(sys.argv[1:] if argv is None else argv)]
    )
    started = datetime.now(UTC)
    started_s = time.monotonic()
    outcomes = run_comparison(settings, progress)
    report = {
        "command": command,
        "started_at": started.isoformat(timespec="seconds"),
        "elapsed_s": time.monotonic() - started_s,
        "machine": machine_info(),
        "settings": asdict(settings),
        "targets": outcomes,
    }
    for path in write_outputs(report, out_dir):
        _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`switchyard autoscale simulate`: replay a load trace through latency policy configs.

Wired into the `switchyard` command by `add_autoscale_subcommand(subparsers)`; the handler
returns the exit code: 0 done, 2 bad input (a file or a flag), 1 an output could not be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from switchyard.server.autoscaling.sim_inputs import (
    load_policy_configs,
    load_trace,
    parse_service_time,
)
from switchyard.server.autoscaling.sim_report import (
    PlotUnavailable,
    SimulationRun,
    plot_timelines,
    summarize,
    write_timeline_csv,
)
from switchyard.server.autoscaling.simulator import SimulationSettings, simulate

PROG = "switchyard autoscale simulate"


def add_autoscale_subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    autoscale = subparsers.add_parser("autoscale", help="latency autoscaling tools")
    commands = autoscale.add_subparsers(dest="autoscale_command", required=True)
    parser = commands.add_parser(
        "simulate",
        help="replay a load trace through latency policy configs",
        description="Replays a load trace against simulated replicas through the latency "
        "autoscaling policy, once per policy config, and writes timeline.csv and timeline.png.",
    )
    parser.add_argument("--trace", type=Path, required=True, help="CSV of time_s,requests_per_s")
    parser.add_argument(
        "--policies", type=Path, required=True, help="YAML with a list of named policy configs"
    )
    parser.add_argument(
        "--service-time",
        required=True,
        help="lognormal:p50_s=S,p95_s=S | samples:FILE (measured latencies, s) | constant:S",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    defaults = SimulationSettings()
    parser.add_argument(
        "--cold-start-s",
        type=float,
        default=defaults.cold_start_s,
        help="from a scale-up decision to the replica serving (default: %(default)s)",
    )
    parser.add_argument(
        "--tick-s",
        type=float,
        default=defaults.tick_s,
        help="simulation step (default: %(default)s)",
    )
    parser.add_argument(
        "--decision-interval-s",
        type=float,
        default=defaults.decision_interval_s,
        help="how often the policy decides (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-window-s",
        type=float,
        default=defaults.latency_window_s,
        help="window of the replicas' latency stats (default: %(default)s)",
    )
    parser.add_argument(
        "--initial-replicas",
        type=int,
        default=None,
        help="replicas at the start (default: each policy's min_replicas)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="random seed; the same seed gives the same timeline",
    )
    parser.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    try:
        trace = load_trace(args.trace)
        service = parse_service_time(args.service_time)
        policies = load_policy_configs(args.policies)
        settings = SimulationSettings(
            tick_s=args.tick_s,
            decision_interval_s=args.decision_interval_s,
            latency_window_s=args.latency_window_s,
            cold_start_s=args.cold_start_s,
            initial_replicas=args.initial_replicas,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2

    print(
        f"trace {args.trace}: {trace.end_s:g} s, {trace.requests_per_s.min():g} to "
        f"{trace.requests_per_s.max():g} requests/s; service time {args.service_time} "
        f"(mean {service.mean_s * 1000:.1f} ms); cold start {settings.cold_start_s:g} s"
    )
    runs = []
    for name, config in policies:
        run = SimulationRun(name, config, simulate(trace, service, config, settings))
        runs.append(run)
        print(summarize(run).line())

    timeline_csv, timeline_png = args.out / "timeline.csv", args.out / "timeline.png"
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        write_timeline_csv(timeline_csv, runs)
        print(f"wrote {timeline_csv}")
        plot_timelines(timeline_png, runs)
        print(f"wrote {timeline_png}")
    except PlotUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m server.autoscaling.cli simulate ...`, until `switchyard` wires it in."""
    parser = argparse.ArgumentParser(prog="switchyard")
    add_autoscale_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["autoscale", *(argv if argv is not None else sys.argv[1:])])
    handler: Callable[[argparse.Namespace], int] = args.handler  # set by each subcommand
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

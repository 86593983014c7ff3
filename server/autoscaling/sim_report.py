"""What a simulation run leaves for the SRE: a timeline CSV, a PNG plot and a one-line summary.

Runs of several policy configs over the same trace go side by side: one CSV with a `policy`
column, one plot with a column of panels per policy (load and replicas above, the policy's latency
percentile against its target and tolerance band below).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from switchyard.server.autoscaling.latency_policy import LatencyPolicyConfig
from switchyard.server.autoscaling.simulator import TimelineRow, direction_changes

TIMELINE_COLUMNS = (
    "policy", "time_s", "requests_per_s", "replicas", "ready_replicas", "p95_s", "p99_s",
    "target_s", "reason",
)  # fmt: skip


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed: the plot is the one output that needs it."""


@dataclass(frozen=True, slots=True)
class SimulationRun:
    name: str
    config: LatencyPolicyConfig
    rows: Sequence[TimelineRow]

    def latency_s(self, row: TimelineRow) -> float:
        """The row's latency at the percentile this run's policy holds at its target."""
        return row.p99_s if self.config.percentile == 99 else row.p95_s


@dataclass(frozen=True, slots=True)
class RunSummary:
    name: str
    peak_replicas: int
    final_replicas: int
    mean_replicas: float  # over the trace: what the run costs
    over_target_fraction: float  # of the ticks with a latency, those above the target
    direction_changes: int

    def line(self) -> str:
        return (
            f"{self.name}: replicas peak {self.peak_replicas}, final {self.final_replicas}, "
            f"mean {self.mean_replicas:.1f}; over target {self.over_target_fraction:.0%} of the "
            f"time; {self.direction_changes} direction changes"
        )


def summarize(run: SimulationRun) -> RunSummary:
    replicas = [row.replicas for row in run.rows]
    latencies = [run.latency_s(row) for row in run.rows if not math.isnan(run.latency_s(row))]
    over = sum(1 for latency in latencies if latency > run.config.target_latency_s)
    return RunSummary(
        name=run.name,
        peak_replicas=max(replicas, default=0),
        final_replicas=replicas[-1] if replicas else 0,
        mean_replicas=sum(replicas) / len(replicas) if replicas else 0.0,
        over_target_fraction=over / len(latencies) if latencies else 0.0,
        direction_changes=direction_changes(replicas),
    )


def write_timeline_csv(path: Path, runs: Sequence[SimulationRun]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMELINE_COLUMNS)
        for run in runs:
            for row in run.rows:
                writer.writerow(
                    [
                        run.name,
                        f"{row.time_s:g}",
                        f"{row.requests_per_s:g}",
                        row.replicas,
                        row.ready_replicas,
                        _seconds(row.p95_s),
                        _seconds(row.p99_s),
                        f"{row.target_s:g}",
                        row.reason,
                    ]
                )


def _seconds(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def plot_timelines(path: Path, runs: Sequence[SimulationRun]) -> None:
    """One column of two panels per run, sharing the time axis and each row's y axis."""
    try:
        from matplotlib.figure import Figure  # imported here: only the plot needs it
    except ImportError as exc:
        raise PlotUnavailable("plotting needs matplotlib: pip install matplotlib") from exc

    figure = Figure(figsize=(max(5.5 * len(runs), 11), 7), layout="constrained")
    axes = figure.subplots(2, len(runs), sharex=True, sharey="row", squeeze=False)
    replica_axes = []
    for column, run in enumerate(runs):
        times = [row.time_s for row in run.rows]
        load_ax, latency_ax = axes[0][column], axes[1][column]
        load_ax.fill_between(
            times,
            [row.requests_per_s for row in run.rows],
            step="pre",
            color="0.85",
            label="offered load",
        )
        load_ax.set_title(
            f"{run.name}: p{run.config.percentile} target {run.config.target_latency_s:g} s"
        )
        replicas_ax = load_ax.twinx()
        replica_axes.append(replicas_ax)
        replicas_ax.step(
            times,
            [row.replicas for row in run.rows],
            color="tab:blue",
            linestyle="--",
            label="replicas asked for",
        )
        replicas_ax.step(
            times,
            [row.ready_replicas for row in run.rows],
            color="tab:blue",
            label="replicas ready",
        )

        target_s, tolerance = run.config.target_latency_s, run.config.tolerance
        latency_ax.axhspan(
            target_s * (1 - tolerance),
            target_s * (1 + tolerance),
            color="tab:red",
            alpha=0.12,
            label="tolerance band",
        )
        latency_ax.axhline(target_s, color="tab:red", linestyle="--", label="target")
        latency_ax.plot(
            times,
            [run.latency_s(row) for row in run.rows],
            color="tab:purple",
            label="latency at the policy's percentile",
        )
        latency_ax.set_yscale("log")
        latency_ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel("requests per second")
    axes[1][0].set_ylabel("latency (s, log scale)")
    replica_axes[-1].set_ylabel("replicas")
    top = max(max((row.replicas for row in run.rows), default=1) for run in runs)
    for replicas_ax in replica_axes:
        replicas_ax.set_ylim(0, top * 1.1 + 1)
    handles = [
        *axes[0][0].get_legend_handles_labels()[0],
        *replica_axes[0].get_legend_handles_labels()[0],
        *axes[1][0].get_legend_handles_labels()[0],
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    figure.savefig(path, dpi=100)

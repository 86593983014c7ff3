"""Load results out: JSON (NaN written as null), markdown tables, a latency/throughput plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt

from loadtests.loadgen import LoadResult


def _finite(value: Any) -> Any:
    """NaN and infinities become None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def num(value: float | None, digits: int = 1) -> str:
    """A table cell: '-' for a missing or NaN number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def run_cells(run: Mapping[str, Any]) -> list[str]:
    """Cells shared by every table of runs (a LoadResult as a dict)."""
    latency, lag = run["latency_ms"], run.get("send_lag_ms") or {}
    errors = run["errors"]
    if errors:
        kinds = ", ".join(f"{kind} {n}" for kind, n in run.get("error_kinds", {}).items())
        errors = f"{errors} ({kinds})"
    return [
        num(run["throughput_per_s"], 0),
        num(latency["p50_ms"], 2),
        num(latency["p90_ms"], 2),
        num(latency["p99_ms"], 2),
        num(latency["max_ms"], 1),
        str(errors),
        num(lag.get("p99_ms"), 2),
        num(run["client_cpu_cores"], 2),
        num(run.get("server_cpu_cores"), 2),
        num(run["machine_cpu_cores"], 2),
    ]


RUN_HEADERS = [
    "req/s done",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
    "send lag p99 ms",
    "client CPU",
    "server CPU",
    "machine CPU",
]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_runs_table(results: Sequence[LoadResult], header: bool = True) -> str:
    """One row per run; CPU columns are in cores (1.0 = one core busy)."""
    rows = []
    for result in results:
        load = (
            f"{result.offered_rate_per_s:,.0f} req/s"
            if result.mode == "open"
            else f"{result.concurrency} callers"
        )
        rows.append([result.mode, load, *run_cells(result.to_dict())])
    table = markdown_table(["mode", "load", *RUN_HEADERS], rows)
    return table if header else "\n".join(table.splitlines()[2:])


def plot_latency_vs_throughput(
    series: Mapping[str, Sequence[LoadResult | Mapping[str, Any]]],
    path: Path,
    p99_bound_ms: float | None = None,
    points: Mapping[str, tuple[float, float]] | None = None,
    title: str = "Latency against throughput (open loop)",
) -> None:
    """p99 (solid) and p50 (dotted) against achieved throughput, one colour per series;
    `points` are single (req/s, p99 ms) marks, such as the in-process compute floor."""
    fig, ax = plt.subplots(figsize=(11, 6.5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, runs) in enumerate(series.items()):
        rows = [r.to_dict() if hasattr(r, "to_dict") else r for r in runs]
        rows = [r for r in rows if r["throughput_per_s"] > 0 and r["latency_ms"]["count"]]
        if not rows:
            continue
        rows.sort(key=lambda r: r.get("offered_rate_per_s") or r["throughput_per_s"])
        x = [r["throughput_per_s"] for r in rows]
        color = colors[index % len(colors)]
        ax.plot(
            x, [r["latency_ms"]["p99_ms"] for r in rows], "o-", color=color, label=f"{name} p99"
        )
        ax.plot(x, [r["latency_ms"]["p50_ms"] for r in rows], ".:", color=color, alpha=0.7)
        best = max((r for r in rows if r.get("passed")), key=lambda r: r["throughput_per_s"],
                   default=None)  # fmt: skip
        if best:  # the step search's answer: ringed and labelled
            at = (best["throughput_per_s"], best["latency_ms"]["p99_ms"])
            ax.plot(*at, "o", markersize=14, markerfacecolor="none", color=color)
            label_box = {"fc": "white", "ec": "none", "pad": 1}
            ax.annotate(f"{at[0]:,.0f}/s", at, xytext=(9, -16), textcoords="offset points",
                        color=color, fontsize=8, bbox=label_box)  # fmt: skip
    for offset, (name, (rate, p99_ms)) in enumerate((points or {}).items()):
        color = colors[(len(series) + offset) % len(colors)]
        ax.plot([rate], [p99_ms], "*", markersize=14, color=color, label=f"{name} p99")
    if p99_bound_ms:
        ax.axhline(p99_bound_ms, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"p99 bound {p99_bound_ms:g} ms", (0.99, p99_bound_ms), color="grey",
                    xycoords=("axes fraction", "data"), va="bottom", ha="right")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (requests/s, log)")
    ax.set_ylabel("latency (ms, log): p99 solid, p50 dotted")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing ran: an empty plot, no legend
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

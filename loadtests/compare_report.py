"""The comparison's outputs: summary with ratios, the issue's targets, markdown, JSON, plot."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from loadtests.gateway_process import REPO_ROOT
from loadtests.report import (
    RUN_HEADERS,
    markdown_table,
    num,
    plot_latency_vs_throughput,
    run_cells,
    write_json,
)

PACKAGES = ("grpcio", "protobuf", "numpy", "onnxruntime", "ray", "tritonclient", "uvloop")
# Issue 13's targets, on the closed loop's throughput and p99 (reported, never asserted).
RAY_VS_PLAIN_RAY_FAST_GOAL = 1.2
RAY_VS_STANDALONE_GOAL = 0.6
STANDALONE_VS_ECHO_GOAL = 0.8
STANDALONE_VS_TRITON_GOAL = 1.2
SEQUENTIAL_P50_OVER_ECHO_GOAL_MS = 0.4


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    meminfo = Path("/proc/meminfo").read_text().split()
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    pytriton = sorted(REPO_ROOT.glob(".venv-triton/lib/python*/site-packages/nvidia_pytriton-*"))
    versions["nvidia-pytriton"] = (
        pytriton[-1].name.removesuffix(".dist-info").split("-")[1] if pytriton else None
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit or None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(outcome: dict[str, Any]) -> dict[str, Any]:
    """Max throughput under the bound (the best passing step), its p99 and CPU, fixed-rate
    latency; the in-process floor's ceiling is its back-to-back call rate."""
    row: dict[str, Any] = {"name": outcome["name"], "title": outcome["title"]}
    row["status"] = outcome["status"]
    fixed = outcome.get("fixed")
    if fixed:
        row["fixed_p50_ms"] = fixed["latency_ms"]["p50_ms"]
        row["fixed_p99_ms"] = fixed["latency_ms"]["p99_ms"]
        row["fixed_errors"] = fixed.get("errors", 0)
    sequential = outcome.get("sequential")
    if sequential:
        row["sequential_per_s"] = sequential["throughput_per_s"]
        row["sequential_p50_ms"] = sequential["latency_ms"]["p50_ms"]
    closed = outcome.get("closed_loop") or outcome.get("closed")  # server, or in process
    if closed:
        row["closed_throughput_per_s"] = closed["throughput_per_s"]
        row["closed_p99_ms"] = closed["latency_ms"]["p99_ms"]
    if outcome["name"] == "ort" and "closed" in outcome:
        row["max_throughput_per_s"] = outcome["closed"]["throughput_per_s"]
        row["p99_at_max_ms"] = outcome["closed"]["latency_ms"]["p99_ms"]
        row["server_cpu_cores_at_max"] = outcome["closed"]["cpu_cores"]
    passing = [step for step in outcome.get("steps", []) if step["passed"]]
    if outcome.get("steps"):
        best = max(passing, key=lambda step: step["throughput_per_s"], default=None)
        row["max_throughput_per_s"] = best["throughput_per_s"] if best else 0.0
        if best:
            row["p99_at_max_ms"] = best["latency_ms"]["p99_ms"]
            row["server_cpu_cores_at_max"] = best["server_cpu_cores"]
            row["client_cpu_cores_at_max"] = best["client_cpu_cores"]
            row["machine_cpu_cores_at_max"] = best["machine_cpu_cores"]
    tput = row.get("max_throughput_per_s")
    for side in ("server", "client"):
        cores = row.get(f"{side}_cpu_cores_at_max")
        if tput and cores is not None:
            row[f"{side}_cpu_us_per_request"] = cores / tput * 1e6
    return row


def summary_rows(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [summarize(outcome) for outcome in outcomes]
    by_name = {row["name"]: row for row in rows}
    echo, plain = by_name.get("echo", {}), by_name.get("plain-ray-fast", {})
    for row in rows:
        tput = row.get("max_throughput_per_s")
        row["vs_echo"] = _ratio(tput, echo.get("max_throughput_per_s"))
        row["vs_plain_ray"] = _ratio(tput, plain.get("max_throughput_per_s"))
        row["fixed_p99_vs_plain_ray"] = _ratio(row.get("fixed_p99_ms"), plain.get("fixed_p99_ms"))
        closed = row.get("closed_throughput_per_s")
        row["closed_vs_echo"] = _ratio(closed, echo.get("closed_throughput_per_s"))
        row["closed_vs_plain_ray"] = _ratio(closed, plain.get("closed_throughput_per_s"))
    return rows


def _closed_goal(
    by_name: dict[str, dict[str, Any]], ours: str, theirs: str, factor: float
) -> dict[str, Any]:
    a, b = by_name.get(ours, {}), by_name.get(theirs, {})
    ratio = _ratio(a.get("closed_throughput_per_s"), b.get("closed_throughput_per_s"))
    p99 = f"p99 {num(a.get('closed_p99_ms'), 1)} vs {num(b.get('closed_p99_ms'), 1)} ms"
    return {
        "goal": f"{ours} closed-loop throughput >= {factor:g}x {theirs}",
        "measured": f"{_x(ratio)} ({p99})",
        "met": None if ratio is None else ratio >= factor,
    }


def goals(rows: list[dict[str, Any]], outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, reported, never asserted; None where a side did not run."""
    by_name = {row["name"]: row for row in rows}
    result = [
        _closed_goal(by_name, "ray", "plain-ray-fast", RAY_VS_PLAIN_RAY_FAST_GOAL),
        _closed_goal(by_name, "ray", "standalone", RAY_VS_STANDALONE_GOAL),
        _closed_goal(by_name, "standalone", "echo", STANDALONE_VS_ECHO_GOAL),
        _closed_goal(by_name, "standalone", "triton", STANDALONE_VS_TRITON_GOAL),
    ]
    ray, plain = by_name.get("ray", {}), by_name.get("plain-ray-fast", {})
    ray_p99, plain_p99 = ray.get("closed_p99_ms"), plain.get("closed_p99_ms")
    result.append(
        {
            "goal": "ray closed-loop p99 below plain-ray-fast's",
            "measured": f"{num(ray_p99, 1)} ms vs {num(plain_p99, 1)} ms",
            "met": None if ray_p99 is None or plain_p99 is None else ray_p99 < plain_p99,
        }
    )
    ours = by_name.get("standalone", {}).get("sequential_p50_ms")
    echo = by_name.get("echo", {}).get("sequential_p50_ms")
    over = None if ours is None or echo is None else ours - echo
    result.append(
        {
            "goal": f"standalone sequential p50 <= echo's + {SEQUENTIAL_P50_OVER_ECHO_GOAL_MS} ms",
            "measured": f"{num(ours, 2)} ms vs {num(echo, 2)} ms (+{num(over, 2)} ms)",
            "met": None if over is None else over <= SEQUENTIAL_P50_OVER_ECHO_GOAL_MS,
        }
    )
    workers = _ratio(
        by_name.get("standalone-workers", {}).get("closed_throughput_per_s"),
        by_name.get("standalone", {}).get("closed_throughput_per_s"),
    )
    result.append(
        {
            "goal": "standalone workers: auto against workers: 1, closed loop (reported)",
            "measured": _x(workers),
            "met": None,
        }
    )
    return result


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_markdown(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    s, m = report["settings"], report["machine"]
    bound, rate = s["p99_bound_ms"], s["fixed_rate_per_s"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        "# Switchyard side by side: ModelInfer on the demo ranker",
        "",
        f"Command: `{report['command']}` (started {report['started_at']}, "
        f"{report['elapsed_s'] / 60:.1f} min, commit {m['commit']}).",
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}, Python {m['python']}; {packages}. Client and server share the cores.",
        "",
        f"Load: OIP ModelInfer, {s['rows']} row(s) of 16 FP32 in raw_input_contents, every "
        f"output answered; open loop from {s['processes']} client processes (grpc.aio), latency "
        f"from each request's scheduled send time. Fixed rate: {rate:g} req/s for "
        f"{s['fixed_duration_s']:g} s after {s['first_warmup_s']:g} s warm-up (the first load "
        f"on the fresh server). Search: {s['step_duration_s']:g} s steps after "
        f"{s['warmup_s']:g} s warm-up, from {s['start_rate_per_s']:g} req/s times "
        f"{s['step_factor']:g}; a step passes with p99 <= {bound:g} ms, errors <= "
        f"{s['max_error_fraction']:.1%} and answers >= {s['min_done_fraction']:.0%} of the "
        f"offered rate; then {s['refine_steps']} bisection(s) of the pass/fail bracket.",
        "",
        "## Summary",
        "",
    ]
    headers = [
        "target", f"max req/s, p99 <= {bound:g} ms", "x (1) echo", "x (5f) plain Ray fast",
        "p99 at max, ms", "server CPU at max", "server CPU us/req", "client CPU us/req",
        f"p50 at {rate:g}/s, ms", f"p99 at {rate:g}/s, ms", "p99 x (5f)",
        "sequential req/s", "its p50, ms",
        f"closed loop ({s['closed_concurrency']} callers) req/s", "its p99, ms",
        "closed x (1)", "closed x (5f)", "status",
    ]  # fmt: skip
    table = []
    for row in rows:
        status = row["status"] if row["status"] == "ok" else row["status"].splitlines()[0][:160]
        table.append(
            [
                row["title"],
                num(row.get("max_throughput_per_s"), 0),
                _x(row.get("vs_echo")),
                _x(row.get("vs_plain_ray")),
                num(row.get("p99_at_max_ms"), 2),
                num(row.get("server_cpu_cores_at_max"), 2),
                num(row.get("server_cpu_us_per_request"), 0),
                num(row.get("client_cpu_us_per_request"), 0),
                num(row.get("fixed_p50_ms"), 3),
                num(row.get("fixed_p99_ms"), 3),
                _x(row.get("fixed_p99_vs_plain_ray")),
                num(row.get("sequential_per_s"), 0),
                num(row.get("sequential_p50_ms"), 2),
                num(row.get("closed_throughput_per_s"), 0),
                num(row.get("closed_p99_ms"), 2),
                _x(row.get("closed_vs_echo")),
                _x(row.get("closed_vs_plain_ray")),
                status,
            ]
        )
    lines += [markdown_table(headers, table), "", "## The issue's targets (reported, not asserted)"]
    lines.append("")
    for goal in report["goals"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        measured = goal["measured"]
        measured = _x(measured) if isinstance(measured, float) or measured is None else measured
        lines.append(f"- {goal['goal']}: {measured}, {met}")
    lines += _recommend_section(report["targets"], s)
    lines += _steps_section(report["targets"])
    lines += ["", "![latency against throughput](latency_vs_throughput.png)", ""]
    return "\n".join(lines)


def _recommend_section(outcomes: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    table = []
    for outcome in outcomes:
        for kind, run in outcome.get("recommend", {}).items():
            table.append([outcome["title"], kind, run["check"], *run_cells(run)])
    if not table:
        return []
    return [
        "",
        f"## Recommend at {settings['recommend_rate_per_s']:g} req/s (1 user, 100 candidates, "
        "top 10, in-memory features)",
        "",
        markdown_table(["target", "protocol", "answer", *RUN_HEADERS], table),
    ]


def _steps_section(outcomes: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Every run", "", "CPU columns are in cores (1.00 = one core busy)."]
    for outcome in outcomes:
        lines += ["", f"### {outcome['title']}", ""]
        if outcome["status"] != "ok":
            lines += ["```", outcome["status"][:3000], "```"]
        if outcome["name"] == "ort" and "closed" in outcome:
            c, f, b = outcome["closed"], outcome["fixed"], outcome["batched_64_rows"]
            lines += [
                f"- back to back, {c['threads']} thread(s): {c['throughput_per_s']:,.0f} calls/s, "
                f"p50 {c['latency_ms']['p50_ms']:.3f} ms, p99 {c['latency_ms']['p99_ms']:.3f} ms",
                f"- one call every 1/{f['offered_rate_per_s']:g} s: p50 "
                f"{f['latency_ms']['p50_ms']:.3f} ms, p99 {f['latency_ms']['p99_ms']:.3f} ms",
                f"- 64-row calls: {b['throughput_per_s'] * 64:,.0f} rows/s "
                f"(p50 {b['latency_ms']['p50_ms']:.3f} ms a call)",
            ]
            continue
        if "check" in outcome:
            lines += [
                f"Answer: {outcome['check']}. Started in {outcome['startup_s']:.1f} s; machine CPU "
                f"with the server idle, before load: {num(outcome['idle_machine_cpu_cores'], 2)} "
                "cores.",
                "",
            ]
        runs = [("fixed", outcome["fixed"], "")] if "fixed" in outcome else []
        runs += [("step", step, step["why"] or "pass") for step in outcome.get("steps", [])]
        if "closed_loop" in outcome:
            runs.append(("closed loop", outcome["closed_loop"], ""))
        if runs:
            table = [[kind, _load(run), *run_cells(run), verdict] for kind, run, verdict in runs]
            lines.append(markdown_table(["run", "load", *RUN_HEADERS, "verdict"], table))
    return lines


def _load(run: dict[str, Any]) -> str:
    if run["mode"] == "open":
        return f"{num(run['offered_rate_per_s'], 0)} req/s"
    return f"{run['concurrency']} callers"


def write_outputs(report: dict[str, Any], out_dir: Path) -> list[Path]:
    rows = summary_rows(report["targets"])
    report = {**report, "summary": rows, "goals": goals(rows, report["targets"])}
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    png_path = out_dir / "latency_vs_throughput.png"
    write_json(json_path, report)
    series = {o["title"]: o["steps"] for o in report["targets"] if o.get("steps")}
    floor = {
        o["title"]: (o["closed"]["throughput_per_s"], o["closed"]["latency_ms"]["p99_ms"])
        for o in report["targets"]
        if o["name"] == "ort" and "closed" in o
    }
    plot_latency_vs_throughput(
        series,
        png_path,
        p99_bound_ms=report["settings"]["p99_bound_ms"],
        points=floor,
        title=f"ModelInfer, demo ranker, {report['machine']['cores']} cores shared with the client",
    )
    md_path.write_text(render_markdown(report, rows))
    return [json_path, md_path, png_path]


def main() -> None:
    """Render results.md and the plot again from a results.json (after a report change)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results_json", type=Path)
    path = parser.parse_args().results_json
    report = json.loads(path.read_text())
    measured = {k: v for k, v in report.items() if k not in {"summary", "goals"}}
    for written in write_outputs(measured, path.parent):
        print(f"wrote {written}")


if __name__ == "__main__":
    main()

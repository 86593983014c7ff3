"""Seconds-long runs of the load tools, checking only that they produce well-formed output.

No timing is asserted (timing belongs to loadtests/, run by hand): the comparison on two
targets must write strict JSON with numbers, a markdown table and a PNG; the load generator
must drive Recommend over gRPC and REST, open and closed loop, and write its JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests import compare, loadgen, targets

TINY_COMPARISON = [
    "--quick",
    "--targets", "echo", "standalone",
    "--fixed-duration-s", "0.3",
    "--warmup-s", "0.3",
    "--step-duration-s", "0.4",
    "--start-rate-per-s", "50",
    "--step-factor", "2",
    "--max-steps", "1",
    "--refine-steps", "0",
    "--recommend-rate-per-s", "20",
    "--no-progress",
]  # fmt: skip


def _strict_json(path: Path) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    report: dict[str, Any] = json.loads(path.read_text(), parse_constant=refuse)
    return report


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_comparison_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    assert compare.main([*TINY_COMPARISON, "--out", str(tmp_path)]) == 0

    report = _strict_json(tmp_path / "results.json")
    assert report["command"].startswith("python -m loadtests.compare --quick --targets echo")
    assert report["machine"]["cores"] >= 1
    by_name = {outcome["name"]: outcome for outcome in report["targets"]}
    assert set(by_name) == {"echo", "standalone"}
    for outcome in by_name.values():
        assert outcome["status"] == "ok", outcome["status"]
        assert outcome["fixed"]["ok"] > 0
        assert _is_number(outcome["fixed"]["latency_ms"]["p99_ms"])
        assert outcome["steps"], "the search ran no step"
        assert all(_is_number(step["throughput_per_s"]) for step in outcome["steps"])
    recommend = by_name["standalone"]["recommend"]
    assert set(recommend) == {"recommend-grpc", "recommend-rest"}
    assert all(run["ok"] > 0 for run in recommend.values())
    summary = {row["name"]: row for row in report["summary"]}
    assert _is_number(summary["standalone"]["max_throughput_per_s"])
    assert _is_number(summary["echo"]["vs_echo"])
    judged = {goal["goal"] for goal in report["goals"] if goal["met"] is not None}
    # Only the targets whose both sides ran: no Ray, Triton or workers here.
    assert judged == {
        "standalone closed-loop throughput >= 0.8x echo",
        "standalone sequential p50 <= echo's + 0.4 ms",
    }
    assert _is_number(summary["standalone"]["sequential_p50_ms"])

    markdown = (tmp_path / "results.md").read_text()
    assert report["command"] in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| (3) Switchyard"))
    assert any(char.isdigit() for char in row.split("|")[2])
    assert (tmp_path / "latency_vs_throughput.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def gateway(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[targets.Server]:
    server = targets.start_standalone(demo_model_path, tmp_path_factory.mktemp("gateway"))
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("kind", "url_of", "load"),
    [
        ("recommend-grpc", "grpc_url", ["--mode", "open", "--rate", "20", "40"]),
        ("recommend-rest", "http_url", ["--mode", "closed", "--concurrency", "4"]),
    ],
)
def test_loadgen_cli_drives_recommend(
    gateway: targets.Server, tmp_path: Path, kind: str, url_of: str, load: list[str]
) -> None:
    out = tmp_path / "loadgen.json"
    argv = ["--target", kind, "--url", getattr(gateway, url_of), *load]
    argv += ["--duration-s", "0.5", "--warmup-s", "0.2", "--json", str(out), "--no-progress"]
    assert loadgen.main(argv) == 0

    runs = _strict_json(out)["runs"]
    assert len(runs) == (2 if "open" in load else 1)
    for run in runs:
        assert run["kind"] == kind
        assert run["ok"] > 0 and run["errors"] == 0, run["first_error"]
        assert _is_number(run["latency_ms"]["p50_ms"])
        assert _is_number(run["throughput_per_s"])


def test_a_target_that_cannot_start_is_reported_and_the_rest_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_: object) -> None:
        raise targets.TargetUnavailable("no such engine here")

    def broken(*_: object) -> None:
        raise RuntimeError("crashed while starting")

    monkeypatch.setattr(targets, "start_switchyard_ray", unavailable)
    monkeypatch.setattr(targets, "start_echo", broken)
    argv = ["--quick", "--targets", "ray", "echo", "--no-progress", "--out", str(tmp_path)]
    assert compare.main(argv) == 0

    statuses = {o["name"]: o["status"] for o in _strict_json(tmp_path / "results.json")["targets"]}
    assert statuses == {
        "ray": "not run: no such engine here",
        "echo": "failed: RuntimeError('crashed while starting')",
    }
    assert "not run: no such engine here" in (tmp_path / "results.md").read_text()

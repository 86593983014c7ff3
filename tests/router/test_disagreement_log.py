"""DisagreementLog keeps the largest disagreements per window, in a bounded file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from switchyard.router.comparison import compare_outputs
from switchyard.router.disagreement_log import Disagreement, DisagreementLog
from switchyard.router.endpoint import VariantTarget


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def disagreement(diff: float, request_id: str) -> Disagreement:
    comparison = compare_outputs(
        {"y": np.array([0.0, 1.0])},
        {"y": np.array([diff, 1.0])},
        primary_latency_s=0.01,
        shadow_latency_s=0.02,
    )
    return Disagreement(
        endpoint="recs",
        primary=VariantTarget("stable", "ranker", "1"),
        shadow=VariantTarget("next", "ranker", "2"),
        request_id=request_id,
        comparison=comparison,
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_the_largest_per_window_largest_first(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "disagreements.jsonl"
    log = DisagreementLog(path, top_n=3, window_s=60, clock=clock, wall_clock=lambda: 0.0)
    for i, diff in enumerate([0.1, 0.0, 0.5, 0.3, 0.05, 0.9, 0.2]):
        log.offer(disagreement(diff, f"r{i}"))
    assert not path.exists()  # nothing written until the window ends
    clock.now_s += 60
    log.offer(disagreement(0.4, "next-window"))
    lines = read_lines(path)
    assert [line["request_id"] for line in lines] == ["r5", "r2", "r3"]
    first = lines[0]
    assert first["endpoint"] == "recs"
    assert first["primary"] == {"name": "stable", "model": "ranker", "version": "1"}
    assert first["shadow"]["name"] == "next"
    assert first["max_abs_diff"] == 0.9
    assert first["latency_delta_s"] > 0
    assert first["timestamp"] == "1970-01-01T00:00:00+00:00"
    log.close()
    assert read_lines(path)[-1]["request_id"] == "next-window"
    assert log.written_lines == 4


def test_agreements_are_not_logged(tmp_path: Path) -> None:
    log = DisagreementLog(tmp_path / "d.jsonl", min_abs_diff=0.1, clock=FakeClock())
    assert not log.offer(disagreement(0.0, "same"))
    assert not log.offer(disagreement(0.1, "at threshold"))
    assert log.offer(disagreement(0.2, "over"))


def test_file_is_bounded_by_rotation(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "d.jsonl"
    max_file_bytes = 2_000  # a few lines
    log = DisagreementLog(path, top_n=1, window_s=1, max_file_bytes=max_file_bytes, clock=clock)
    for i in range(20):
        log.offer(disagreement(0.5, f"r{i:04d}"))
        clock.now_s += 1
    log.close()
    rotated = path.with_name(path.name + ".1")
    assert path.stat().st_size <= max_file_bytes
    assert rotated.stat().st_size <= max_file_bytes
    kept = read_lines(rotated) + read_lines(path)
    assert 2 <= len(kept) < 20  # older lines rotated away
    assert [line["request_id"] for line in kept] == [f"r{i:04d}" for i in range(20 - len(kept), 20)]
    assert log.written_lines == 20


def test_a_line_over_the_file_cap_is_dropped(tmp_path: Path) -> None:
    log = DisagreementLog(tmp_path / "d.jsonl", max_file_bytes=10, clock=FakeClock())
    log.offer(disagreement(0.5, "big"))
    assert log.flush() == 0
    assert log.dropped_lines == 1

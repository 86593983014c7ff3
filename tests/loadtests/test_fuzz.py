"""Mutated real requests over both protocols (loadtests/fuzz.py): every answer is the
caller's fault or a success, and the gateway answers correctly afterwards."""

from __future__ import annotations

from pathlib import Path

from loadtests.fuzz import fuzz_gateway


def test_mutated_requests_are_answered_as_the_callers_fault(tmp_path: Path) -> None:
    report = fuzz_gateway(tmp_path, mutations=400, seed=7)
    report.print()
    assert report.bad == []
    assert report.still_correct
    assert sum(report.grpc.values()) == sum(report.rest.values()) == 400

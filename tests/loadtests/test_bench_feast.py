"""bench_feast's report, from synthetic samples (the run itself needs Feast and minutes)."""

from __future__ import annotations

import argparse

from loadtests.bench_feast import FEAST_FETCHES, RECOMMEND, render


def test_report_tables_every_path_and_judges_the_target() -> None:
    results = {
        "switchyard reader (in process)": [0.001] * 100,
        FEAST_FETCHES[0]: [0.030] * 100,
        FEAST_FETCHES[1]: [0.080] * 100,
        RECOMMEND: [0.010] * 100,
    }
    report = render(results, argparse.Namespace(items=100, requests=100, warmup=10))
    assert "| feast serve (HTTP) | 80.00 | 80.00 | 8.0x |" in report
    assert f"| {RECOMMEND} | 10.00 | 10.00 | 1.0x |" in report
    assert (
        "3.0x below feast get_online_features (in process) (target 5x: not met) and "
        "8.0x below feast serve (HTTP) (target 5x: met)" in report
    )

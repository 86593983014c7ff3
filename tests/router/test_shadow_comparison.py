"""Shadow-vs-primary comparison metrics on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from switchyard.router.comparison import (
    argmax_agreement,
    compare_outputs,
    max_abs_diff,
    top_k_overlap,
)


def test_max_abs_diff() -> None:
    a = np.array([[0.1, 0.5], [0.9, -1.0]], dtype=np.float32)
    b = np.array([[0.1, 0.25], [0.9, 1.0]], dtype=np.float32)
    assert max_abs_diff(a, b) == pytest.approx(2.0)
    assert max_abs_diff(a, a) == 0.0
    # Unsigned integers do not wrap around.
    assert max_abs_diff(np.array([1], np.uint8), np.array([3], np.uint8)) == 2.0
    assert max_abs_diff(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == 0.0
    assert max_abs_diff(np.array([np.nan]), np.array([1.0])) == math.inf
    assert max_abs_diff(np.array([np.inf]), np.array([np.inf])) == 0.0
    assert max_abs_diff(np.zeros(3), np.zeros(4)) == math.inf
    strings = np.array([b"a", b"b"], dtype=object)
    assert max_abs_diff(strings, strings.copy()) == 0.0
    assert max_abs_diff(strings, np.array([b"a", b"c"], dtype=object)) == math.inf


def test_argmax_agreement() -> None:
    a = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    b = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    assert argmax_agreement(a, b) == 0.5
    assert argmax_agreement(a[0], b[0]) == 1.0  # a single vector is one row
    assert argmax_agreement(np.ones((4, 1)), np.zeros((4, 1))) is None  # one-wide: moot
    assert argmax_agreement(np.array(1.0, np.float32), np.array(2.0, np.float32)) is None


def test_top_k_overlap() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    shadow = np.array([[0.9, 0.1, 0.7, 0.8, 0.0], [0.4, 0.3, 0.2, 0.1, 0.0]])
    # Row 0: {0, 1, 2} vs {0, 3, 2} -> 2/3; row 1: {4, 3, 2} vs {0, 1, 2} -> 1/3.
    assert top_k_overlap(scores, shadow, 3) == pytest.approx(0.5)
    assert top_k_overlap(scores, scores, 2) == 1.0
    assert top_k_overlap(np.zeros(5), np.zeros(5), 3) == 1.0  # ties break alike
    assert top_k_overlap(scores, shadow, 50) == 1.0  # k past the candidates: all of them
    with pytest.raises(ValueError):
        top_k_overlap(scores, shadow, 0)


def test_compare_outputs_combines_metrics_and_latency() -> None:
    primary = {"scores": np.array([[0.9, 0.1, 0.5]]), "ids": np.array([[3, 1, 2]])}
    shadow = {"scores": np.array([[0.2, 0.8, 0.5]]), "extra": np.array([1.0])}
    result = compare_outputs(
        primary, shadow, primary_latency_s=0.010, shadow_latency_s=0.025, top_k=2
    )
    assert result.latency_delta_s == pytest.approx(0.015)
    assert [o.name for o in result.outputs] == ["scores"]
    assert result.outputs[0].max_abs_diff == pytest.approx(0.7)
    assert result.argmax_agreement == 0.0
    assert result.top_k_overlap == 0.5  # {0, 2} vs {1, 2}
    assert result.missing_in_shadow == ("ids",)
    assert result.missing_in_primary == ("extra",)
    assert result.max_abs_diff == math.inf  # an output missing is the largest disagreement
    assert result.to_dict()["max_abs_diff"] == "inf"
    same = compare_outputs(primary, primary, primary_latency_s=0.02, shadow_latency_s=0.01)
    assert same.max_abs_diff == 0.0 and same.latency_delta_s == pytest.approx(-0.01)
    assert same.top_k_overlap is None  # not asked for


def test_shape_mismatch_is_reported_not_raised() -> None:
    result = compare_outputs(
        {"y": np.zeros((2, 3))},
        {"y": np.zeros((3, 3))},
        primary_latency_s=0.0,
        shadow_latency_s=0.0,
        top_k=1,
    )
    (output,) = result.outputs
    assert not output.shape_match
    assert output.max_abs_diff == math.inf
    assert output.argmax_agreement is None and output.top_k_overlap is None

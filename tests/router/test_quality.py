"""Quality counts and the quality checks: exact values against offline computations."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from switchyard.demo.build_model import auc as offline_auc
from switchyard.router.latency_histogram import LatencyHistogram
from switchyard.router.quality import (
    SCORE_BINS,
    QualityCounts,
    ctr_drop_z,
    hanley_mcneil_se,
    score_bin,
)
from switchyard.router.rollout_checks import Outcome, judge
from switchyard.router.rollout_plan import RolloutPlan


def counts_of(requests: list[list[tuple[float, int]]], k: int) -> QualityCounts:
    quality = QualityCounts()
    for shown in requests:
        quality.add_request(shown, k)
    return quality


def test_auc_ctr_and_logloss_equal_the_offline_values() -> None:
    rng = np.random.default_rng(3)
    # Distinct bins for every score, so the binned AUC is the exact one.
    scores = rng.permutation(SCORE_BINS)[:200] / SCORE_BINS + 0.5 / SCORE_BINS
    labels = (rng.random(200) < scores).astype(int)
    requests = [
        list(zip(scores[i : i + 10].tolist(), labels[i : i + 10].tolist(), strict=True))
        for i in range(0, 200, 10)
    ]
    quality = counts_of(requests, k=3)
    assert quality.auc == pytest.approx(offline_auc(scores, labels), abs=1e-12)
    top3 = sum(int(sum(label for _, label in shown[:3])) for shown in requests)
    assert quality.ctr_at_k == top3 / 60
    expected = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    assert quality.logloss == pytest.approx(expected, abs=1e-5)


def test_ties_within_a_bin_count_half_and_counts_merge() -> None:
    quality = counts_of([[(0.5, 1), (0.5, 0)], [(0.9, 1), (0.1, 0)]], k=1)
    # Pairs: (0.5+, 0.5-) tie = 0.5; (0.5+, 0.1-) = 1; (0.9+, both) = 2 -> 3.5 / 4
    assert quality.auc == 0.875
    assert quality.ctr_at_k == 1.0
    merged = QualityCounts.from_counts(quality.counts())
    merged.merge(counts_of([[(0.2, 0)]], k=1))
    assert (merged.requests, merged.slots_at_k, merged.clicks_at_k) == (3, 3, 2)
    assert merged.negatives == 3 and merged.auc == pytest.approx(
        5.5 / 6
    )  # 0.2- is below both positives


def test_ctr_z_is_the_unpooled_two_proportion_z() -> None:
    canary = QualityCounts(requests=100, slots_at_k=1000, clicks_at_k=200)
    stable = QualityCounts(requests=100, slots_at_k=1000, clicks_at_k=300)
    se = math.sqrt(0.2 * 0.8 / 1000 + 0.3 * 0.7 / 1000)
    assert ctr_drop_z(canary, stable, 0.02) == pytest.approx((0.1 - 0.02) / se)


def test_hanley_mcneil_standard_error() -> None:
    # AUC 0.8, 50 and 50: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8, by hand
    variance = (0.16 + 49 * (0.8 / 1.2 - 0.64) + 49 * (1.28 / 1.8 - 0.64)) / 2500
    assert hanley_mcneil_se(0.8, 50, 50) == pytest.approx(math.sqrt(variance))
    assert hanley_mcneil_se(0.8, 50, 50) == pytest.approx(0.0445, abs=1e-4)


def quality_plan(**checks: Any) -> RolloutPlan:
    return RolloutPlan("stable", "canary", min_requests=1, min_feedback_samples=50, **checks)


def ok_latency() -> LatencyHistogram:
    histogram = LatencyHistogram()
    for _ in range(10):
        histogram.record(0.01, ok=True)
    return histogram


def ranked(good: bool, requests: int, seed: int) -> QualityCounts:
    """Requests of 10 items: a good ranker puts the clicked ones first."""
    rng = np.random.default_rng(seed)
    quality = QualityCounts()
    for _ in range(requests):
        labels = (rng.random(10) < 0.3).astype(int)
        scores = rng.random(10) * 0.5 + (0.5 * labels if good else 0.0)
        order = np.argsort(-scores)
        quality.add_request([(float(scores[i]), int(labels[i])) for i in order], 3)
    return quality


def test_worse_canary_fails_on_ctr_and_auc_and_waits_for_samples() -> None:
    latency = ok_latency()
    for checks in ({"max_ctr_drop": 0.02}, {"max_auc_drop": 0.02}):
        plan = quality_plan(**checks)
        verdict = judge(plan, latency, latency, ranked(False, 49, 1), ranked(True, 200, 2))
        assert verdict.outcome is Outcome.WAIT and "canary has 49 of 50" in verdict.reason
        verdict = judge(plan, latency, latency, ranked(False, 200, 1), ranked(True, 200, 2))
        assert verdict.outcome is Outcome.FAIL and verdict.reason.startswith("quality:")
        verdict = judge(plan, latency, latency, ranked(True, 200, 3), ranked(True, 200, 2))
        assert verdict.outcome is Outcome.PASS, verdict.reason


def test_a_drop_within_noise_does_not_fail() -> None:
    plan = quality_plan(max_ctr_drop=0.0, significance=0.05)
    canary = QualityCounts(requests=50, slots_at_k=150, clicks_at_k=40)
    stable = QualityCounts(requests=50, slots_at_k=150, clicks_at_k=45)
    z = ctr_drop_z(canary, stable, 0.0)
    assert 0 < z < NormalDist().inv_cdf(0.95)
    assert judge(plan, ok_latency(), ok_latency(), canary, stable).outcome is Outcome.PASS


def test_bad_quality_settings_are_refused() -> None:
    with pytest.raises(Exception, match="significance"):
        quality_plan(significance=0.7)
    with pytest.raises(Exception, match="max_auc_drop"):
        quality_plan(max_auc_drop=-0.1)


def test_infinite_scores_clip_to_the_end_bins_and_nan_counts_as_lowest() -> None:
    # +inf is the highest score: it was binned as the lowest, ranking a clicked +inf item
    # below every unclicked one.
    assert score_bin(math.inf) == SCORE_BINS - 1
    assert score_bin(-math.inf) == 0 and score_bin(math.nan) == 0
    counts = QualityCounts()
    counts.add_request([(math.inf, 1), (0.5, 0)], k=2)
    assert counts.auc == 1.0

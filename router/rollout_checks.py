"""Judging a canary step: its SLOs, absolute and relative to stable, from windowed stats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

from switchyard.router.latency_histogram import LatencyHistogram
from switchyard.router.quality import QualityCounts, auc_drop_z, ctr_drop_z, one_sided_p
from switchyard.router.rollout_plan import RolloutPlan


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"  # not enough requests to judge yet


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str


def judge(
    plan: RolloutPlan,
    canary: LatencyHistogram,
    stable: LatencyHistogram,
    canary_quality: QualityCounts | None = None,
    stable_quality: QualityCounts | None = None,
) -> Verdict:
    """PASS when every configured check is judged and holds, FAIL at the first that fails.

    The canary is judged once it has `min_requests`; the checks relative to stable also wait
    for stable to have as many, but the absolute ones are judged first, so a clearly broken
    canary is failed without waiting for a baseline.
    """
    if canary.requests < plan.min_requests:
        return Verdict(
            Outcome.WAIT, f"canary has {canary.requests} of {plan.min_requests} requests"
        )
    error_rate = canary.error_rate or 0.0
    p95_s = canary.p95_s
    if plan.max_error_rate is not None and error_rate > plan.max_error_rate:
        return _fail(f"canary error rate {error_rate:.4f} > max {plan.max_error_rate:.4f}")
    if plan.max_p95_latency_s is not None:
        if p95_s is None:
            return Verdict(Outcome.WAIT, "canary has no successful request to time")
        if p95_s > plan.max_p95_latency_s:
            return _fail(f"canary p95 {p95_s:.4f}s > max {plan.max_p95_latency_s:.4f}s")
    if plan.compares_to_stable:
        verdict = _judge_against_stable(plan, error_rate, p95_s, stable)
        if verdict is not None:
            return verdict
    if plan.checks_quality:
        verdict = judge_quality(
            plan, canary_quality or QualityCounts(), stable_quality or QualityCounts()
        )
        if verdict is not None:
            return verdict
    return Verdict(Outcome.PASS, f"checks passed over {canary.requests} canary requests")


def judge_quality(
    plan: RolloutPlan, canary: QualityCounts, stable: QualityCounts
) -> Verdict | None:
    """The quality checks: None when they hold. Each waits for `min_feedback_samples`
    joined requests on both sides; a drop fails only when it exceeds the margin and is
    significant (one-sided, at `significance`), so noise alone does not roll back."""
    minimum = plan.min_feedback_samples
    for role, counts in (("canary", canary), ("stable", stable)):
        if counts.requests < minimum:
            return Verdict(
                Outcome.WAIT, f"{role} has {counts.requests} of {minimum} joined feedback requests"
            )
    critical = NormalDist().inv_cdf(1 - plan.significance)
    if plan.max_ctr_drop is not None:
        if not canary.slots_at_k or not stable.slots_at_k:
            return Verdict(Outcome.WAIT, "no shown items with feedback to compare CTR@k with")
        z = ctr_drop_z(canary, stable, plan.max_ctr_drop)
        if z > critical:
            return _fail(
                f"quality: canary CTR@k {canary.ctr_at_k:.4f} is below stable "
                f"{stable.ctr_at_k:.4f} by more than {plan.max_ctr_drop:.4f} "
                f"(z {z:.2f}, p {one_sided_p(z):.4g} < {plan.significance})"
            )
    if plan.max_auc_drop is not None:
        if canary.auc is None or stable.auc is None:
            return Verdict(Outcome.WAIT, "AUC needs clicked and unclicked items on both sides")
        z = auc_drop_z(canary, stable, plan.max_auc_drop)
        if z > critical:
            return _fail(
                f"quality: canary AUC {canary.auc:.4f} is below stable {stable.auc:.4f} by "
                f"more than {plan.max_auc_drop:.4f} "
                f"(z {z:.2f}, p {one_sided_p(z):.4g} < {plan.significance})"
            )
    return None


def _judge_against_stable(
    plan: RolloutPlan, error_rate: float, p95_s: float | None, stable: LatencyHistogram
) -> Verdict | None:
    if stable.requests < plan.min_requests:
        return Verdict(
            Outcome.WAIT, f"stable has {stable.requests} of {plan.min_requests} requests"
        )
    stable_error_rate = stable.error_rate or 0.0
    increase = error_rate - stable_error_rate
    if plan.max_error_rate_increase is not None and increase > plan.max_error_rate_increase:
        return _fail(
            f"canary error rate {error_rate:.4f} exceeds stable {stable_error_rate:.4f} "
            f"by {increase:.4f} > max {plan.max_error_rate_increase:.4f}"
        )
    if plan.max_p95_latency_ratio is None and plan.max_p95_latency_increase_s is None:
        return None
    stable_p95_s = stable.p95_s
    if p95_s is None or stable_p95_s is None:
        return Verdict(Outcome.WAIT, "no successful requests to compare latency with")
    ratio = p95_s / stable_p95_s if stable_p95_s > 0 else (math.inf if p95_s > 0 else 1.0)
    if plan.max_p95_latency_ratio is not None and ratio > plan.max_p95_latency_ratio:
        return _fail(
            f"canary p95 {p95_s:.4f}s is {ratio:.2f}x stable {stable_p95_s:.4f}s "
            f"> max {plan.max_p95_latency_ratio:.2f}x"
        )
    increase_s = p95_s - stable_p95_s
    if plan.max_p95_latency_increase_s is not None and increase_s > plan.max_p95_latency_increase_s:
        return _fail(
            f"canary p95 {p95_s:.4f}s exceeds stable {stable_p95_s:.4f}s by {increase_s:.4f}s "
            f"> max {plan.max_p95_latency_increase_s:.4f}s"
        )
    return None


def _fail(reason: str) -> Verdict:
    return Verdict(Outcome.FAIL, reason)

"""Online ranking quality from joined feedback, as mergeable integer counts.

Every replica adds its counts to the store's (like the latency histograms), so the numbers
are integers: AUC comes from positives and negatives per fixed score bin, log-loss from a
sum in micro-units.

Definitions (the unit tests compute the same ones offline):
  - CTR@k: clicked items among the first `k` shown of each joined request, over the slots
    shown there (min(k, shown) per request).
  - AUC: the binned ROC area, P(score of a positive > score of a negative) with a pair in
    the same bin counting half. SCORE_BINS bins of equal width over [0, 1]; scores outside
    are clipped. It is the exact AUC whenever no positive shares a bin with a negative.
  - log-loss: mean of -log(p) for positives and -log(1 - p) for negatives, p clipped to
    [1e-6, 1 - 1e-6].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

SCORE_BINS = 1000
LOGLOSS_EPSILON = 1e-6
MICRO = 1_000_000


def score_bin(score: float) -> int:
    if not math.isfinite(score):  # int() cannot take them; NaN ranks lowest
        return SCORE_BINS - 1 if score > 0 else 0
    return min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS)))


@dataclass(slots=True)
class QualityCounts:
    requests: int = 0  # joined requests
    slots_at_k: int = 0
    clicks_at_k: int = 0
    positives: int = 0
    negatives: int = 0
    logloss_micro: int = 0
    positive_bins: dict[int, int] = field(default_factory=dict)
    negative_bins: dict[int, int] = field(default_factory=dict)

    def add_request(self, scored_labels: Sequence[tuple[float, int]], k: int) -> None:
        """One joined request: its shown items' (score, label) in the order shown."""
        self.requests += 1
        for position, (score, label) in enumerate(scored_labels):
            if position < k:
                self.slots_at_k += 1
                self.clicks_at_k += label
            p = min(1.0 - LOGLOSS_EPSILON, max(LOGLOSS_EPSILON, score))
            bins = self.positive_bins if label else self.negative_bins
            index = score_bin(score)
            bins[index] = bins.get(index, 0) + 1
            if label:
                self.positives += 1
                self.logloss_micro += round(-math.log(p) * MICRO)
            else:
                self.negatives += 1
                self.logloss_micro += round(-math.log(1.0 - p) * MICRO)

    def merge(self, other: QualityCounts) -> None:
        for name in _SCALARS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in (
            (self.positive_bins, other.positive_bins),
            (self.negative_bins, other.negative_bins),
        ):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count

    def counts(self) -> dict[str, int]:
        """Flat fields for ControlStore.add_stats."""
        flat = {name: getattr(self, name) for name in _SCALARS}
        flat.update({f"p{i}": n for i, n in self.positive_bins.items()})
        flat.update({f"n{i}": n for i, n in self.negative_bins.items()})
        return flat

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> QualityCounts:
        quality = cls()
        for name in _SCALARS:
            setattr(quality, name, int(counts.get(name, 0)))
        for key, value in counts.items():
            if key[:1] in ("p", "n") and key[1:].isdigit():
                bins = quality.positive_bins if key[0] == "p" else quality.negative_bins
                bins[int(key[1:])] = int(value)
        return quality

    @property
    def ctr_at_k(self) -> float | None:
        return self.clicks_at_k / self.slots_at_k if self.slots_at_k else None

    @property
    def auc(self) -> float | None:
        """The binned ROC area; None without both a positive and a negative."""
        if not self.positives or not self.negatives:
            return None
        wins = 0.0
        negatives_below = 0
        for index in range(SCORE_BINS):
            positives = self.positive_bins.get(index, 0)
            negatives = self.negative_bins.get(index, 0)
            wins += positives * (negatives_below + negatives / 2)
            negatives_below += negatives
        return wins / (self.positives * self.negatives)

    @property
    def logloss(self) -> float | None:
        labelled = self.positives + self.negatives
        return self.logloss_micro / MICRO / labelled if labelled else None


_SCALARS = ("requests", "slots_at_k", "clicks_at_k", "positives", "negatives", "logloss_micro")


def one_sided_p(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 1.0 - NormalDist().cdf(z)


def ctr_drop_z(canary: QualityCounts, stable: QualityCounts, margin: float) -> float:
    """z of H0 "canary CTR@k >= stable CTR@k - margin" (two proportions, unpooled standard
    error since H0 is not equality); large when the canary is worse by more than margin."""
    p_c = canary.clicks_at_k / canary.slots_at_k
    p_s = stable.clicks_at_k / stable.slots_at_k
    variance = p_c * (1 - p_c) / canary.slots_at_k + p_s * (1 - p_s) / stable.slots_at_k
    drop = p_s - p_c - margin
    if variance <= 0:
        return math.inf if drop > 0 else (-math.inf if drop < 0 else 0.0)
    return drop / math.sqrt(variance)


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC (Hanley and McNeil, 1982)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def auc_drop_z(canary: QualityCounts, stable: QualityCounts, margin: float) -> float:
    """z of H0 "canary AUC >= stable AUC - margin", the two AUCs taken as independent
    samples (they are: disjoint requests) with Hanley-McNeil standard errors."""
    a_c, a_s = canary.auc, stable.auc
    assert a_c is not None and a_s is not None
    se = math.hypot(
        hanley_mcneil_se(a_c, canary.positives, canary.negatives),
        hanley_mcneil_se(a_s, stable.positives, stable.negatives),
    )
    drop = a_s - a_c - margin
    if se <= 0:
        return math.inf if drop > 0 else (-math.inf if drop < 0 else 0.0)
    return drop / se

"""A progressive canary rollout plan: the steps, their pace, and the SLOs each step must meet."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from switchyard.router.errors import RoutingConfigError


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """Move traffic from `stable` to `canary` in steps, judging the canary at each one.

    Each step lasts at least `step_interval_s` and until the canary has served `min_requests`
    (and, for the checks relative to stable, stable too). Every SLO is optional; None skips it.
    Reaching 100 percent, or passing the last step, promotes the canary.
    """

    stable: str
    canary: str
    steps_percent: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    step_interval_s: float = 300.0
    min_requests: int = 100
    # Canary error rate, as a fraction of its requests (0.01 = 1%).
    max_error_rate: float | None = None
    # Canary error rate minus stable error rate.
    max_error_rate_increase: float | None = None
    # Canary p95 latency of successful requests.
    max_p95_latency_s: float | None = None
    # Canary p95 over stable p95 (1.2 = at most 20% slower).
    max_p95_latency_ratio: float | None = None
    # Canary p95 minus stable p95.
    max_p95_latency_increase_s: float | None = None
    # Quality from joined feedback (router/quality.py): each side needs this many joined
    # requests before the quality checks judge (until then the step waits).
    min_feedback_samples: int = 100
    # Stable CTR@k minus canary CTR@k, absolute, tolerated before a significant drop fails.
    max_ctr_drop: float | None = None
    # Stable AUC minus canary AUC tolerated before a significant drop fails.
    max_auc_drop: float | None = None
    # One-sided alpha of the quality tests: fail only when the drop beyond the margin is
    # significant at this level.
    significance: float = 0.05

    def __post_init__(self) -> None:
        if self.stable == self.canary:
            raise RoutingConfigError("canary", f"must differ from stable ('{self.stable}')")
        steps = tuple(float(step) for step in self.steps_percent)
        object.__setattr__(self, "steps_percent", steps)
        if not steps:
            raise RoutingConfigError("steps_percent", "at least one step is required")
        if any(not 0 < step <= 100 for step in steps):
            raise RoutingConfigError("steps_percent", f"each step must be in (0, 100], got {steps}")
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise RoutingConfigError("steps_percent", f"steps must increase, got {steps}")
        if steps[0] >= 100:
            # At 100% stable serves nothing, so there would be no step to judge the canary in.
            raise RoutingConfigError("steps_percent", "at least one step must be below 100")
        if not (math.isfinite(self.step_interval_s) and self.step_interval_s > 0):
            raise RoutingConfigError("step_interval_s", "must be a positive number of seconds")
        if self.min_requests < 1:
            raise RoutingConfigError("min_requests", "must be at least 1")
        for key in (
            "max_error_rate",
            "max_error_rate_increase",
            "max_p95_latency_s",
            "max_p95_latency_ratio",
            "max_p95_latency_increase_s",
            "max_ctr_drop",
            "max_auc_drop",
        ):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise RoutingConfigError(key, f"must be a finite number >= 0, got {value}")
        if self.min_feedback_samples < 1:
            raise RoutingConfigError("min_feedback_samples", "must be at least 1")
        if not 0 < self.significance < 0.5:
            raise RoutingConfigError(
                "significance", f"must be in (0, 0.5) (0.05 is usual), got {self.significance}"
            )

    @property
    def checks_quality(self) -> bool:
        """Whether any check needs joined feedback."""
        return self.max_ctr_drop is not None or self.max_auc_drop is not None

    @property
    def compares_to_stable(self) -> bool:
        """Whether any check needs the stable variant's statistics as a baseline."""
        return any(
            value is not None
            for value in (
                self.max_error_rate_increase,
                self.max_p95_latency_ratio,
                self.max_p95_latency_increase_s,
            )
        )

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
        ):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise RoutingConfigError(key, f"must be a finite number >= 0, got {value}")

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

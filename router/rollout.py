"""The progressive canary rollout of one endpoint, as pure transitions on a status value.

    IDLE --start--> RUNNING (step 0) --judge: interval passed, checks pass--> next step ...
    RUNNING --judge: a check fails--> ROLLED_BACK (canary 0%)
    RUNNING --abort--> ABORTED (canary 0%)
    RUNNING --judge: last step passes--> COMPLETED (canary 100%, now the stable variant)
    any but COMPLETED --promote--> COMPLETED;  IDLE / ROLLED_BACK / ABORTED --start--> RUNNING

The status lives in the control store, shared by every replica; these functions take it and
the step's merged statistics and return the event that leads to the next one, or None. The
checks are judged every time, so a failing canary is rolled back as soon as it has enough
requests, while advancing also waits for the step interval. Each step is judged on its own
traffic: the caller keeps statistics per step. Times are wall-clock seconds (time.time()),
the one clock every replica shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from switchyard.router.latency_histogram import LatencyHistogram
from switchyard.router.quality import QualityCounts
from switchyard.router.rollout_checks import Outcome, judge
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.runtimes.errors import InvalidArgument


class RolloutState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    state: RolloutState = RolloutState.IDLE
    step: int | None = None  # index into plan.steps_percent while running
    canary_percent: float = 0.0
    step_started_s: float = 0.0  # wall clock


IDLE = RolloutStatus()


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    endpoint: str
    plan: RolloutPlan
    before: RolloutStatus
    after: RolloutStatus
    reason: str

    @property
    def weights(self) -> dict[str, float]:
        """The endpoint's weights after this event, in percent."""
        return rollout_weights(self.plan, self.after)


def rollout_weights(plan: RolloutPlan, status: RolloutStatus) -> dict[str, float]:
    return {plan.stable: 100.0 - status.canary_percent, plan.canary: status.canary_percent}


def stable_variant(plan: RolloutPlan, status: RolloutStatus) -> str:
    """The variant serving as stable: the canary, once promoted."""
    return plan.canary if status.state is RolloutState.COMPLETED else plan.stable


class Rollout:
    """The transitions of one endpoint's plan."""

    def __init__(self, endpoint: str, plan: RolloutPlan) -> None:
        self.endpoint = endpoint
        self.plan = plan

    def judge(
        self,
        status: RolloutStatus,
        canary: LatencyHistogram,
        stable: LatencyHistogram,
        now_s: float,
        canary_quality: QualityCounts | None = None,
        stable_quality: QualityCounts | None = None,
    ) -> RolloutEvent | None:
        """Roll back on a failed check, or advance once the interval passed and checks pass."""
        if status.state is not RolloutState.RUNNING or status.step is None:
            return None
        verdict = judge(self.plan, canary, stable, canary_quality, stable_quality)
        if verdict.outcome is Outcome.FAIL:
            return self._event(status, now_s, RolloutState.ROLLED_BACK, None, verdict.reason)
        if verdict.outcome is Outcome.WAIT:
            return None
        if now_s - status.step_started_s < self.plan.step_interval_s:
            return None
        steps = self.plan.steps_percent
        reason = f"step {status.step + 1} of {len(steps)} passed: {verdict.reason}"
        next_step = status.step + 1
        if next_step == len(steps) or steps[next_step] >= 100:
            return self._event(status, now_s, RolloutState.COMPLETED, None, f"{reason}; promoted")
        return self._event(status, now_s, RolloutState.RUNNING, next_step, reason)

    def start(self, status: RolloutStatus, now_s: float) -> RolloutEvent:
        if status.state in (RolloutState.RUNNING, RolloutState.COMPLETED):
            raise InvalidArgument(
                f"rollout of endpoint '{self.endpoint}' cannot start: it is {status.state}"
            )
        return self._event(status, now_s, RolloutState.RUNNING, 0, "started")

    def abort(self, status: RolloutStatus, now_s: float, reason: str) -> RolloutEvent:
        if status.state is not RolloutState.RUNNING:
            raise InvalidArgument(
                f"rollout of endpoint '{self.endpoint}' cannot abort: it is {status.state}"
            )
        return self._event(status, now_s, RolloutState.ABORTED, None, reason)

    def promote(self, status: RolloutStatus, now_s: float, reason: str) -> RolloutEvent:
        if status.state is RolloutState.COMPLETED:
            raise InvalidArgument(f"rollout of endpoint '{self.endpoint}' is already complete")
        return self._event(status, now_s, RolloutState.COMPLETED, None, reason)

    def _event(
        self,
        before: RolloutStatus,
        now_s: float,
        state: RolloutState,
        step: int | None,
        reason: str,
    ) -> RolloutEvent:
        if step is not None:
            percent = self.plan.steps_percent[step]
        else:
            percent = 100.0 if state is RolloutState.COMPLETED else 0.0
        after = RolloutStatus(state, step, percent, now_s)
        return RolloutEvent(self.endpoint, self.plan, before, after, reason)

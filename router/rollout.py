"""The progressive canary rollout of one endpoint, as a state machine driven by a clock.

    IDLE --start--> RUNNING (step 0) --tick: interval passed, checks pass--> next step ...
    RUNNING --tick: a check fails--> ROLLED_BACK (canary 0%)
    RUNNING --abort--> ABORTED (canary 0%)
    RUNNING --tick: last step passes--> COMPLETED (canary 100%, now the stable variant)
    any but COMPLETED --promote--> COMPLETED;  IDLE / ROLLED_BACK / ABORTED --start--> RUNNING

Checks are judged on every tick, so a failing canary is rolled back as soon as it has enough
requests, while advancing also waits for the step interval. Statistics are kept per step and
reset when a step begins, so each step is judged on its own traffic. Every transition is one
RolloutEvent, returned and passed to each subscriber; applying its `weights` to the routing
table (and logging it, and exporting it as a metric) is the caller's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from switchyard.router.latency_window import LatencyWindow
from switchyard.router.rollout_checks import Outcome, judge
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.runtimes.errors import InvalidArgument

log = logging.getLogger(__name__)


class RolloutState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    time_s: float  # on the controller's (monotonic) clock
    endpoint: str
    stable: str
    canary: str
    from_state: RolloutState
    to_state: RolloutState
    from_percent: float
    to_percent: float
    reason: str

    @property
    def weights(self) -> dict[str, float]:
        """The endpoint's weights after this event, in percent."""
        return {self.stable: 100.0 - self.to_percent, self.canary: self.to_percent}


class RolloutController:
    def __init__(
        self,
        endpoint: str,
        plan: RolloutPlan,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_samples: int = 10_000,
    ) -> None:
        self.endpoint = endpoint
        self.plan = plan
        self._clock = clock
        self._state = RolloutState.IDLE
        self._step = -1  # index into plan.steps_percent while running
        self._percent = 0.0
        self._step_started_s = 0.0
        self._canary = LatencyWindow(max_samples)
        self._stable = LatencyWindow(max_samples)
        self._subscribers: list[Callable[[RolloutEvent], None]] = []

    @property
    def state(self) -> RolloutState:
        return self._state

    @property
    def percent(self) -> float:
        """The canary's current share of traffic, in percent."""
        return self._percent

    @property
    def step_index(self) -> int | None:
        return self._step if self._state is RolloutState.RUNNING else None

    @property
    def stable_variant(self) -> str:
        """The variant serving as stable: the canary, once promoted."""
        return self.plan.canary if self._state is RolloutState.COMPLETED else self.plan.stable

    def weights(self) -> dict[str, float]:
        return {self.plan.stable: 100.0 - self._percent, self.plan.canary: self._percent}

    def subscribe(self, callback: Callable[[RolloutEvent], None]) -> None:
        """Call `callback` with every event; its exceptions are logged, never raised here."""
        self._subscribers.append(callback)

    def record(self, variant: str, latency_s: float, ok: bool) -> None:
        """One request served by `variant`; ignored unless running and it is canary or stable."""
        if self._state is not RolloutState.RUNNING:
            return
        if variant == self.plan.canary:
            self._canary.record(latency_s, ok)
        elif variant == self.plan.stable:
            self._stable.record(latency_s, ok)

    def tick(self, now_s: float | None = None) -> RolloutEvent | None:
        """Roll back on a failed check, or advance once the interval passed and checks pass."""
        if self._state is not RolloutState.RUNNING:
            return None
        now_s = self._clock() if now_s is None else now_s
        verdict = judge(self.plan, self._canary, self._stable)
        if verdict.outcome is Outcome.FAIL:
            return self._transition(now_s, RolloutState.ROLLED_BACK, -1, verdict.reason)
        if verdict.outcome is Outcome.WAIT:
            return None
        if now_s - self._step_started_s < self.plan.step_interval_s:
            return None
        steps = self.plan.steps_percent
        reason = f"step {self._step + 1} of {len(steps)} passed: {verdict.reason}"
        next_step = self._step + 1
        if next_step == len(steps) or steps[next_step] >= 100:
            return self._transition(now_s, RolloutState.COMPLETED, -1, f"{reason}; promoted")
        return self._transition(now_s, RolloutState.RUNNING, next_step, reason)

    def start(self, now_s: float | None = None) -> RolloutEvent:
        if self._state in (RolloutState.RUNNING, RolloutState.COMPLETED):
            raise InvalidArgument(
                f"rollout of endpoint '{self.endpoint}' cannot start: it is {self._state}"
            )
        now_s = self._clock() if now_s is None else now_s
        return self._transition(now_s, RolloutState.RUNNING, 0, "started")

    def abort(
        self, reason: str = "aborted by operator", now_s: float | None = None
    ) -> RolloutEvent:
        if self._state is not RolloutState.RUNNING:
            raise InvalidArgument(
                f"rollout of endpoint '{self.endpoint}' cannot abort: it is {self._state}"
            )
        now_s = self._clock() if now_s is None else now_s
        return self._transition(now_s, RolloutState.ABORTED, -1, reason)

    def promote(
        self, reason: str = "promoted by operator", now_s: float | None = None
    ) -> RolloutEvent:
        if self._state is RolloutState.COMPLETED:
            raise InvalidArgument(f"rollout of endpoint '{self.endpoint}' is already complete")
        now_s = self._clock() if now_s is None else now_s
        return self._transition(now_s, RolloutState.COMPLETED, -1, reason)

    def _transition(
        self, now_s: float, state: RolloutState, step: int, reason: str
    ) -> RolloutEvent:
        if state is RolloutState.RUNNING:
            percent = self.plan.steps_percent[step]
        else:
            percent = 100.0 if state is RolloutState.COMPLETED else 0.0
        event = RolloutEvent(
            time_s=now_s,
            endpoint=self.endpoint,
            stable=self.plan.stable,
            canary=self.plan.canary,
            from_state=self._state,
            to_state=state,
            from_percent=self._percent,
            to_percent=percent,
            reason=reason,
        )
        self._state, self._step, self._percent = state, step, percent
        self._step_started_s = now_s
        self._canary.reset()
        self._stable.reset()
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                # One broken subscriber (a log sink) must not stall the rollout for the rest.
                log.exception("rollout event subscriber failed for endpoint %s", self.endpoint)
        return event

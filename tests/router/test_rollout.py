"""The canary rollout's transitions, pure: a status and a step's statistics in, an event out."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.router.latency_histogram import LatencyHistogram
from switchyard.router.rollout import (
    IDLE,
    Rollout,
    RolloutEvent,
    RolloutState,
    RolloutStatus,
    stable_variant,
)
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.runtimes.errors import InvalidArgument


def make_rollout(**checks: Any) -> Rollout:
    plan = RolloutPlan(
        stable="stable",
        canary="canary",
        steps_percent=(5, 25, 50, 100),
        step_interval_s=60,
        min_requests=100,
        **checks,
    )
    return Rollout("recs", plan)


def window(count: int, *, latency_s: float = 0.1, errors: int = 0) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for i in range(count):
        histogram.record(latency_s, ok=i >= errors)
    return histogram


HEALTHY = window(100)


def test_advances_while_checks_pass_and_promotes_at_100() -> None:
    rollout = make_rollout(max_error_rate=0.05, max_p95_latency_ratio=1.5)
    events = [rollout.start(IDLE, now_s=0.0)]
    status = events[0].after
    assert (status.state, status.canary_percent, status.step) == (RolloutState.RUNNING, 5.0, 0)
    for expected_percent, now_s in ((25.0, 60.0), (50.0, 120.0), (100.0, 180.0)):
        # Checks pass, but the step interval has not passed yet.
        assert rollout.judge(status, HEALTHY, HEALTHY, now_s - 30) is None
        event = rollout.judge(status, HEALTHY, HEALTHY, now_s)
        assert event is not None and event.after.canary_percent == expected_percent
        events.append(event)
        status = event.after
    assert status.state is RolloutState.COMPLETED and status.step is None
    assert events[-1].weights == {"stable": 0.0, "canary": 100.0}
    assert stable_variant(rollout.plan, status) == "canary"
    assert [(e.before.canary_percent, e.after.canary_percent) for e in events] == [
        (0, 5),
        (5, 25),
        (25, 50),
        (50, 100),
    ]
    assert events[0].reason == "started" and events[0].endpoint == "recs"
    assert [e.after.step_started_s for e in events] == [0, 60, 120, 180]
    assert "promoted" in events[-1].reason
    assert rollout.judge(status, HEALTHY, HEALTHY, 1e9) is None  # nothing runs any more


def test_waits_for_min_requests_before_judging_or_advancing() -> None:
    rollout = make_rollout(max_error_rate=0.05)
    status = rollout.start(IDLE, 0.0).after
    assert rollout.judge(status, window(99, errors=99), HEALTHY, 600.0) is None
    event = rollout.judge(status, window(100, errors=99), HEALTHY, 600.0)
    assert event is not None and event.after.state is RolloutState.ROLLED_BACK


def test_rolls_back_at_the_first_failed_check_without_waiting_for_the_interval() -> None:
    rollout = make_rollout(max_error_rate=0.05)
    status = RolloutStatus(RolloutState.RUNNING, 1, 25.0, step_started_s=60.0)
    event = rollout.judge(status, window(100, errors=10), HEALTHY, now_s=61.0)
    assert event is not None
    assert (event.before.canary_percent, event.after.canary_percent) == (25.0, 0.0)
    assert event.after.state is RolloutState.ROLLED_BACK
    assert event.weights == {"stable": 100.0, "canary": 0.0}
    assert "error rate 0.1000 > max 0.0500" in event.reason


def test_rolls_back_on_error_rate_increase_over_stable() -> None:
    rollout = make_rollout(max_error_rate_increase=0.02)
    status = rollout.start(IDLE, 0.0).after
    canary = window(100, errors=5)
    assert rollout.judge(status, canary, window(99), 1.0) is None  # no baseline yet
    event = rollout.judge(status, canary, window(100, errors=2), 2.0)
    assert event is not None and "exceeds stable" in event.reason


def test_rolls_back_on_p95_ratio_and_delta() -> None:
    rollout = make_rollout(max_p95_latency_ratio=1.5)
    status = rollout.start(IDLE, 0.0).after
    event = rollout.judge(status, window(100, latency_s=0.3), window(100, latency_s=0.1), 1.0)
    assert event is not None and event.after.state is RolloutState.ROLLED_BACK
    assert "stable" in event.reason and "> max 1.50x" in event.reason

    rollout = make_rollout(max_p95_latency_increase_s=0.05)
    status = rollout.start(IDLE, 0.0).after
    event = rollout.judge(status, window(100, latency_s=0.14), window(100), 100.0)
    assert event is not None and event.after.canary_percent == 25  # +40 ms passes
    event = rollout.judge(event.after, window(100, latency_s=0.2), window(100), 101.0)
    assert event is not None and event.after.state is RolloutState.ROLLED_BACK


def test_manual_abort_promote_restart_and_invalid_transitions() -> None:
    rollout = make_rollout(max_error_rate=0.05)
    with pytest.raises(InvalidArgument, match="cannot abort: it is idle"):
        rollout.abort(IDLE, 0.0, "no")
    running = rollout.start(IDLE, 0.0).after
    with pytest.raises(InvalidArgument, match="cannot start: it is running"):
        rollout.start(running, 1.0)
    aborted: RolloutEvent = rollout.abort(running, 10.0, "bad dashboards")
    assert (aborted.after.state, aborted.after.canary_percent, aborted.reason) == (
        RolloutState.ABORTED,
        0.0,
        "bad dashboards",
    )
    again = rollout.start(aborted.after, 11.0)  # a stopped rollout may start again
    assert again.after.canary_percent == 5
    promoted = rollout.promote(again.after, 12.0, "looks good")
    assert promoted.after.state is RolloutState.COMPLETED
    assert promoted.after.canary_percent == 100
    with pytest.raises(InvalidArgument, match="already complete"):
        rollout.promote(promoted.after, 13.0, "again")


def test_plan_validation_names_the_key() -> None:
    with pytest.raises(InvalidArgument, match="steps_percent: steps must increase"):
        RolloutPlan("a", "b", steps_percent=(5, 5, 50))
    with pytest.raises(InvalidArgument, match="steps_percent: at least one step must be below"):
        RolloutPlan("a", "b", steps_percent=(100,))
    with pytest.raises(InvalidArgument, match="canary: must differ from stable"):
        RolloutPlan("a", "a")
    with pytest.raises(InvalidArgument, match="max_error_rate: must be a finite number"):
        RolloutPlan("a", "b", max_error_rate=-1)

"""The canary rollout state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from switchyard.router.latency_window import LatencyWindow
from switchyard.router.rollout import RolloutController, RolloutEvent, RolloutState
from switchyard.router.rollout_plan import RolloutPlan
from switchyard.runtimes.errors import InvalidArgument


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def make_controller(**checks: float) -> tuple[RolloutController, FakeClock, list[RolloutEvent]]:
    plan = RolloutPlan(
        stable="stable",
        canary="canary",
        steps_percent=(5, 25, 50, 100),
        step_interval_s=60,
        min_requests=100,
        **checks,
    )
    clock = FakeClock()
    controller = RolloutController("recs", plan, clock=clock)
    events: list[RolloutEvent] = []
    controller.subscribe(events.append)
    return controller, clock, events


def feed(
    controller: RolloutController,
    variant: str,
    count: int,
    *,
    latency_s: float = 0.1,
    errors: int = 0,
) -> None:
    for i in range(count):
        controller.record(variant, latency_s, ok=i >= errors)


def healthy_step(controller: RolloutController) -> None:
    feed(controller, "canary", 100)
    feed(controller, "stable", 100)


def test_advances_while_checks_pass_and_promotes_at_100() -> None:
    controller, clock, events = make_controller(max_error_rate=0.05, max_p95_latency_ratio=1.5)
    controller.start()
    assert (controller.state, controller.percent) == (RolloutState.RUNNING, 5.0)
    for expected_pct in (25.0, 50.0):
        healthy_step(controller)
        clock.now_s += 30
        assert controller.tick() is None  # checks pass, but the interval has not passed
        clock.now_s += 30
        event = controller.tick()
        assert event is not None and event.to_percent == expected_pct
        assert controller.tick() is None  # the new step starts with fresh statistics
    healthy_step(controller)
    clock.now_s += 60
    final = controller.tick()
    assert final is not None and final.to_state is RolloutState.COMPLETED
    assert final.weights == {"stable": 0.0, "canary": 100.0}
    assert controller.stable_variant == "canary"
    assert [(e.from_percent, e.to_percent) for e in events] == [
        (0, 5),
        (5, 25),
        (25, 50),
        (50, 100),
    ]
    assert events[0].reason == "started" and events[0].endpoint == "recs"
    assert [e.time_s for e in events] == [0, 60, 120, 180]
    assert "promoted" in final.reason


def test_waits_for_min_requests_before_judging_or_advancing() -> None:
    controller, clock, _ = make_controller(max_error_rate=0.05)
    controller.start()
    feed(controller, "canary", 99, errors=99)  # all failing, but too few to judge
    clock.now_s += 600
    assert controller.tick() is None
    assert controller.state is RolloutState.RUNNING and controller.percent == 5
    feed(controller, "canary", 1)
    event = controller.tick()
    assert event is not None and event.to_state is RolloutState.ROLLED_BACK


def test_rolls_back_at_the_first_failed_error_rate_check_without_waiting_for_interval() -> None:
    controller, clock, events = make_controller(max_error_rate=0.05)
    controller.start()
    healthy_step(controller)
    clock.now_s += 60
    controller.tick()  # -> 25%
    feed(controller, "canary", 100, errors=10)
    clock.now_s += 1
    event = controller.tick()
    assert event is not None
    assert (event.from_percent, event.to_percent) == (25.0, 0.0)
    assert event.to_state is RolloutState.ROLLED_BACK
    assert event.weights == {"stable": 100.0, "canary": 0.0}
    assert "error rate 0.1000 > max 0.0500" in event.reason
    feed(controller, "canary", 100, errors=100)  # ignored once rolled back
    assert controller.tick() is None and len(events) == 3


def test_rolls_back_on_error_rate_increase_over_stable() -> None:
    controller, _, _ = make_controller(max_error_rate_increase=0.02)
    controller.start()
    feed(controller, "canary", 100, errors=5)
    feed(controller, "stable", 99)  # the baseline is not judged yet
    assert controller.tick(now_s=1.0) is None
    feed(controller, "stable", 100, errors=2)
    event = controller.tick(now_s=2.0)
    assert event is not None and "exceeds stable" in event.reason


def test_rolls_back_on_p95_ratio_and_delta() -> None:
    controller, _, _ = make_controller(max_p95_latency_ratio=1.5)
    controller.start()
    feed(controller, "canary", 100, latency_s=0.3)
    feed(controller, "stable", 100, latency_s=0.1)
    event = controller.tick(now_s=1.0)
    assert event is not None and event.to_state is RolloutState.ROLLED_BACK
    assert "3.00x stable" in event.reason

    controller, _, _ = make_controller(max_p95_latency_increase_s=0.05)
    controller.start()
    feed(controller, "canary", 100, latency_s=0.14)
    feed(controller, "stable", 100, latency_s=0.1)
    event = controller.tick(now_s=100.0)
    assert event is not None and event.to_percent == 25  # +40 ms passes
    feed(controller, "canary", 100, latency_s=0.2)
    feed(controller, "stable", 100, latency_s=0.1)
    event = controller.tick(now_s=101.0)
    assert event is not None and event.to_state is RolloutState.ROLLED_BACK


def test_manual_abort_promote_restart_and_invalid_transitions() -> None:
    controller, clock, events = make_controller(max_error_rate=0.05)
    with pytest.raises(InvalidArgument, match="cannot abort: it is idle"):
        controller.abort()
    controller.start()
    with pytest.raises(InvalidArgument, match="cannot start: it is running"):
        controller.start()
    clock.now_s = 10
    aborted = controller.abort(reason="bad dashboards")
    assert (aborted.to_state, aborted.to_percent, aborted.reason) == (
        RolloutState.ABORTED,
        0.0,
        "bad dashboards",
    )
    assert controller.start().to_percent == 5  # a stopped rollout may start again
    promoted = controller.promote()
    assert promoted.to_state is RolloutState.COMPLETED and promoted.to_percent == 100
    with pytest.raises(InvalidArgument, match="already complete"):
        controller.promote()
    assert len(events) == 4


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    controller, _, events = make_controller()

    def broken(event: RolloutEvent) -> None:
        raise RuntimeError("log sink down")

    controller.subscribe(broken)
    late: list[RolloutEvent] = []
    controller.subscribe(late.append)
    controller.start(now_s=5.0)
    assert len(events) == len(late) == 1


def test_plan_validation_names_the_key() -> None:
    with pytest.raises(InvalidArgument, match="steps_percent: steps must increase"):
        RolloutPlan("a", "b", steps_percent=(5, 5, 50))
    with pytest.raises(InvalidArgument, match="steps_percent: at least one step must be below"):
        RolloutPlan("a", "b", steps_percent=(100,))
    with pytest.raises(InvalidArgument, match="canary: must differ from stable"):
        RolloutPlan("a", "a")
    with pytest.raises(InvalidArgument, match="max_error_rate: must be a finite number"):
        RolloutPlan("a", "b", max_error_rate=-1)


def test_latency_window_stats() -> None:
    window = LatencyWindow(max_samples=1000)
    assert window.error_rate is None and window.p95_s is None
    for ms in range(1, 101):
        window.record(ms / 1000, ok=True)
    window.record(5.0, ok=False)  # failures count as errors, not as latency
    assert window.requests == 101 and window.errors == 1
    assert window.error_rate == pytest.approx(1 / 101)
    assert window.p95_s == pytest.approx(0.09505)
    bounded = LatencyWindow(max_samples=10)
    for ms in range(100):
        bounded.record(ms / 1000, ok=True)
    assert bounded.requests == 100
    assert bounded.percentile_s(0) == pytest.approx(0.090)  # only the newest 10 kept
    bounded.reset()
    assert bounded.requests == 0 and bounded.p95_s is None

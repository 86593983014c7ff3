"""The one circuit breaker, on an injected clock (no sleeps), as its two callers use it: the
Triton runtime (state changes, a probe that always reports) and the Redis feature store
(after_failures, 0 never opens, a probe that may never report)."""

from __future__ import annotations

import pytest

from switchyard.runtimes.circuit_breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def state(breaker: CircuitBreaker) -> CircuitState:
    """The state now: read through a call, so that mypy keeps no narrowing from a check
    before the calls that changed it."""
    return breaker.state


def test_opens_after_consecutive_failures_and_probes_back() -> None:
    clock, changes = Clock(), list[CircuitState]()
    breaker = CircuitBreaker(3, open_s=2.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in_s() == 2.0
    clock.now_s += 1.9
    assert not breaker.allow()
    clock.now_s += 0.1
    assert breaker.allow()  # the probe
    assert state(breaker) is CircuitState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure()  # the probe failed: open again, for another open_s
    assert state(breaker) is CircuitState.OPEN and breaker.retry_in_s() == 2.0
    clock.now_s += 2.0
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED and breaker.allow()
    assert changes == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_failures_count_in_a_row_without_asking_first() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, open_s=1.0, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    assert breaker.failures == 0
    breaker.record_failure()
    assert breaker.failures == 1 and breaker.allow() and state(breaker) is CircuitState.CLOSED
    breaker.record_failure()
    assert state(breaker) is CircuitState.OPEN and not breaker.allow()
    clock.now_s += 0.999
    assert not breaker.allow()
    clock.now_s += 0.001
    assert breaker.allow() and not breaker.allow()
    breaker.record_success()
    assert breaker.allow() and breaker.allow() and breaker.failures == 0


def test_without_a_probe_timeout_a_probe_holds_the_others_until_it_reports() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, open_s=2.0, clock=clock)
    breaker.record_failure()
    clock.now_s += 2.0
    assert breaker.allow()  # the probe, still in flight
    clock.now_s += 60.0
    assert not breaker.allow()
    breaker.record_abandoned()  # its caller was cancelled
    assert breaker.allow()


def test_a_probe_that_never_reports_holds_the_others_for_probe_timeout_s_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, open_s=2.0, clock=clock, probe_timeout_s=2.0)
    breaker.record_failure()
    clock.now_s += 2.0
    assert breaker.allow()  # this probe is cancelled and never reports
    clock.now_s += 1.999
    assert not breaker.allow()
    clock.now_s += 0.001
    assert breaker.allow()
    assert state(breaker) is CircuitState.HALF_OPEN


def test_a_failure_while_open_extends_the_open_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, open_s=2.0, clock=clock)
    breaker.record_failure()
    clock.now_s += 1.5
    breaker.record_failure()  # a call sent before it opened fails late
    assert breaker.retry_in_s() == 2.0


def test_a_threshold_of_zero_never_opens() -> None:
    breaker = CircuitBreaker(0, open_s=1.0, clock=Clock())
    for _ in range(100):
        breaker.record_failure()
    assert breaker.allow() and state(breaker) is CircuitState.CLOSED
    assert breaker.failures == 100


@pytest.mark.parametrize(
    "threshold, open_s, probe_timeout_s", [(-1, 1.0, None), (1, 0.0, None), (1, 1.0, 0.0)]
)
def test_settings_are_checked(threshold: int, open_s: float, probe_timeout_s: float | None) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, open_s, probe_timeout_s=probe_timeout_s)

from __future__ import annotations

from switchyard.runtimes.circuit_breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_opens_after_consecutive_failures_and_probes_back() -> None:
    clock, changes = Clock(), []
    breaker = CircuitBreaker(3, open_s=2.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in_s() == 2.0
    clock.now_s = 1.9
    assert not breaker.allow()
    clock.now_s = 2.0
    assert breaker.allow()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure()  # the probe failed: open again, for another open_s
    assert breaker.state is CircuitState.OPEN and breaker.retry_in_s() == 2.0
    clock.now_s = 4.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    assert changes == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]

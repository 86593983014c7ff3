"""A circuit breaker for a remote backend: stop calling it while it fails, probe it back.

closed     calls go through; `failure_threshold` consecutive failures open the circuit
           (0: it never opens, the failures are only counted).
open       calls fail fast (no network wait) until `open_s` has passed, then
half_open  one probe call goes through: success closes the circuit, failure reopens it.

A probe holds the others back until it reports (success, failure, or abandoned when the
caller was cancelled). A caller that cannot report every outcome sets `probe_timeout_s`:
an unreported probe then holds the others back that long only, and the next is let through.
Used by the Triton runtime and by the Redis feature store (server/features), hence here:
server may import runtimes, not the other way. Time comes from an injected monotonic clock,
so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class CircuitState(IntEnum):
    """Also the value of the breaker-state metric."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        open_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
        probe_timeout_s: float | None = None,
    ) -> None:
        if failure_threshold < 0 or open_s <= 0:
            raise ValueError("failure_threshold must be >= 0 and open_s > 0")
        if probe_timeout_s is not None and probe_timeout_s <= 0:
            raise ValueError("probe_timeout_s must be > 0 (or None: until the probe reports)")
        self._threshold = failure_threshold
        self._open_s = open_s
        self._probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at_s = 0.0
        self._probe_in_flight = False
        self._probe_sent_at_s = 0.0

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def failures(self) -> int:
        """Failures in a row so far (0 once a call succeeds)."""
        return self._failures

    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at_s + self._open_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, True makes the caller the one probe."""
        if self._state is CircuitState.OPEN and self.retry_in_s() == 0.0:
            self._set(CircuitState.HALF_OPEN)
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.HALF_OPEN and not self._probe_holds():
            self._probe_in_flight = True
            self._probe_sent_at_s = self._clock()
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED)

    def record_abandoned(self) -> None:
        """The call was cancelled before it could tell: let another probe through."""
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or 0 < self._threshold <= self._failures:
            self._opened_at_s = self._clock()
            if self._state is not CircuitState.OPEN:
                self._set(CircuitState.OPEN)

    def _probe_holds(self) -> bool:
        """Whether a probe in flight still holds the other calls back."""
        if not self._probe_in_flight:
            return False
        if self._probe_timeout_s is None:
            return True
        return self._clock() < self._probe_sent_at_s + self._probe_timeout_s

    def _set(self, state: CircuitState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)

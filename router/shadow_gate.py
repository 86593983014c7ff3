"""A bounded concurrency gate for shadow work: admit without waiting, or drop and count.

Shadows are a side show: when an endpoint already runs its share of them, a new one is
dropped rather than queued, so shadows never add latency or memory to primary traffic.
"""

from __future__ import annotations

from enum import StrEnum


class Admission(StrEnum):
    """Whether shadow work may run; the values double as metric labels for drops."""

    ADMITTED = "admitted"
    AT_CAPACITY = "at_capacity"
    CLOSED = "closed"

    @property
    def admitted(self) -> bool:
        return self is Admission.ADMITTED


class ShadowGate:
    """Counts running shadow calls against a cap. Not thread-safe: one event loop owns it."""

    def __init__(self, max_concurrency: int) -> None:
        self._limit = 0
        self.limit = max_concurrency
        self._in_flight = 0
        self.admitted_total = 0
        self.dropped_total = 0

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, max_concurrency: int) -> None:
        # Lowering the cap below the running count takes effect as those calls finish.
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._limit = max_concurrency

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> Admission:
        """Take a slot if one is free; never waits. Pair every ADMITTED with one release()."""
        if self._in_flight >= self._limit:
            self.dropped_total += 1
            return Admission.AT_CAPACITY
        self._in_flight += 1
        self.admitted_total += 1
        return Admission.ADMITTED

    def release(self) -> None:
        if self._in_flight == 0:
            raise RuntimeError("ShadowGate.release() without a matching acquire")
        self._in_flight -= 1

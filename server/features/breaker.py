"""A circuit breaker, so that a store that is down does not cost every request its timeout.

after_failures failures in a row open it for open_s. Then one caller at a time is let
through as a probe: its success closes the breaker, its failure opens it again. A probe
that never reports (cancelled) holds the others back for open_s only, then another goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self, after_failures: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._after_failures = after_failures  # 0: never opens
        self._open_s = open_s
        self._clock = clock
        self._failures = 0
        self._blocked_until_s = 0.0

    @property
    def failures(self) -> int:
        """Failures in a row so far (0 once a call succeeds)."""
        return self._failures

    def is_open(self) -> bool:
        return 0 < self._after_failures <= self._failures

    def allows(self) -> bool:
        """Whether a call may go to the store now; when open, True makes the caller the probe."""
        if not self.is_open():
            return True
        now_s = self._clock()
        if now_s < self._blocked_until_s:
            return False
        self._blocked_until_s = now_s + self._open_s
        return True

    def succeeded(self) -> None:
        self._failures = 0
        self._blocked_until_s = 0.0

    def failed(self) -> None:
        self._failures += 1
        if self.is_open():
            self._blocked_until_s = self._clock() + self._open_s

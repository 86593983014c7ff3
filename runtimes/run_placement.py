"""Where a runtime's next run goes: on the event loop itself, or to a thread.

For a model of microseconds a thread hop (submit, wake a thread, take the GIL back) costs
more than the run, so fast runs run on the loop. Slow runs must not: they would hold every
other request.

What makes this hard is measuring. A run timed on the loop is clean, except when the OS
preempts it, which on a busy machine turns a 10 us run into milliseconds now and then. A
run timed in a thread includes the wait for the GIL after the run, up to the interpreter's
switch interval (5 ms) while the loop is busy: under load every threaded run looks slow,
so a policy fed those timings leaves the loop at the first hiccup and never comes back.
Hence:
- on the loop, the median of the last few runs decides (one preempted run does not), but
  a single run past `stall_factor` times the limit leaves at once (a model that became slow);
- on a thread, a run timed under half the limit proves the model fast (timings there only
  overstate), and otherwise one run a second is tried on the loop (a probe), unless the last
  threaded run was so slow that a probe would itself stall the loop.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

# Runs on the loop whose median decides whether runs stay there.
WINDOW_RUNS = 8
# A run on the loop this many times over the limit moves runs off at once.
STALL_FACTOR = 25
PROBE_INTERVAL_S = 1.0


class RunPlacement:
    """Decides, run by run, whether the next one runs inline (on the event loop)."""

    def __init__(
        self,
        inline_below_s: float,
        *,
        probe_interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit_s = inline_below_s
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._inline_runs_s: deque[float] = deque(maxlen=WINDOW_RUNS)
        self._inline = False  # unknown cost: a thread first
        self._probe_next = False
        self._last_probe_s = -float("inf")

    def next_inline(self) -> bool:
        """Whether the next run goes on the loop."""
        return self._limit_s > 0 and (self._inline or self._probe_next)

    def observe(self, run_s: float, ran_inline: bool) -> None:
        """Record a finished run: its duration and where it ran."""
        if self._limit_s <= 0:
            return
        if ran_inline:
            self._observe_inline(run_s)
        else:
            self._observe_threaded(run_s)

    def _observe_inline(self, run_s: float) -> None:
        if self._probe_next:  # a probe: one clean timing decides
            self._probe_next = False
            self._last_probe_s = self._clock()
            if run_s < self._limit_s / 2:
                self._move_inline(run_s)
            return
        self._inline_runs_s.append(run_s)
        if run_s >= STALL_FACTOR * self._limit_s or (
            len(self._inline_runs_s) == WINDOW_RUNS
            and statistics.median(self._inline_runs_s) >= self._limit_s
        ):
            self._inline = False
            self._last_probe_s = self._clock()

    def _observe_threaded(self, run_s: float) -> None:
        if run_s < self._limit_s / 2:
            self._move_inline(run_s)
        elif (
            not self._inline
            and run_s < STALL_FACTOR * self._limit_s
            and self._clock() - self._last_probe_s >= self._probe_interval_s
        ):
            self._probe_next = True

    def _move_inline(self, run_s: float) -> None:
        self._inline = True
        self._inline_runs_s.clear()
        self._inline_runs_s.append(run_s)

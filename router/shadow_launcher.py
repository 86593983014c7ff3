"""Runs shadow calls as owned background tasks under a ShadowGate.

The caller's request never waits on, or sees the failure of, its shadows: launch() returns at
once, a shadow's exception or timeout is logged and counted here (and told to the launch's
`on_outcome`, for metrics), and close() cancels and awaits whatever still runs, so no task
outlives its owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from switchyard.router.shadow_gate import Admission, ShadowGate

log = logging.getLogger(__name__)


class ShadowOutcome(StrEnum):
    """How an admitted shadow ended; the values double as metric labels."""

    OK = "ok"
    ERROR = "error"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # by close(): the server is shutting down


# Told how each admitted shadow ended, once, on the event loop.
OutcomeCallback = Callable[[ShadowOutcome], None]


class ShadowLauncher:
    def __init__(self, *, timeout_s: float | None = None) -> None:
        # A bound on each shadow, so a hung variant cannot hold its gate's slots forever.
        self._timeout_s = timeout_s
        self._tasks: set[asyncio.Task[ShadowOutcome]] = set()
        self._closed = False
        self.completed_total = 0
        self.failed_total = 0
        self.timed_out_total = 0
        self.cancelled_total = 0
        self.dropped_closed_total = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def launch(
        self,
        work: Coroutine[Any, Any, Any],
        gate: ShadowGate,
        *,
        name: str | None = None,
        on_outcome: OutcomeCallback | None = None,
    ) -> Admission:
        """Start `work` in the background if `gate` has room; otherwise close it unstarted.

        Must be called from the running event loop. Returns at once with the admission, whose
        value names the reason when the shadow was dropped; an admitted one's end is told to
        `on_outcome`.
        """
        loop = asyncio.get_running_loop()
        if self._closed:
            work.close()
            self.dropped_closed_total += 1
            return Admission.CLOSED
        admission = gate.try_acquire()
        if not admission.admitted:
            work.close()  # never started, so no "coroutine was never awaited" warning
            return admission
        task = loop.create_task(self._run(work, name), name=name)
        self._tasks.add(task)
        # Bookkeeping in a done callback, not in _run's finally: a task cancelled before its
        # first step never enters _run, yet must still release its slot.
        task.add_done_callback(lambda done: self._finished(done, work, gate, name, on_outcome))
        return admission

    async def _run(self, work: Coroutine[Any, Any, Any], name: str | None) -> ShadowOutcome:
        try:
            async with asyncio.timeout(self._timeout_s):
                await work
        except TimeoutError:
            self.timed_out_total += 1
            log.warning("shadow %s timed out after %ss", name or "call", self._timeout_s)
            return ShadowOutcome.TIMED_OUT
        except Exception:
            self.failed_total += 1
            log.exception("shadow %s failed", name or "call")
            return ShadowOutcome.ERROR
        self.completed_total += 1
        return ShadowOutcome.OK

    def _finished(
        self,
        task: asyncio.Task[ShadowOutcome],
        work: Coroutine[Any, Any, Any],
        gate: ShadowGate,
        name: str | None,
        on_outcome: OutcomeCallback | None,
    ) -> None:
        self._tasks.discard(task)
        gate.release()
        if task.cancelled():
            self.cancelled_total += 1
            work.close()  # no-op unless cancelled before it started
            outcome = ShadowOutcome.CANCELLED
        elif task.exception() is not None:  # a BaseException _run does not catch
            outcome = ShadowOutcome.ERROR
        else:
            outcome = task.result()
        if on_outcome is not None:
            try:
                on_outcome(outcome)
            except Exception:  # metrics must not break the launcher's bookkeeping
                log.exception("shadow %s: the outcome callback failed", name or "call")

    async def wait_idle(self) -> None:
        """Wait until every shadow launched so far has finished (for draining and tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Refuse new shadows, cancel the running ones and await them."""
        self._closed = True
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Open-loop load: requests sent on a fixed schedule, latency counted from the scheduled
send time, so a server that stalls cannot hide its tail (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loadtests.latency import percentile_s


@dataclass(frozen=True)
class OpenLoopResult:
    rate_per_s: float
    sent: int
    errors: int
    latencies_s: list[float]  # of successful requests, from their scheduled send time
    first_error: str | None = None  # what the first failed request raised, for the report

    def percentile_ms(self, q: float) -> float:
        return percentile_s(self.latencies_s, q) * 1e3


async def run_open_loop(
    call: Callable[[], Awaitable[object]],
    rate_per_s: float,
    duration_s: float,
    warmup_s: float = 1.0,
    max_in_flight: int = 10_000,
) -> OpenLoopResult:
    """Send `call()` every 1/rate seconds for warmup + duration; count only the duration."""
    interval_s = 1.0 / rate_per_s
    start_s = time.perf_counter()
    measure_from_s = start_s + warmup_s
    total = int((warmup_s + duration_s) * rate_per_s)
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(scheduled_s: float) -> None:
        nonlocal errors
        try:
            await call()
        except Exception as exc:
            errors += scheduled_s >= measure_from_s
            first_error[:] = first_error or [repr(exc)]
            return
        if scheduled_s >= measure_from_s:
            latencies.append(time.perf_counter() - scheduled_s)

    for index in range(total):
        scheduled_s = start_s + index * interval_s
        delay_s = scheduled_s - time.perf_counter()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if len(pending) >= max_in_flight:  # bounded: a dead server must not eat the memory
            errors += 1
            continue
        task = asyncio.create_task(one(scheduled_s))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    sent = int(duration_s * rate_per_s)
    return OpenLoopResult(rate_per_s, sent, errors, latencies, next(iter(first_error), None))

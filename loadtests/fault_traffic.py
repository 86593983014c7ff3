"""Closed-loop traffic that records every call, for the fault scenarios (loadtests/faults.py).

The callers run on an event loop of their own in a thread, so a scenario can break things
(stop Redis, kill Triton, signal the gateway) from the main thread while they keep calling.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from loadtests.clients import Client, error_kind
from loadtests.latency import percentile_s


@dataclass(frozen=True, slots=True)
class Call:
    ended_s: float  # monotonic
    latency_s: float
    outcome: str  # "OK", a gRPC status name, "HTTP 503", an exception type


class Calls:
    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls

    def between(self, start_s: float, end_s: float) -> Calls:
        return Calls([c for c in self.calls if start_s <= c.ended_s < end_s])

    def outcomes(self) -> Counter[str]:
        return Counter(c.outcome for c in self.calls)

    def latency_ms(self, q: float, outcome: str | None = "OK") -> float | None:
        """The q-quantile (0..1) of the latency of calls with `outcome` (None: all)."""
        chosen = [c.latency_s for c in self.calls if outcome is None or c.outcome == outcome]
        return percentile_s(chosen, q) * 1000 if chosen else None

    def first_ok_after(self, start_s: float) -> float | None:
        """Seconds from `start_s` to the first OK call that ended after it."""
        ends = [c.ended_s for c in self.calls if c.ended_s >= start_s and c.outcome == "OK"]
        return min(ends) - start_s if ends else None


class RecordedTraffic:
    """`callers` closed-loop callers, each with a client of its own from `make_client`."""

    def __init__(self, make_client: Callable[[], Client], callers: int = 4) -> None:
        self._make_client = make_client
        self._callers = callers
        self._calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> RecordedTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def calls(self) -> Calls:
        return Calls(list(self._calls))

    def wait_for_ok(self, count: int, timeout_s: float = 30.0) -> None:
        deadline_s = time.monotonic() + timeout_s
        target = sum(1 for c in self._calls if c.outcome == "OK") + count
        while sum(1 for c in list(self._calls) if c.outcome == "OK") < target:
            if time.monotonic() > deadline_s:
                raise RuntimeError(f"traffic stalled: {self.calls().outcomes()}")
            time.sleep(0.02)

    async def _run(self) -> None:
        await asyncio.gather(*(self._caller() for _ in range(self._callers)))

    async def _caller(self) -> None:
        client = self._make_client()
        try:
            while not self._stop.is_set():
                started_s = time.monotonic()
                try:
                    await client.call()
                    outcome = "OK"
                except Exception as exc:  # every failure is data here
                    outcome = error_kind(exc)
                    await asyncio.sleep(0.001)  # a refused call must not spin the loop
                ended_s = time.monotonic()
                self._calls.append(Call(ended_s, ended_s - started_s, outcome))
        finally:
            await client.close()

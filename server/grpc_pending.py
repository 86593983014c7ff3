"""How long each gRPC call waited inside grpc-core before the server picked it up.

When the Python front end is the bottleneck (a cheap model, many calls), grpc.aio takes one
call from grpc-core per turn of the event loop. The loop keeps turning (its lag stays under
a millisecond), but calls arrive faster than turns, so they queue inside grpc-core, where
no bound of ours sees them, and accepted calls wait seconds. grpc does not tell a call's
arrival time; it does count arrivals: channelz's `callsStarted` of the server, counted when
a call's headers arrive. grpc-core hands waiting calls over in arrival order, so the N-th
call the server picks up is the N-th that arrived, and sampling that count every
`sample_interval_s` dates each arrival to within one interval. A call picked up is at least
as old as the first sample that had counted it (an estimate that errs young, never old).

The count can drift ahead of the calls picked up: a call whose client gives up while it is
still waiting in grpc-core never reaches the server. So when `QUIET_SAMPLES_TO_RESYNC`
samples in a row find nothing arrived and nothing picked up while the loop was free to
pick up (its timer came on time), the backlog is taken to be empty: with the loop free,
grpc.aio would have picked up anything waiting. (Quiet, not merely free: grpc-core counts a
call when its headers arrive and can take a while longer to offer it to the server, so a
burst that has just arrived is not yet there to pick up.)
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = [
    "PENDING_SAMPLE_INTERVAL_S",
    "PendingWaitEstimator",
    "channelz_calls_started",
    "channelz_server_ids",
    "sample_interval_for",
]

log = logging.getLogger(__name__)

PENDING_SAMPLE_INTERVAL_S = 0.01
# Each sample is a channelz query of 0.1 to 0.7 ms on the loop: the interval is a twentieth
# of the bound (a call is dated to within 5% of it), between these, and QUIET_INTERVAL_FACTOR
# times longer while nothing waits.
MAX_SAMPLE_INTERVAL_S = 0.05
BOUND_PER_INTERVAL = 20
# Samples kept while calls wait (one per 10 ms): older ones only date calls far older than
# any sensible bound, which then look younger (seconds old) than they are.
MAX_SAMPLES = 4096
# A sample this much later than due means the loop was busy: no resynchronisation then.
ON_TIME_MARGIN_S = 0.002
QUIET_SAMPLES_TO_RESYNC = 2
# Sampling slows by this factor while no call waits and the loop is free.
QUIET_INTERVAL_FACTOR = 4

# grpc's Cython core: the channelz queries grpcio-channelz itself is built on (no stubs).
_cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")


def sample_interval_for(max_pending_wait_s: float) -> float:
    """The sampling interval for calls refused past `max_pending_wait_s`."""
    interval_s = max_pending_wait_s / BOUND_PER_INTERVAL
    return min(MAX_SAMPLE_INTERVAL_S, max(PENDING_SAMPLE_INTERVAL_S, interval_s))


def channelz_server_ids() -> set[int]:
    """The channelz ids of every gRPC server of this process."""
    ids: set[int] = set()
    start = 0
    while True:
        page = json.loads(_cygrpc.channelz_get_servers(start))
        servers = page.get("server", [])
        ids.update(int(server["ref"]["serverId"]) for server in servers)
        if page.get("end", True) or not servers:
            return ids
        start = max(ids) + 1


def channelz_calls_started(server_id: int) -> Callable[[], int]:
    """A reader of how many calls have arrived at the server `server_id` so far."""

    def read() -> int:
        data = json.loads(_cygrpc.channelz_get_server(server_id))["server"]["data"]
        return int(data.get("callsStarted", 0))  # absent while 0

    return read


class PendingWaitEstimator:
    """Dates the calls a server picks up (see the module doc). `picked_up()` is called once
    for every call, in the order the server picks them up, in the server's event loop."""

    def __init__(
        self,
        calls_started: Callable[[], int],
        sample_interval_s: float = PENDING_SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if sample_interval_s <= 0:
            raise ValueError(f"sample_interval_s must be > 0, got {sample_interval_s}")
        self._calls_started = calls_started
        self._interval_s = sample_interval_s
        self._clock = clock
        # (time, calls arrived by then), oldest first; only samples a call not yet picked
        # up may need.
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        self._picked = 0  # calls picked up, in grpc-core's arrival count
        self._last_started = 0
        self._picked_at_last_sample = 0
        self._due_s = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._failed = False
        self._sampled = False  # a first sample was read
        self._quiet_samples = 0  # samples in a row with nothing arrived or picked up

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._handle is None and not self._failed:
            self.sample()
            if not self._failed:
                self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def picked_up(self) -> float:
        """The server picked up its next call: seconds it waited inside grpc-core, at least."""
        self._picked += 1
        samples = self._samples
        while samples and samples[0][1] < self._picked:
            samples.popleft()  # from before this call arrived: no later call needs it either
        if not samples:
            return 0.0  # arrived after the last sample: younger than one interval
        return max(0.0, self._clock() - samples[0][0])

    @property
    def backlog(self) -> int:
        """Calls that arrived and were not picked up yet, by the estimate."""
        return max(0, self._last_started - self._picked)

    def sample(self, loop_was_free: bool = False) -> None:
        """Read the arrival count now; `loop_was_free`: the loop could have picked up a call
        since the previous sample (resynchronisation: the module doc)."""
        try:
            started = self._calls_started()
        except Exception:  # channelz off, or the server is gone: the estimate stops
            if not self._sampled:
                log.warning("cannot read gRPC channelz call counts: no pending-wait shedding")
            self._failed = True
            self.stop()
            self._samples.clear()
            return
        self._sampled = True
        quiet = started == self._last_started and self._picked == self._picked_at_last_sample
        self._quiet_samples = self._quiet_samples + 1 if quiet and loop_was_free else 0
        if self._quiet_samples >= QUIET_SAMPLES_TO_RESYNC:
            self._picked = started  # nothing is waiting (module doc)
        self._picked = min(self._picked, started)  # never ahead of the arrivals
        self._last_started = started
        self._picked_at_last_sample = self._picked
        if not self._samples or started > self._samples[-1][1]:
            self._samples.append((self._clock(), started))

    def next_interval_s(self, loop_was_free: bool) -> float:
        """Seconds to the next sample. Nothing waiting and the loop free: no backlog is
        forming, so less often; a backlog that starts meanwhile is dated by the next sample,
        younger than it is (by at most the longer interval)."""
        if loop_was_free and self.backlog == 0:
            return self._interval_s * QUIET_INTERVAL_FACTOR
        return self._interval_s

    def _schedule(self, loop: asyncio.AbstractEventLoop, loop_was_free: bool = False) -> None:
        interval_s = self.next_interval_s(loop_was_free)
        self._due_s = time.perf_counter() + interval_s
        self._handle = loop.call_later(interval_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        loop_was_free = time.perf_counter() - self._due_s < ON_TIME_MARGIN_S
        self.sample(loop_was_free=loop_was_free)
        if not self._failed:
            self._schedule(loop, loop_was_free)

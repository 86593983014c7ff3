"""Dynamic batching in front of one model variant, with Triton's dynamic-batcher semantics.

Callers `await infer(inputs, deadline_s)`. Requests wait in a bounded queue, grouped by what
can be concatenated on the batch (first) dimension: the same input names, dtypes and other
dimensions. A supervised scheduler task forms batches; with an instance slot free, a group
dispatches at once when its queued rows form a preferred batch size (the largest it can) or
when it cannot grow any more (it reached max_batch_size or the largest preferred size, or its
next request does not fit); otherwise it waits until its oldest request has waited
max_queue_delay_us and then dispatches the largest batch that fits max_batch_size. Among the
groups ready to go, the one whose oldest request is oldest goes first. max_batch_size 0 turns
batching off: each request runs alone, still queued, bounded and deadline-checked. With no
queue delay, a request that finds nothing waiting and an instance free is what the scheduler
would dispatch alone at once: its caller runs it directly, without the scheduler's hops.

Overload is refused at the door with Overloaded (RESOURCE_EXHAUSTED): when max_queue_size
requests wait, and, with max_queue_wait_s set, when the work already queued would keep a new
request waiting longer than that. The wait is estimated from the runs so far (see
_expected_wait_s), so that under overload the requests accepted wait about max_queue_wait_s
at most instead of a whole queue's worth.

Time comes from an injected Clock so that tests drive the queue delay and deadlines by hand.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from opentelemetry.trace import SpanContext

from switchyard.runtimes import tracing
from switchyard.runtimes.base import Runtime
from switchyard.runtimes.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Overloaded,
    SwitchyardError,
    Unavailable,
)

__all__ = [
    "REFUSED_DEADLINE",
    "REFUSED_INVALID",
    "REFUSED_QUEUE_FULL",
    "REFUSED_QUEUE_WAIT",
    "REFUSED_SHUTTING_DOWN",
    "BatchExecutionError",
    "BatchObserver",
    "BatchingOptions",
    "Clock",
    "DynamicBatcher",
    "MonotonicClock",
]

log = logging.getLogger(__name__)

# The reasons BatchObserver.request_refused reports.
REFUSED_QUEUE_FULL = "queue_full"
REFUSED_QUEUE_WAIT = "queue_wait"
REFUSED_INVALID = "invalid_argument"
REFUSED_DEADLINE = "deadline_exceeded"
REFUSED_SHUTTING_DOWN = "shutting_down"

# A crashed scheduler waits this long (real time: the injected clock may be what failed)
# before it restarts, so that a persistent fault cannot spin the event loop.
SCHEDULER_RESTART_DELAY_S = 0.05

# Weight of the newest run in the moving averages the queue-wait estimate uses: a few runs
# follow a change of load, one slow run does not refuse a burst.
RUN_TIME_AVERAGE_WEIGHT = 0.2

Outputs = dict[str, np.ndarray]


class Clock(Protocol):
    """Monotonic seconds and a sleep on the same time line; injected so tests need no sleeps."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: time.monotonic() and asyncio.sleep()."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class BatchObserver(Protocol):
    """Hooks for metrics, so that the batcher imports no metrics library.

    Subclass it and override what you need: the others do nothing (`return None` says so to
    type checkers, for which a protocol method with a docstring-only body is abstract). They
    are called on the event loop, so keep them cheap; an exception in one is logged and
    otherwise ignored.
    """

    def batch_executed(self, rows: int, requests: int, compute_s: float) -> None:
        """A batch ran: its rows (1 per request when batching is off), requests, runtime time."""
        return None

    def request_dequeued(self, queue_s: float) -> None:
        """A request left the queue for a batch after waiting queue_s."""
        return None

    def request_refused(self, reason: str) -> None:
        """A request was refused or dropped before it ran; reason is one of REFUSED_*."""
        return None

    def queue_depth_changed(self, depth: int) -> None:
        """The number of waiting requests is now depth."""
        return None


class _NullObserver(BatchObserver):
    pass


class BatchExecutionError(RuntimeError):
    """A runtime failed on a batch with an error outside the Switchyard tree (see __cause__).

    Each caller of the batch gets its own instance. It is deliberately not a SwitchyardError:
    the runtime's message may hold internals, so callers see a generic internal error.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchingOptions:
    """Dynamic batching of one model variant (Triton's `dynamic_batching` settings)."""

    max_batch_size: int  # rows per batch; 0 turns batching off (one request per runtime call)
    max_queue_delay_us: int  # how long the oldest request of a partial batch waits for more
    max_queue_size: int  # waiting requests; one more is refused with Overloaded
    instance_count: int = 1  # batches executing at once
    preferred_batch_sizes: tuple[int, ...] = ()  # row counts dispatched as soon as they form
    default_timeout_s: float | None = None  # for requests that bring no deadline
    # Refuse a request that would wait longer than this for the work queued ahead of it.
    max_queue_wait_s: float | None = None

    def __post_init__(self) -> None:
        for name, minimum in (
            ("max_batch_size", 0),
            ("max_queue_delay_us", 0),
            ("max_queue_size", 1),
            ("instance_count", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"batching: {name} must be an integer >= {minimum}, got {value!r}")
        preferred = tuple(sorted(self.preferred_batch_sizes))
        if preferred and self.max_batch_size == 0:
            raise ValueError("batching: preferred_batch_sizes need max_batch_size > 0")
        for size in preferred:
            if not isinstance(size, int) or not 1 <= size <= self.max_batch_size:
                raise ValueError(
                    f"batching: preferred batch size {size!r} must be an integer in "
                    f"1..max_batch_size ({self.max_batch_size})"
                )
        if len(set(preferred)) != len(preferred):
            raise ValueError(f"batching: preferred_batch_sizes repeat: {preferred}")
        object.__setattr__(self, "preferred_batch_sizes", preferred)  # sorted, and a tuple
        timeout_s = self.default_timeout_s
        if timeout_s is not None and not (0 < timeout_s < math.inf):
            raise ValueError(f"batching: default_timeout_s must be > 0 or None, got {timeout_s}")
        wait_s = self.max_queue_wait_s
        if wait_s is not None and not (0 < wait_s < math.inf):
            raise ValueError(f"batching: max_queue_wait_s must be > 0 or None, got {wait_s}")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


@dataclass(eq=False, slots=True)
class _Request:
    inputs: Mapping[str, np.ndarray]
    rows: int
    key: Hashable  # requests with equal keys can share a batch
    seq: int  # arrival order; breaks ties where the clock does not
    enqueued_s: float
    deadline_s: float | None
    future: asyncio.Future[Outputs]
    queued: bool = True
    trace: tracing.BatchSpanTrace | None = None  # None unless tracing is on


def _traced(batch: list[_Request]) -> list[SpanContext]:
    return [request.trace.context for request in batch if request.trace is not None]


def _latest_deadline_s(batch: list[_Request]) -> float | None:
    """How long a remote runtime may take for the batch: until its last caller gives up."""
    deadlines = [request.deadline_s for request in batch]
    return None if None in deadlines else max(d for d in deadlines if d is not None)


def _resolve(future: asyncio.Future[Outputs], outputs: Outputs) -> None:
    if not future.done():  # a cancelled caller's result is dropped
        future.set_result(outputs)


def _fail(future: asyncio.Future[Outputs], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class DynamicBatcher:
    """Queues requests for one runtime and runs them in batches; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        options: BatchingOptions,
        output_names: Sequence[str],
        label: str,
        clock: Clock | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self._runtime = runtime
        self._options = options
        self._output_names = tuple(output_names)  # every batch computes all of them
        self._label = label
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._observer: BatchObserver = observer if observer is not None else _NullObserver()
        self._delay_s = options.max_queue_delay_us / 1e6
        self._preferred = frozenset(options.preferred_batch_sizes)
        # Waiting cannot help a batch past the largest preferred size (Triton's rule).
        self._growth_cap = max(options.preferred_batch_sizes, default=options.max_batch_size)
        self._groups: dict[Hashable, deque[_Request]] = {}
        self._deadlines: list[tuple[float, int, _Request]] = []  # a heap; stale entries skipped
        self._queued = 0
        self._queued_rows = 0
        self._in_flight = 0
        # Moving averages of seconds per batch and per row served (None before any run),
        # and what _record_run needs to measure them.
        self._batch_s: float | None = None
        self._row_s: float | None = None
        self._last_done_s: float | None = None
        self._busy_since_last_done = False
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # set once closing and nothing is queued or running
        self._closed = asyncio.Event()
        self._closing = False
        self._scheduler: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = math.inf
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._callers_running: set[asyncio.Task[object]] = set()  # see _run_now

    @property
    def max_batch_size(self) -> int:
        return self._options.max_batch_size

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not those running)."""
        return self._queued

    async def start(self) -> None:
        if self._closing:
            raise Unavailable(f"model '{self._label}' is shut down")
        if self._scheduler is None:
            self._scheduler = asyncio.create_task(self._supervise(), name=f"batcher:{self._label}")

    async def infer(
        self, inputs: Mapping[str, np.ndarray], deadline_s: float | None = None
    ) -> Outputs:
        """Run `inputs` in some batch and return this request's rows of every output.

        `deadline_s` is absolute, on the injected clock; the earlier of it and
        default_timeout_s applies. A request still queued at its deadline fails with
        DeadlineExceeded; one already running is allowed to finish.
        """
        if self._closing or self._scheduler is None:
            self._refuse(REFUSED_SHUTTING_DOWN)
            state = "shutting down" if self._closing else "not started"
            raise Unavailable(f"model '{self._label}' is {state}")
        try:
            rows, key = self._describe(inputs)
        except InvalidArgument:
            self._refuse(REFUSED_INVALID)
            raise
        now_s = self._clock.now()
        if self._options.default_timeout_s is not None:
            default_s = now_s + self._options.default_timeout_s
            deadline_s = default_s if deadline_s is None else min(deadline_s, default_s)
        if deadline_s is not None and deadline_s <= now_s:
            self._refuse(REFUSED_DEADLINE)
            raise DeadlineExceeded(f"model '{self._label}': the deadline passed before queueing")
        if self._queued >= self._options.max_queue_size:
            self._refuse(REFUSED_QUEUE_FULL)
            raise Overloaded(
                f"model '{self._label}': the queue is full "
                f"(max_queue_size {self._options.max_queue_size}); retry later",
                REFUSED_QUEUE_FULL,
            )
        max_wait_s = self._options.max_queue_wait_s
        if max_wait_s is not None and (wait_s := self._expected_wait_s()) > max_wait_s:
            self._refuse(REFUSED_QUEUE_WAIT)
            raise Overloaded(
                f"model '{self._label}': the {self._queued} requests queued are about "
                f"{wait_s * 1e3:.0f} ms of work, more than max_queue_wait_s "
                f"({max_wait_s:g} s); retry later",
                REFUSED_QUEUE_WAIT,
            )
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        request = _Request(inputs, rows, key, next(self._seq), now_s, deadline_s, future)
        span_context = tracing.current_span_context()
        if self._runs_at_once():
            if span_context is not None:
                request.trace = tracing.BatchSpanTrace(span_context, None)
            return await self._run_now(request)
        if span_context is not None:
            request.trace = tracing.BatchSpanTrace(
                span_context, tracing.start_queue_wait(self._label)
            )
        self._enqueue(request)
        try:
            return await future
        finally:
            if request.queued:  # the caller was cancelled while waiting: leave the queue
                self._unqueue(request)
            elif future.done() and not future.cancelled():
                future.exception()  # mark it retrieved, so asyncio does not warn about it

    async def close(self, drain: bool = True) -> None:
        """Stop taking requests. drain: run what is queued first (without waiting out the
        queue delay); otherwise fail queued and running requests with Unavailable."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._wakeup.set()
        try:
            if drain and self._scheduler is not None:
                await self._idle.wait()
        finally:  # also when the drain itself is cancelled (a shutdown grace period ran out)
            for queue in list(self._groups.values()):
                for request in list(queue):
                    self._unqueue(request)
                    self._refuse(REFUSED_SHUTTING_DOWN)
                    _fail(request.future, Unavailable(f"model '{self._label}' is shutting down"))
            tasks = [t for t in (self._scheduler, self._timer, *self._batch_tasks) if t]
            for task in tasks:
                task.cancel()  # batch tasks fail their requests in _batch_done
            for caller in self._callers_running:
                caller.cancel()  # _run_now answers them Unavailable
            await asyncio.gather(*tasks, return_exceptions=True)
            self._closed.set()

    def _runs_at_once(self) -> bool:
        """Nothing waits, an instance is free and there is no queue delay: the scheduler
        would dispatch this request alone at once, so its caller runs it, sparing it the
        hops through the scheduler and a batch task. (A model of microseconds that runs on
        the event loop then completes the request without yielding.) Requests arriving while
        it runs queue and batch as usual."""
        return (
            self._delay_s == 0
            and not self._queued
            and self._in_flight < self._options.instance_count
        )

    async def _run_now(self, request: _Request) -> Outputs:
        caller = asyncio.current_task()
        assert caller is not None  # infer() is always awaited in a task
        request.queued = False
        self._notify(self._observer.request_dequeued, 0.0)
        self._in_flight += 1
        self._callers_running.add(caller)
        try:
            await self._run_batch([request])
        except asyncio.CancelledError:
            # close() without drain cancelled this run: say so, as to batched requests; a
            # cancellation of the caller's own is passed on.
            if self._closing and caller.uncancel() == 0:
                raise Unavailable(f"model '{self._label}' is shutting down") from None
            raise
        finally:
            self._callers_running.discard(caller)
            self._in_flight -= 1
            if self._queued or self._closing:
                # Whatever queued meanwhile may go now (a drain ends once idle). Otherwise
                # the scheduler has nothing to do: waking it would cost a task step a call.
                self._wakeup.set()
        return request.future.result()  # or the error the run set

    # --- the queue ---

    def _expected_wait_s(self) -> float:
        """How long the work queued now keeps a new request waiting, from the recent runs.

        The queued rows form at least ceil(rows / max_batch_size) batches. Of the two
        estimates, batches times seconds per batch (right for a model whose run time hardly
        depends on the batch size) and rows times seconds per row (right for one whose time
        grows with it), the smaller is taken: after light load, when batches were small,
        neither refuses a burst that will run as a few large batches; under steady load the
        two agree. The batch running now is not counted: it is one run at most."""
        if not self._queued or self._batch_s is None or self._row_s is None:
            return 0.0
        rows = self._queued_rows
        batches = math.ceil(rows / self._options.max_batch_size) if self._options.batching else rows
        return min(batches * self._batch_s, rows * self._row_s)

    def _record_run(self, rows: int, compute_s: float) -> None:
        """Update the seconds per batch and per row served. While requests keep waiting, a
        sample is the time since the previous batch finished: what the queue really drains
        at, with every instance, the hops and the event loop's own load. Otherwise it is
        the run's own time, shared by the instances."""
        done_s = self._clock.now()
        if self._busy_since_last_done and self._last_done_s is not None:
            batch_s = done_s - self._last_done_s
        else:
            batch_s = compute_s / self._options.instance_count
        self._last_done_s = done_s
        self._busy_since_last_done = self._queued > 0  # the next batch goes at once
        row_s = batch_s / rows
        if self._batch_s is None or self._row_s is None:
            self._batch_s, self._row_s = batch_s, row_s
        else:
            weight = RUN_TIME_AVERAGE_WEIGHT
            self._batch_s += weight * (batch_s - self._batch_s)
            self._row_s += weight * (row_s - self._row_s)

    def _describe(self, inputs: Mapping[str, np.ndarray]) -> tuple[int, Hashable]:
        """The request's row count and group key; InvalidArgument if it cannot be batched."""
        if not self._options.batching:
            return 1, None  # inputs go to the runtime as they are
        if not inputs:
            raise InvalidArgument(f"model '{self._label}': the request has no inputs")
        row_counts = {}
        for name, array in inputs.items():
            if not isinstance(array, np.ndarray) or array.ndim == 0:
                raise InvalidArgument(
                    f"model '{self._label}': input '{name}' needs a batch (first) dimension"
                )
            row_counts[name] = array.shape[0]
        rows = next(iter(row_counts.values()))
        if any(count != rows for count in row_counts.values()):
            raise InvalidArgument(
                f"model '{self._label}': inputs disagree on the batch (first) dimension: "
                f"{row_counts}"
            )
        if not 1 <= rows <= self._options.max_batch_size:
            raise InvalidArgument(
                f"model '{self._label}': the request has {rows} rows; it must have 1 to "
                f"{self._options.max_batch_size} (the model's max_batch_size)"
            )
        key = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items()))
        return rows, key

    def _enqueue(self, request: _Request) -> None:
        self._groups.setdefault(request.key, deque()).append(request)
        self._queued_rows += request.rows
        if request.deadline_s is not None:
            heapq.heappush(self._deadlines, (request.deadline_s, request.seq, request))
            if len(self._deadlines) > 2 * self._options.max_queue_size + 64:
                # Dispatched requests linger in the heap until they surface; drop them.
                self._deadlines = [entry for entry in self._deadlines if entry[2].queued]
                heapq.heapify(self._deadlines)
        self._queued += 1
        self._notify(self._observer.queue_depth_changed, self._queued)
        self._wakeup.set()

    def _unqueue(self, request: _Request) -> None:
        queue = self._groups[request.key]
        queue.remove(request)
        if not queue:
            del self._groups[request.key]
        request.queued = False
        if request.trace is not None:
            request.trace.dequeued()
        self._queued -= 1
        self._queued_rows -= request.rows
        self._notify(self._observer.queue_depth_changed, self._queued)

    def _refuse(self, reason: str) -> None:
        self._notify(self._observer.request_refused, reason)

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("model '%s': batch observer %s failed", self._label, callback)

    # --- the scheduler ---

    async def _supervise(self) -> None:
        while True:  # cancellation (close) is a BaseException and ends it
            try:
                await self._schedule_forever()
            except Exception:
                log.exception("model '%s': batch scheduler crashed; restarting it", self._label)
                await asyncio.sleep(SCHEDULER_RESTART_DELAY_S)

    async def _schedule_forever(self) -> None:
        while True:
            self._wakeup.clear()
            now_s = self._clock.now()
            wake_at_s = self._expire_overdue(now_s)
            while self._queued and self._in_flight < self._options.instance_count:
                batch, ready_at_s = self._next_batch(now_s)
                if batch is None:
                    wake_at_s = min(wake_at_s, ready_at_s)
                    break
                self._dispatch(batch, now_s)
            if self._closing and not self._queued and not self._in_flight:
                self._idle.set()
            self._arm_timer(wake_at_s)
            await self._wakeup.wait()  # an arrival, a finished batch, the timer, or close

    def _expire_overdue(self, now_s: float) -> float:
        """Fail queued requests whose deadline has passed; return the next deadline."""
        while self._deadlines:
            deadline_s, _, request = self._deadlines[0]
            if request.queued and deadline_s > now_s:
                return deadline_s
            heapq.heappop(self._deadlines)
            if request.queued:
                self._unqueue(request)
                self._refuse(REFUSED_DEADLINE)
                waited_ms = (now_s - request.enqueued_s) * 1e3
                _fail(
                    request.future,
                    DeadlineExceeded(
                        f"model '{self._label}': the deadline passed after {waited_ms:.1f} ms "
                        "in the queue"
                    ),
                )
        return math.inf

    def _next_batch(self, now_s: float) -> tuple[list[_Request] | None, float]:
        """The batch to dispatch now, if any, else when the first partial batch's delay ends."""
        best: deque[_Request] | None = None
        best_count = 0
        ready_at_s = math.inf
        for queue in self._groups.values():
            if best is not None and queue[0].seq > best[0].seq:
                continue  # younger than a group already ready: fairness says it waits
            count, group_ready_at_s = self._plan(queue, now_s)
            if count:
                best, best_count = queue, count
            else:
                ready_at_s = min(ready_at_s, group_ready_at_s)
        if best is None:
            return None, ready_at_s
        batch = [best.popleft() for _ in range(best_count)]
        if not best:
            del self._groups[batch[0].key]
        return batch, ready_at_s

    def _plan(self, queue: deque[_Request], now_s: float) -> tuple[int, float]:
        """How many of a group's requests to dispatch now (0: wait), and when its delay ends."""
        if not self._options.batching:
            return 1, now_s
        ready_at_s = queue[0].enqueued_s + self._delay_s
        rows = count = preferred_count = 0
        for request in queue:
            if rows + request.rows > self._options.max_batch_size:
                break
            rows += request.rows
            count += 1
            if rows in self._preferred:
                preferred_count = count
        delay_over = now_s >= ready_at_s or self._closing  # a drain does not wait
        if preferred_count and not delay_over:
            return preferred_count, ready_at_s
        can_grow = count == len(queue) and rows < self._growth_cap
        return (count if delay_over or not can_grow else 0), ready_at_s

    def _arm_timer(self, wake_at_s: float) -> None:
        """Make sure the scheduler wakes by wake_at_s; an earlier wake-up is harmless."""
        timer = self._timer
        if timer is not None and timer.done():
            self._timer = None
            if not timer.cancelled():
                timer.result()  # re-raise a failed clock.sleep: the scheduler restarts
            timer = None
        if wake_at_s == math.inf or (timer is not None and self._timer_at <= wake_at_s):
            return
        if timer is not None:
            timer.cancel()
        self._timer_at = wake_at_s
        self._timer = asyncio.create_task(self._wake_at(wake_at_s))

    async def _wake_at(self, wake_at_s: float) -> None:
        try:
            await self._clock.sleep(max(0.0, wake_at_s - self._clock.now()))
        finally:  # on failure too, so that the scheduler sees it (in _arm_timer) and restarts
            self._wakeup.set()

    # --- running batches ---

    def _dispatch(self, batch: list[_Request], now_s: float) -> None:
        self._queued -= len(batch)
        self._queued_rows -= sum(request.rows for request in batch)
        for request in batch:
            request.queued = False
            if request.trace is not None:
                request.trace.dequeued()
            self._notify(self._observer.request_dequeued, now_s - request.enqueued_s)
        self._notify(self._observer.queue_depth_changed, self._queued)
        self._in_flight += 1
        task = asyncio.create_task(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(functools.partial(self._batch_done, batch))

    async def _run_batch(self, batch: list[_Request]) -> None:
        started_s = self._clock.now()
        rows = sum(request.rows for request in batch)
        try:
            with tracing.batch_compute_span(self._label, _traced(batch), rows):
                outputs = await self._runtime.infer(
                    self._merge(batch), self._output_names, deadline_s=_latest_deadline_s(batch)
                )
            parts = self._split(batch, outputs)
        except SwitchyardError as error:  # written for the caller: pass it on as it is
            for request in batch:
                _fail(request.future, error)
            return
        except Exception as error:
            for request in batch:
                _fail(request.future, self._wrap(error, len(batch)))
            return
        compute_s = self._clock.now() - started_s
        self._record_run(rows, compute_s)
        self._notify(self._observer.batch_executed, rows, len(batch), compute_s)
        for request, part in zip(batch, parts, strict=True):
            _resolve(request.future, part)

    def _batch_done(self, batch: list[_Request], task: asyncio.Task[None]) -> None:
        """Runs however the batch task ended, even cancelled before it started."""
        self._in_flight -= 1
        self._batch_tasks.discard(task)
        if task.cancelled():
            for request in batch:
                _fail(request.future, Unavailable(f"model '{self._label}' is shutting down"))
        elif (error := task.exception()) is not None:
            for request in batch:
                _fail(request.future, self._wrap(error, len(batch)))
        self._wakeup.set()

    def _merge(self, batch: list[_Request]) -> Mapping[str, np.ndarray]:
        if len(batch) == 1:
            return batch[0].inputs
        names = batch[0].inputs.keys()  # the group key guarantees the same names everywhere
        return {name: np.concatenate([r.inputs[name] for r in batch]) for name in names}

    def _split(self, batch: list[_Request], outputs: Mapping[str, np.ndarray]) -> list[Outputs]:
        if len(batch) == 1:
            return [dict(outputs)]
        total_rows = sum(request.rows for request in batch)
        for name in self._output_names:
            if name not in outputs:
                raise ValueError(f"the runtime returned no output '{name}'")
            if np.ndim(outputs[name]) == 0 or len(outputs[name]) != total_rows:
                raise ValueError(
                    f"output '{name}' has shape {np.shape(outputs[name])}; the batch has "
                    f"{total_rows} rows"
                )
        parts = []
        start = 0
        for request in batch:
            stop = start + request.rows
            parts.append({name: outputs[name][start:stop] for name in self._output_names})
            start = stop
        return parts

    def _wrap(self, error: BaseException, requests: int) -> BatchExecutionError:
        wrapped = BatchExecutionError(
            f"model '{self._label}' failed on a batch of {requests} requests: "
            f"{type(error).__name__}: {error}"
        )
        wrapped.__cause__ = error
        return wrapped

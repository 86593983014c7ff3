"""The dynamic batcher against a fake runtime and a manual clock: no real sleeps for timing."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.runtimes.base import ModelSignature, Runtime
from switchyard.runtimes.batcher import (
    BatchExecutionError,
    BatchingOptions,
    BatchObserver,
    DynamicBatcher,
)
from switchyard.runtimes.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Overloaded,
    ResourceExhausted,
    Unavailable,
)

LABEL = "ranker:1"
OUTPUTS = ("out", "rowsum")


class ManualClock:
    """A clock that moves only when told to; sleepers wake when it passes their time."""

    def __init__(self) -> None:
        self._now_s = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.fail_next_sleep = False

    def now(self) -> float:
        return self._now_s

    async def sleep(self, seconds: float) -> None:
        if self.fail_next_sleep:
            self.fail_next_sleep = False
            raise RuntimeError("injected clock failure")
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now_s + seconds, next(self._seq), future))
        await future

    def advance(self, seconds: float) -> None:
        self._now_s += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now_s:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


async def settle(rounds: int = 50) -> None:
    """Let every ready task run until the loop has nothing left to do at this instant."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def compute(x: np.ndarray) -> dict[str, np.ndarray]:
    """The fake model: a deterministic function of each row alone."""
    rowsum = x.reshape(len(x), -1).sum(axis=1)
    return {"out": x * 2 + rowsum.reshape((-1,) + (1,) * (x.ndim - 1)), "rowsum": rowsum}


def rows_of(request_id: int, rows: int, width: int = 3, dtype: Any = np.float32) -> np.ndarray:
    """Rows that name their request: x[i, j] = id * 100 + i."""
    column = request_id * 100 + np.arange(rows)
    return np.repeat(column[:, None], width, axis=1).astype(dtype)


class FakeRuntime(Runtime):
    """Computes `compute`, records every batch, and can be held, slowed or made to fail."""

    def __init__(
        self,
        clock: ManualClock | None = None,
        compute_s: float = 0.0,
        fail: Callable[[np.ndarray], BaseException | None] | None = None,
    ) -> None:
        self.clock = clock
        self.compute_s = compute_s
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[np.ndarray] = []
        self.deadlines: list[float | None] = []  # what each call was given
        self.active = 0
        self.max_active = 0

    def load(self) -> ModelSignature:
        return ModelSignature("fake", (), ())

    @property
    def batch_rows(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def seen_order(self) -> list[int]:
        """The request id of every row the runtime saw, in order (see rows_of)."""
        return [
            int(row[0]) // 100 for batch in self.batches for row in batch.reshape(len(batch), -1)
        ]

    def seen_ids(self) -> set[int]:
        return set(self.seen_order())

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        deadline_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(x)
        self.deadlines.append(deadline_s)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.gate.wait()
            if self.compute_s and self.clock is not None:
                await self.clock.sleep(self.compute_s)
            else:
                await asyncio.sleep(0)
            if self.fail is not None and (error := self.fail(x)) is not None:
                raise error
            outputs = compute(x)
            return {name: outputs[name] for name in output_names}
        finally:
            self.active -= 1


def options(**overrides: Any) -> BatchingOptions:
    values: dict[str, Any] = {
        "max_batch_size": 8,
        "max_queue_delay_us": 0,
        "max_queue_size": 64,
        "instance_count": 1,
    }
    values.update(overrides)
    return BatchingOptions(**values)


def run(test: Callable[[], Awaitable[None]], timeout_s: float = 10.0) -> None:
    """Run one async test in a fresh loop, bounded so that a hang fails instead of blocking."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout_s):  # in this task, unlike wait_for in 3.11
            await test()

    asyncio.run(bounded())


def assert_no_other_tasks() -> None:
    assert asyncio.all_tasks() == {asyncio.current_task()}


def assert_result(result: dict[str, np.ndarray], x: np.ndarray) -> None:
    expected = compute(x)
    assert set(result) == set(OUTPUTS)
    for name in OUTPUTS:
        assert result[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(result[name], expected[name])


async def started(
    runtime: Runtime, opts: BatchingOptions, clock: ManualClock, **kwargs: Any
) -> DynamicBatcher:
    batcher = DynamicBatcher(runtime, opts, OUTPUTS, LABEL, clock=clock, **kwargs)
    await batcher.start()
    return batcher


# --- options ---


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"max_queue_delay_us": -5}, "max_queue_delay_us"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"instance_count": 0}, "instance_count"),
        ({"instance_count": 1.5}, "instance_count"),
        ({"preferred_batch_sizes": (9,)}, "preferred batch size 9"),
        ({"preferred_batch_sizes": (0,)}, "preferred batch size 0"),
        ({"preferred_batch_sizes": (2, 2)}, "repeat"),
        ({"max_batch_size": 0, "preferred_batch_sizes": (1,)}, "max_batch_size > 0"),
        ({"default_timeout_s": 0.0}, "default_timeout_s"),
        ({"max_queue_wait_s": 0.0}, "max_queue_wait_s"),
    ],
)
def test_invalid_options_are_refused_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        options(**overrides)


def test_preferred_sizes_are_kept_sorted() -> None:
    assert options(preferred_batch_sizes=[4, 2]).preferred_batch_sizes == (2, 4)


# --- batching and splitting ---


def test_concurrent_requests_share_a_batch_and_get_their_own_rows() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(), clock)
        runtime.gate.clear()
        first = asyncio.create_task(batcher.infer({"x": rows_of(9, 1)}))
        await settle()
        # The first found the batcher idle and runs at once; these arrive while it runs.
        inputs = [rows_of(i, rows) for i, rows in enumerate((1, 2, 3))]
        waiting = asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
        await settle()
        runtime.gate.set()
        results = await waiting
        assert_result(await first, rows_of(9, 1))
        assert runtime.batch_rows == [1, 6]
        for result, x in zip(results, inputs, strict=True):
            assert_result(result, x)
        await batcher.close()
        assert_no_other_tasks()

    run(scenario)


def test_a_request_to_an_idle_batcher_runs_at_once_in_its_callers_task() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        seen: list[tuple[int, int]] = []

        class Observer(BatchObserver):
            def batch_executed(self, rows: int, requests: int, compute_s: float) -> None:
                seen.append((rows, requests))

        batcher = await started(runtime, options(), clock, observer=Observer())
        tasks_before = len(asyncio.all_tasks())
        for i in range(3):  # one after another: each finds the batcher idle
            assert_result(await batcher.infer({"x": rows_of(i, 2)}), rows_of(i, 2))
            assert len(asyncio.all_tasks()) == tasks_before  # no batch task was made
        assert runtime.batch_rows == [2, 2, 2] and seen == [(2, 1)] * 3
        # With a queue delay, requests wait for company as configured.
        delayed = await started(FakeRuntime(), options(max_queue_delay_us=1000), clock)
        task = asyncio.create_task(delayed.infer({"x": rows_of(0, 1)}))
        await settle()
        assert delayed.queue_depth == 1 and not task.done()
        clock.advance(0.001)
        await settle()
        assert_result(await task, rows_of(0, 1))
        await batcher.close()
        await delayed.close()
        assert_no_other_tasks()

    run(scenario)


def test_the_runtime_gets_the_latest_deadline_of_its_batch() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(), clock)
        for pair in ((5.0, 9.0), (5.0, None)):  # a caller with no deadline: none for all
            runtime.gate.clear()
            first = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))  # runs at once
            await settle()
            waiting = asyncio.gather(
                *(batcher.infer({"x": rows_of(1, 1)}, deadline_s=d) for d in pair)
            )
            await settle()
            runtime.gate.set()
            await asyncio.gather(first, waiting)
        assert runtime.deadlines == [None, 9.0, None, None]
        await batcher.close()


def test_partial_batch_waits_for_the_queue_delay_and_no_longer() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_queue_delay_us=250_000), clock)
        first = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        clock.advance(0.125)
        second = asyncio.create_task(batcher.infer({"x": rows_of(1, 2)}))
        await settle()
        clock.advance(0.0625)
        await settle()
        assert runtime.batches == []  # the oldest has waited 0.1875 s of 0.25 s
        assert batcher.queue_depth == 2
        clock.advance(0.0625)
        await settle()
        assert runtime.batch_rows == [3]
        assert_result(await first, rows_of(0, 1))
        assert_result(await second, rows_of(1, 2))
        await batcher.close()

    run(scenario)


def test_a_full_batch_or_one_that_cannot_grow_goes_at_once() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_batch_size=4, max_queue_delay_us=10**9), clock)
        full = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in range(4)]
        await settle()
        assert runtime.batch_rows == [4]
        # 3 rows queued and the next request has 2: waiting cannot help, the 3 go now.
        tail = [
            asyncio.create_task(batcher.infer({"x": rows_of(i, r)})) for i, r in [(5, 3), (6, 2)]
        ]
        await settle()
        assert runtime.batch_rows == [4, 3]
        assert batcher.queue_depth == 1
        await asyncio.gather(*full, tail[0])
        await batcher.close(drain=True)
        assert runtime.batch_rows == [4, 3, 2]
        assert_result(await tail[1], rows_of(6, 2))

    run(scenario)


def test_preferred_batch_sizes_dispatch_at_once() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        opts = options(max_queue_delay_us=500_000, preferred_batch_sizes=(2, 4))
        batcher = await started(runtime, opts, clock)
        # Five rows queued at once: the largest preferred prefix (4) goes, 1 row waits.
        tasks = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in range(5)]
        await settle()
        assert runtime.batch_rows == [4]
        assert batcher.queue_depth == 1
        tasks.append(asyncio.create_task(batcher.infer({"x": rows_of(5, 1)})))
        await settle()
        assert runtime.batch_rows == [4, 2]  # 2 is preferred: no waiting for the delay
        tasks.append(asyncio.create_task(batcher.infer({"x": rows_of(6, 3)})))
        await settle()
        assert runtime.batch_rows == [4, 2]  # 3 is not preferred and can still grow
        clock.advance(0.5)
        await settle()
        assert runtime.batch_rows == [4, 2, 3]
        for i, task in enumerate(tasks):
            assert_result(await task, rows_of(i, 3 if i == 6 else 1))
        await batcher.close()

    run(scenario)


def test_incompatible_requests_go_to_separate_batches_oldest_group_first() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(), clock)
        runtime.gate.clear()
        blocker = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        wide_int = {"x": rows_of(1, 2, width=4, dtype=np.int64)}
        narrow = {"x": rows_of(2, 1, width=2)}
        extra = {"x": rows_of(3, 1), "y": np.zeros((1, 1))}
        requests = [wide_int, narrow, extra, {"x": rows_of(4, 1, width=4, dtype=np.int64)}]
        requests.append({"x": rows_of(5, 1, width=2, dtype=np.float64)})
        tasks = [asyncio.create_task(batcher.infer(inputs)) for inputs in requests]
        await settle()
        runtime.gate.set()
        results = await asyncio.gather(blocker, *tasks)
        # int64 width 4 (the oldest group, both requests), then each other group in turn.
        assert [(b.dtype, b.shape) for b in runtime.batches[1:]] == [
            (np.dtype(np.int64), (3, 4)),
            (np.dtype(np.float32), (1, 2)),
            (np.dtype(np.float32), (1, 3)),
            (np.dtype(np.float64), (1, 2)),
        ]
        for result, inputs in zip(results[1:], requests, strict=True):
            assert_result(result, inputs["x"])
        await batcher.close()

    run(scenario)


# --- limits ---


def test_a_full_queue_refuses_with_resource_exhausted() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        refusals: list[str] = []

        class Refusals(BatchObserver):
            def request_refused(self, reason: str) -> None:
                refusals.append(reason)

        batcher = await started(runtime, options(max_queue_size=2), clock, observer=Refusals())
        runtime.gate.clear()
        running = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        queued = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in (1, 2)]
        await settle()
        assert batcher.queue_depth == 2
        with pytest.raises(ResourceExhausted, match=r"ranker:1.*max_queue_size 2"):
            await batcher.infer({"x": rows_of(3, 1)})
        assert refusals == ["queue_full"]
        runtime.gate.set()
        await asyncio.gather(running, *queued)
        await batcher.close()

    run(scenario)


def test_a_full_queue_refuses_with_overloaded_naming_the_bound() -> None:
    async def scenario() -> None:
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_queue_size=1), ManualClock())
        runtime.gate.clear()
        running = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        queued = asyncio.create_task(batcher.infer({"x": rows_of(1, 1)}))
        await settle()
        with pytest.raises(Overloaded) as refused:
            await batcher.infer({"x": rows_of(2, 1)})
        assert refused.value.reason == "queue_full"  # the shed counter's reason label
        runtime.gate.set()
        await asyncio.gather(running, queued)
        await batcher.close()

    run(scenario)


async def _busy_queue(
    batcher: DynamicBatcher, first_id: int, count: int
) -> list[asyncio.Task[dict[str, np.ndarray]]]:
    """`count` single-row requests sent one after another, each queued behind the last."""
    tasks = []
    for request_id in range(first_id, first_id + count):
        tasks.append(asyncio.create_task(batcher.infer({"x": rows_of(request_id, 1)})))
        await settle()
    return tasks


def test_a_request_that_would_wait_longer_than_max_queue_wait_is_refused_at_once() -> None:
    """Batching off, runs of 0.1 s, 0.25 s allowed: a request may queue behind two
    waiting ones (0.2 s of work) but not behind three (0.3 s): refused at once; once the
    queue drained requests are taken again. A full queue (max_queue_size 64) is far away."""

    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime(clock, compute_s=0.1)
        refusals: list[str] = []

        class Refusals(BatchObserver):
            def request_refused(self, reason: str) -> None:
                refusals.append(reason)

        opts = options(max_batch_size=0, max_queue_wait_s=0.25)
        batcher = await started(runtime, opts, clock, observer=Refusals())
        first = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        clock.advance(0.1)  # one run measured: 0.1 s per request
        await first
        tasks = await _busy_queue(batcher, 1, 4)  # 1 runs, 2 to 4 wait
        assert batcher.queue_depth == 3
        with pytest.raises(Overloaded, match=r"ranker:1.*300 ms of work.*max_queue_wait_s") as e:
            await batcher.infer({"x": rows_of(9, 1)})
        assert e.value.reason == "queue_wait"
        assert refusals == ["queue_wait"]
        for _ in range(4):
            clock.advance(0.1)
            await settle()
        await asyncio.gather(*tasks)
        assert batcher.queue_depth == 0
        assert_result(await _accepted(batcher, clock, 10), rows_of(10, 1))
        await batcher.close()

    run(scenario)


async def _accepted(batcher: DynamicBatcher, clock: ManualClock, request_id: int) -> Any:
    task = asyncio.create_task(batcher.infer({"x": rows_of(request_id, 1)}))
    await settle()
    clock.advance(0.1)
    return await task


def test_a_burst_after_light_load_is_judged_by_the_batches_it_will_form() -> None:
    """A run takes 0.1 s whatever its rows. After runs of one row, 8 queued rows are one
    batch (0.1 s), not 8 runs: with 0.25 s allowed, 17 requests queue (3 batches' worth
    is reached by the 17th) and the 18th is refused."""

    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime(clock, compute_s=0.1)
        opts = options(max_batch_size=8, max_queue_wait_s=0.25)
        batcher = await started(runtime, opts, clock)
        assert_result(await _accepted(batcher, clock, 0), rows_of(0, 1))
        runtime.gate.clear()
        tasks = await _busy_queue(batcher, 1, 18)  # 1 runs, 17 wait
        assert batcher.queue_depth == 17
        with pytest.raises(Overloaded, match="300 ms of work"):
            await batcher.infer({"x": rows_of(99, 1)})
        runtime.gate.set()
        for _ in range(5):
            clock.advance(0.1)
            await settle()
        for task, request_id in zip(tasks, range(1, 19), strict=True):
            assert_result(await task, rows_of(request_id, 1))
        await batcher.close()

    run(scenario)


def test_requests_that_cannot_be_batched_are_invalid() -> None:
    async def scenario() -> None:
        batcher = await started(FakeRuntime(), options(max_batch_size=4), ManualClock())
        with pytest.raises(InvalidArgument, match=r"5 rows.*1 to 4.*max_batch_size"):
            await batcher.infer({"x": rows_of(0, 5)})
        with pytest.raises(InvalidArgument, match="disagree"):
            await batcher.infer({"x": rows_of(0, 2), "y": rows_of(1, 3)})
        with pytest.raises(InvalidArgument, match="batch"):
            await batcher.infer({"x": np.float32(1.0)})  # type: ignore[dict-item]
        with pytest.raises(InvalidArgument, match="0 rows"):
            await batcher.infer({"x": np.zeros((0, 3), np.float32)})
        with pytest.raises(InvalidArgument, match="no inputs"):
            await batcher.infer({})
        await batcher.close()

    run(scenario)


def test_instance_count_caps_batches_in_flight() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_batch_size=1, instance_count=2), clock)
        runtime.gate.clear()
        tasks = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in range(5)]
        await settle()
        assert (runtime.active, batcher.queue_depth) == (2, 3)
        runtime.gate.set()
        for i, task in enumerate(tasks):
            assert_result(await task, rows_of(i, 1))
        assert runtime.max_active == 2
        await batcher.close()

    run(scenario)


def test_pass_through_runs_each_request_alone() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        opts = options(max_batch_size=0, max_queue_size=3, max_queue_delay_us=10**9)
        batcher = await started(runtime, opts, clock)
        runtime.gate.clear()
        # Any shape goes: there is no batch dimension to respect, and no size limit.
        inputs = [rows_of(0, 50), rows_of(1, 1, width=7), rows_of(2, 2, dtype=np.int32)]
        inputs.append(rows_of(3, 1))
        tasks = []
        for x in inputs:  # one running, three queued
            tasks.append(asyncio.create_task(batcher.infer({"x": x})))
            await settle()
        with pytest.raises(ResourceExhausted):
            await batcher.infer({"x": rows_of(4, 1)})
        runtime.gate.set()
        for task, x in zip(tasks, inputs, strict=True):
            assert_result(await task, x)
        assert runtime.batch_rows == [50, 1, 2, 1]
        assert runtime.max_active == 1
        await batcher.close()

    run(scenario)


# --- deadlines ---


def test_a_request_still_queued_at_its_deadline_is_dropped() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(default_timeout_s=2.0), clock)
        runtime.gate.clear()
        running = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}, deadline_s=0.25))
        await settle()
        late = asyncio.create_task(batcher.infer({"x": rows_of(1, 1)}, deadline_s=0.5))
        by_default = asyncio.create_task(batcher.infer({"x": rows_of(2, 1)}, deadline_s=9.0))
        await settle()
        clock.advance(0.5)  # the runtime still holds the first batch
        await settle()
        with pytest.raises(DeadlineExceeded, match=r"ranker:1.*in the queue"):
            await late
        assert not by_default.done()
        clock.advance(1.5)  # default_timeout_s (2 s) is earlier than its own 9 s
        await settle()
        with pytest.raises(DeadlineExceeded):
            await by_default
        runtime.gate.set()
        # A request already running finishes even past its deadline.
        assert_result(await running, rows_of(0, 1))
        assert runtime.seen_ids() == {0}
        with pytest.raises(DeadlineExceeded, match="before queueing"):
            await batcher.infer({"x": rows_of(3, 1)}, deadline_s=clock.now())
        await batcher.close()
        assert_no_other_tasks()

    run(scenario)


# --- failures ---


def test_a_failing_runtime_fails_only_its_batch() -> None:
    def fail(x: np.ndarray) -> BaseException | None:
        if (x < 0).any():
            return ValueError("negative input")
        if (x > 1e6).any():
            return InvalidArgument("too large a value")
        return None

    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime(fail=fail)
        batcher = await started(runtime, options(max_batch_size=2), clock)
        runtime.gate.clear()
        blocker = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        bad = [-rows_of(1, 1), rows_of(2, 1)]  # one batch, failed by its first request
        good = [rows_of(3, 1), rows_of(4, 1)]
        tasks = [asyncio.create_task(batcher.infer({"x": x})) for x in bad + good]
        await settle()
        runtime.gate.set()
        outcomes = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        assert runtime.batch_rows == [1, 2, 2]
        errors = outcomes[1:3]
        for error in errors:
            assert isinstance(error, BatchExecutionError)
            assert isinstance(error.__cause__, ValueError)
            assert "ranker:1" in str(error)
        assert errors[0] is not errors[1]  # each caller gets its own exception
        for result, x in zip(outcomes[3:], good, strict=True):
            assert isinstance(result, dict)
            assert_result(result, x)
        # A SwitchyardError passes through as it is, and the batcher keeps serving.
        with pytest.raises(InvalidArgument, match="too large a value"):
            await batcher.infer({"x": np.full((1, 3), 1e7, np.float32)})
        assert_result(await batcher.infer({"x": rows_of(5, 2)}), rows_of(5, 2))
        await batcher.close()

    run(scenario)


def test_the_scheduler_is_restarted_after_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_queue_delay_us=100_000), clock)
        clock.fail_next_sleep = True  # the queue-delay timer fails: the scheduler crashes
        task = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))
        await settle()
        clock.advance(0.1)
        # It restarts after a short real pause, then serves the request.
        assert_result(await task, rows_of(0, 1))
        await batcher.close()
        assert_no_other_tasks()

    with caplog.at_level(logging.ERROR, logger="switchyard.runtimes.batcher"):
        run(scenario)
    assert "batch scheduler crashed; restarting it" in caplog.text


def test_an_observer_that_raises_does_not_break_the_batcher() -> None:
    class Broken(BatchObserver):
        def queue_depth_changed(self, depth: int) -> None:
            raise RuntimeError("observer bug")

    async def scenario() -> None:
        batcher = await started(FakeRuntime(), options(), ManualClock(), observer=Broken())
        assert_result(await batcher.infer({"x": rows_of(0, 2)}), rows_of(0, 2))
        await batcher.close()

    run(scenario)


def test_observer_sees_batches_waits_and_depths() -> None:
    events: list[tuple[str, Any]] = []

    class Recorder(BatchObserver):
        def batch_executed(self, rows: int, requests: int, compute_s: float) -> None:
            events.append(("batch", (rows, requests, compute_s)))

        def request_dequeued(self, queue_s: float) -> None:
            events.append(("dequeued", queue_s))

        def queue_depth_changed(self, depth: int) -> None:
            events.append(("depth", depth))

    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime(clock, compute_s=0.5)
        batcher = await started(
            runtime, options(max_queue_delay_us=250_000), clock, observer=Recorder()
        )
        tasks = [asyncio.create_task(batcher.infer({"x": rows_of(i, 2)})) for i in range(2)]
        await settle()
        clock.advance(0.25)
        await settle()
        clock.advance(0.5)
        await asyncio.gather(*tasks)
        await batcher.close()

    run(scenario)
    assert events == [
        ("depth", 1),
        ("depth", 2),
        ("dequeued", 0.25),
        ("dequeued", 0.25),
        ("depth", 0),
        ("batch", (4, 2, 0.5)),
    ]


# --- cancellation and shutdown ---


def test_a_cancelled_caller_leaves_the_queue_and_leaks_nothing() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_batch_size=2), clock)
        runtime.gate.clear()
        running = asyncio.create_task(batcher.infer({"x": rows_of(0, 1)}))  # runs at once
        await settle()
        queued = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in (1, 2, 3)]
        await settle()
        assert batcher.queue_depth == 3
        queued[1].cancel()  # still queued
        running.cancel()  # already running: its run is cancelled with it
        await settle()
        # The instance is free again: the two left share the next batch.
        assert batcher.queue_depth == 0 and runtime.batch_rows == [1, 2]
        runtime.gate.set()
        assert_result(await queued[0], rows_of(1, 1))
        assert_result(await queued[2], rows_of(3, 1))
        assert queued[1].cancelled() and running.cancelled()
        assert runtime.seen_ids() == {0, 1, 3}
        await batcher.close()
        assert_no_other_tasks()

    run(scenario)


def test_close_with_drain_finishes_queued_requests_without_waiting_the_delay() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_queue_delay_us=10**9), clock)
        tasks = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in range(3)]
        await settle()
        assert runtime.batches == []
        await batcher.close(drain=True)
        for i, task in enumerate(tasks):
            assert_result(task.result(), rows_of(i, 1))
        with pytest.raises(Unavailable, match="'ranker:1' is shutting down"):
            await batcher.infer({"x": rows_of(9, 1)})
        assert_no_other_tasks()

    run(scenario)


def test_close_without_drain_fails_queued_and_running_requests() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        runtime = FakeRuntime()
        batcher = await started(runtime, options(max_batch_size=1), clock)
        runtime.gate.clear()
        tasks = [asyncio.create_task(batcher.infer({"x": rows_of(i, 1)})) for i in range(3)]
        await settle()
        await batcher.close(drain=False)
        for task in tasks:
            with pytest.raises(Unavailable, match="shutting down"):
                await task
        await batcher.close()  # idempotent
        assert batcher.queue_depth == 0
        assert_no_other_tasks()

    run(scenario)


def test_infer_before_start_is_unavailable() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(FakeRuntime(), options(), OUTPUTS, LABEL)
        with pytest.raises(Unavailable, match="not started"):
            await batcher.infer({"x": rows_of(0, 1)})

    run(scenario)


# --- properties over random arrival patterns ---

# Groups: (width, dtype, extra input). Requests in different groups never share a batch.
GROUPS = [
    (3, np.float32, False),
    (2, np.float32, False),
    (3, np.int64, False),
    (3, np.float32, True),
]
STEP_S = 0.125


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[BatchingOptions, float, list[dict[str, Any]]]:
    max_batch_size = draw(st.integers(1, 6))
    preferred = draw(st.lists(st.integers(1, max_batch_size), unique=True, max_size=2))
    opts = BatchingOptions(
        max_batch_size=max_batch_size,
        max_queue_delay_us=draw(st.sampled_from([0, 250_000, 1_000_000])),
        max_queue_size=draw(st.integers(1, 12)),
        instance_count=draw(st.integers(1, 3)),
        preferred_batch_sizes=tuple(preferred),
        default_timeout_s=draw(st.sampled_from([None, 1.0])),
    )
    compute_s = draw(st.sampled_from([0.0, 0.25]))
    request = st.fixed_dictionaries(
        {
            "step": st.integers(0, 5),
            "rows": st.integers(1, max_batch_size),
            "group": st.integers(0, len(GROUPS) - 1),
            "deadline_in_s": st.sampled_from([None, None, 0.125, 0.5, 2.0]),
            "cancel_step": st.one_of(st.none(), st.integers(0, 7)),
        }
    )
    return opts, compute_s, draw(st.lists(request, min_size=1, max_size=20))


def inputs_for(request_id: int, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    width, dtype, extra = GROUPS[spec["group"]]
    inputs = {"x": rows_of(request_id, spec["rows"], width, dtype)}
    if extra:
        inputs["y"] = np.zeros((spec["rows"], 1), np.float32)
    return inputs


async def play(opts: BatchingOptions, compute_s: float, specs: list[dict[str, Any]]) -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, compute_s)
    batcher = await started(runtime, opts, clock)
    tasks: dict[int, asyncio.Task[dict[str, np.ndarray]]] = {}
    inputs = {i: inputs_for(i, spec) for i, spec in enumerate(specs)}
    for step in range(8):
        for i, spec in enumerate(specs):
            if spec["step"] == step:
                deadline_in_s = spec["deadline_in_s"]
                deadline_s = None if deadline_in_s is None else clock.now() + deadline_in_s
                tasks[i] = asyncio.create_task(batcher.infer(inputs[i], deadline_s))
            if spec["cancel_step"] == step and i in tasks:
                tasks[i].cancel()
        await settle()
        clock.advance(STEP_S)
        await settle()
    for _ in range(200):  # let time run on until every caller has its answer
        if all(task.done() for task in tasks.values()):
            break
        clock.advance(STEP_S)
        await settle()
    assert all(task.done() for task in tasks.values()), "a caller was left waiting"

    seen = runtime.seen_ids()
    for i, task in tasks.items():
        spec = specs[i]
        if task.cancelled():
            assert spec["cancel_step"] is not None
            continue
        error = task.exception()
        if error is None:
            assert_result(task.result(), inputs[i]["x"])
        elif isinstance(error, DeadlineExceeded):
            assert spec["deadline_in_s"] is not None or opts.default_timeout_s is not None
            assert i not in seen, "a request past its deadline ran"
        else:
            assert isinstance(error, ResourceExhausted), error
            assert i not in seen
    assert all(rows <= opts.max_batch_size for rows in runtime.batch_rows)
    assert runtime.max_active <= opts.instance_count
    # FIFO within each group: the runtime sees a group's requests in arrival order.
    for group in range(len(GROUPS)):
        arrivals = [
            (specs[i]["step"], i) for i in runtime.seen_order() if specs[i]["group"] == group
        ]
        assert arrivals == sorted(arrivals)
    assert batcher.queue_depth == 0
    # A batch whose callers were all cancelled may still be computing: the drain waits for it.
    closing = asyncio.create_task(batcher.close())
    for _ in range(20):
        await settle()
        if closing.done():
            break
        clock.advance(STEP_S)
    await closing
    assert_no_other_tasks()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_caller_gets_its_own_rows_or_a_clear_error(
    scenario: tuple[BatchingOptions, float, list[dict[str, Any]]],
) -> None:
    run(lambda: play(*scenario), timeout_s=30.0)

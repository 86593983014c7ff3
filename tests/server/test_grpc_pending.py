"""PendingWaitEstimator: dating the calls a server picks up from grpc-core's arrival count,
driven by hand (a fake count and clock), and the channelz reader against a real server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import open_inference_pb2_grpc as pb_grpc
from switchyard.server.grpc_pending import (
    PendingWaitEstimator,
    channelz_calls_started,
    channelz_server_ids,
    sample_interval_for,
)


class _Arrivals:
    """A fake arrival count and clock."""

    def __init__(self) -> None:
        self.started = 0
        self.now_s = 100.0

    def count(self) -> int:
        return self.started

    def clock(self) -> float:
        return self.now_s


def _estimator(arrivals: _Arrivals) -> PendingWaitEstimator:
    return PendingWaitEstimator(arrivals.count, clock=arrivals.clock)


def test_a_call_is_dated_by_the_first_sample_that_counted_it() -> None:
    arrivals = _Arrivals()
    estimator = _estimator(arrivals)
    estimator.sample()
    arrivals.started = 3  # calls 1-3 arrive before t=100.01
    arrivals.now_s = 100.01
    estimator.sample()
    arrivals.started = 5  # calls 4-5 before t=100.02
    arrivals.now_s = 100.02
    estimator.sample()
    assert estimator.backlog == 5
    arrivals.now_s = 100.5
    ages = [estimator.picked_up() for _ in range(5)]
    assert ages == pytest.approx([0.49, 0.49, 0.49, 0.48, 0.48])
    assert estimator.backlog == 0
    # A call that arrived after the last sample is younger than one interval: 0.
    assert estimator.picked_up() == 0.0


def test_a_quiet_free_loop_resynchronises_the_count() -> None:
    """Calls whose clients gave up inside grpc-core are counted as arrivals but never picked
    up: without the resynchronisation every later call would look older and older."""
    arrivals = _Arrivals()
    estimator = _estimator(arrivals)
    estimator.sample()
    arrivals.started = 10  # ten arrive; their clients cancel before the server takes them
    estimator.sample(loop_was_free=True)
    assert estimator.backlog == 10  # they have just arrived: they may be waiting
    arrivals.now_s += 0.01
    estimator.sample(loop_was_free=True)  # nothing arrived or picked up, the loop free
    assert estimator.backlog == 10  # once might be grpc-core still offering them
    arrivals.now_s += 0.01
    estimator.sample(loop_was_free=True)  # twice: nothing is waiting
    assert estimator.backlog == 0
    arrivals.started = 11
    arrivals.now_s += 0.01
    estimator.sample()
    arrivals.now_s += 5.0
    assert estimator.picked_up() == pytest.approx(5.0)  # dated by its own arrival


def test_no_resynchronisation_while_the_loop_is_busy_or_calls_come_and_go() -> None:
    arrivals = _Arrivals()
    estimator = _estimator(arrivals)
    arrivals.started = 4
    estimator.sample()
    for _ in range(3):
        arrivals.now_s += 0.01
        estimator.sample(loop_was_free=False)  # the loop was stuck: they really wait
    assert estimator.backlog == 4
    for _ in range(3):
        estimator.picked_up()  # the loop works through them, more arrive
        arrivals.started += 1
        arrivals.now_s += 0.01
        estimator.sample(loop_was_free=True)
    assert estimator.backlog == 4


def test_a_count_that_cannot_be_read_stops_the_estimate_not_the_server() -> None:
    def broken() -> int:
        raise RuntimeError("channelz is off")

    estimator = PendingWaitEstimator(broken)

    async def start() -> bool:
        estimator.start()
        return estimator.running

    assert asyncio.run(start()) is False
    assert estimator.picked_up() == 0.0  # every call admitted: nothing to date it by


def test_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_interval_s must be > 0"):
        PendingWaitEstimator(lambda: 0, sample_interval_s=0)


def test_sampling_slows_while_nothing_waits_and_the_loop_is_free() -> None:
    arrivals = _Arrivals()
    estimator = PendingWaitEstimator(arrivals.count, sample_interval_s=0.02, clock=arrivals.clock)
    estimator.sample()
    assert estimator.next_interval_s(loop_was_free=True) == pytest.approx(0.08)
    assert estimator.next_interval_s(loop_was_free=False) == 0.02  # a busy loop
    arrivals.started = 3  # three calls arrived, none picked up yet
    estimator.sample(loop_was_free=True)
    assert estimator.next_interval_s(loop_was_free=True) == 0.02


def test_the_sampling_interval_is_a_twentieth_of_the_bound_within_limits() -> None:
    assert sample_interval_for(0.5) == pytest.approx(0.025)  # the default bound
    assert sample_interval_for(0.05) == 0.01  # never more often than every 10 ms
    assert sample_interval_for(30.0) == 0.05  # nor less often than every 50 ms


class _Live(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request: pb.ServerLiveRequest, context: object) -> object:
        return pb.ServerLiveResponse(live=True)


def test_channelz_counts_the_calls_that_reach_a_real_server() -> None:
    async def run() -> tuple[int, int]:
        before = channelz_server_ids()
        server = grpc.aio.server()
        (created,) = channelz_server_ids() - before
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Live(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        read = channelz_calls_started(created)
        try:
            at_start = read()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                for _ in range(7):
                    await stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
            return at_start, read()
        finally:
            await server.stop(None)

    at_start, after = asyncio.run(run())
    assert (at_start, after) == (0, 7)

"""The prediction log's encoding and its Redis backend (a real redis-server of this module's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from loadtests.redis_process import RedisServer
from switchyard.server.config_sections import ControlSettings, FeedbackSettings
from switchyard.server.predictions import (
    MemoryPredictionStore,
    Prediction,
    PredictionStoreUnavailable,
    RedisPredictionStore,
    ScoredItem,
    create_prediction_store,
    decode_prediction,
    encode_prediction,
)

ITEMS = [ScoredItem("a", 0.9), ScoredItem("b", 0.30000001192092896), ScoredItem("c", -1e-7)]


def prediction(time_s: float = 1000.5) -> Prediction:
    return Prediction("recs", "canary", "2", ITEMS, 3, time_s)


def test_encoding_round_trips_exactly_and_compactly() -> None:
    raw = encode_prediction(prediction())
    back = decode_prediction(raw)
    assert (back.endpoint, back.variant, back.version, back.k, back.time_s) == (
        "recs", "canary", "2", 3, 1000.5,
    )  # fmt: skip
    assert list(back.items) == ITEMS  # float scores exactly, in the order shown
    assert not back.joined
    assert len(raw) < 90  # no key names: about 20 bytes an item plus the fixed fields


def test_encoding_takes_numpy_float32_scores() -> None:
    np = pytest.importorskip("numpy")
    score = np.float32(0.7)
    back = decode_prediction(
        encode_prediction(Prediction("e", "", "1", [ScoredItem("x", score)], 0, 1.0))
    )
    assert back.items[0].score == float(score)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"e": "recs"}',
        b'["r","","1",0,1,["a"],[]]',
        b'["r","","1",0,NaN,["a"],[0.1]]',
        b'["r","","1",0,1,"a",[0.1]]',
        b'["r","","1",0,1,["a"],["x"]]',
    ],
)
def test_bad_records_are_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a prediction record"):
        decode_prediction(raw)


def test_memory_store_is_chosen_without_a_redis_control_store() -> None:
    store = create_prediction_store(FeedbackSettings(), ControlSettings())
    assert isinstance(store, MemoryPredictionStore)


def test_memory_store_expires_after_ttl_and_late_window() -> None:
    store = MemoryPredictionStore(FeedbackSettings(ttl_s=10))
    store.put("old", prediction(time_s=0.0))
    store.put("new", prediction(time_s=19.0))  # within 10 + 10
    assert asyncio.run(store.get("old")) is not None
    store.put("newer", prediction(time_s=21.0))
    assert asyncio.run(store.get("old")) is None
    assert (store.stats.dropped_ttl, store.stats.kept) == (1, 2)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("predictions-redis"))
    server.start()
    yield server
    server.stop()


def redis_store(url: str, **settings: float) -> RedisPredictionStore:
    control = ControlSettings(store="redis", url=url, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    store = create_prediction_store(FeedbackSettings(**settings), control)  # type: ignore[arg-type]
    assert isinstance(store, RedisPredictionStore)
    return store


def test_redis_store_writes_in_the_background_and_joins_once(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = redis_store(redis_server.url, ttl_s=30)
        second = redis_store(redis_server.url, ttl_s=30)
        second._prefix = store._prefix  # another replica of the same deployment
        await store.start()
        for n in range(300):  # more than one batch
            store.put(f"r{n}", prediction())
        await store.close()  # writes what is queued
        client = redis.Redis.from_url(redis_server.url)
        assert client.pttl(store.key("r0")) > 50_000  # ttl + late window, in ms
        found = await second.get("r299")
        assert found is not None and list(found.items) == ITEMS
        assert await second.get("nobody") is None
        assert await second.mark_joined("r299", found)
        assert not await store.mark_joined("r299", found)  # the other replica: duplicate
        assert store.stats.pending == 0 and store.stats.dropped_write_failed == 0
        await second.close()

    asyncio.run(scenario())


def test_a_full_queue_drops_and_counts_without_blocking(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = redis_store(redis_server.url, redis_queue_max=5)
        for n in range(8):  # not started: nothing drains the queue
            store.put(f"r{n}", prediction())
        assert store.stats.dropped_queue_full == 3
        await store.close()
        assert store.stats.dropped_queue_full == 3
        assert redis.Redis.from_url(redis_server.url).exists(store.key("r4"), store.key("r5")) == 1

    asyncio.run(scenario())


def test_an_unreachable_redis_fails_reads_as_unavailable_and_counts_writes(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)  # never started: nothing listens on its port

    async def scenario() -> None:
        store = redis_store(server.url)
        store.put("r1", prediction())
        with pytest.raises(PredictionStoreUnavailable, match="retry this feedback later"):
            await store.get("r1")
        with pytest.raises(PredictionStoreUnavailable, match="prediction store"):
            await store.mark_joined("r1", prediction())
        await store.close()  # the one write try fails
        assert store.stats.dropped_write_failed == 1

    asyncio.run(scenario())

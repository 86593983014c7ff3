"""The Redis store against the real Redis at 127.0.0.1:6379, under a key prefix per test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import redis
from redis.typing import EncodableT, FieldT

from switchyard.runtimes.errors import InvalidArgument, Unavailable
from switchyard.server.features.config import RedisStoreConfig
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.redis_store import RedisFeatureStore, redacted_url
from tests.features.support import SHARED_REDIS_URL, CountingProxy


def redis_config(url: str = SHARED_REDIS_URL, **settings: Any) -> RedisStoreConfig:
    return RedisStoreConfig.model_validate({"kind": "redis", "url": url, **settings})


def random_rows(
    rng: np.random.Generator, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Users [n, 3] (activity, tenure, premium) and items [n, 3] (popularity, price, emb_0)."""
    users = np.column_stack(
        [
            rng.normal(size=n_users) * 10.0 ** rng.integers(-30, 30, n_users),
            rng.integers(-1000, 1000, n_users),
            rng.integers(0, 2, n_users),
        ]
    ).astype(np.float32)
    items = (rng.normal(size=(n_items, 3)) * 10.0 ** rng.integers(-30, 30, (n_items, 3))).astype(
        np.float32
    )
    return users, items


def write_rows(
    client: redis.Redis, definitions: FeatureDefinitions, name: str, ids: Sequence[str], rows: Any
) -> None:
    """HSET each row with the shortest exact text of its float32 values."""
    entity = definitions.entity(name)
    pipeline = client.pipeline(transaction=False)
    for entity_id, row in zip(ids, rows, strict=True):
        mapping: dict[FieldT, EncodableT] = {
            f.name: str(np.float32(v)) for f, v in zip(entity.fields, row, strict=True)
        }
        pipeline.hset(entity.key(entity_id), mapping=mapping)
    pipeline.execute()


def expected_matrix(user: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The test layout: item.price, user.activity, item.popularity, user.tenure, item.emb_0."""
    n = len(items)
    return np.column_stack(
        [items[:, 1], np.full(n, user[0]), items[:, 0], np.full(n, user[1]), items[:, 2]]
    ).astype(np.float32)


# The ids and rows written: users, their rows, items, their rows.
World = tuple[list[str], np.ndarray, list[str], np.ndarray]


@pytest.fixture
def world(shared_redis: redis.Redis, definitions: FeatureDefinitions) -> World:
    users, items = random_rows(np.random.default_rng(1), 3, 200)
    user_ids = [f"u{i}" for i in range(len(users))]
    item_ids = [f"item-{i}" for i in range(len(items))]
    write_rows(shared_redis, definitions, "user", user_ids, users)
    write_rows(shared_redis, definitions, "item", item_ids, items)
    return user_ids, users, item_ids, items


def test_fetch_returns_the_rows_written_exactly(
    world: World, definitions: FeatureDefinitions
) -> None:
    user_ids, users, item_ids, items = world
    layout = definitions.layout("ranker")

    async def main() -> None:
        store = RedisFeatureStore(redis_config())
        try:
            batch = await store.fetch(layout, {"user": user_ids[2]}, item_ids)
        finally:
            await store.close()
        assert batch.matrix.dtype == np.float32 and batch.matrix.shape == (200, 5)
        assert batch.matrix.tobytes() == expected_matrix(users[2], items).tobytes()
        assert (batch.missing_entities, batch.missing_fields, batch.degraded) == (0, 0, False)
        assert store.stats.fetches == 1 and store.stats.entities_requested == 201

    asyncio.run(main())


def test_missing_entities_and_fields_get_defaults_and_are_counted(
    world: World, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    _, _, item_ids, items = world
    layout = definitions.layout("ranker")
    shared_redis.hset(definitions.entity("item").key("price-only"), "price", "7.25")

    async def main() -> None:
        store = RedisFeatureStore(redis_config())
        try:
            batch = await store.fetch(
                layout, {"user": "nobody"}, [item_ids[0], "absent", "price-only"]
            )
            empty = await store.fetch(layout, {"user": "nobody"}, [])
        finally:
            await store.close()
        # Columns: item.price, user.activity, item.popularity, user.tenure, item.emb_0.
        expected = [
            [items[0, 1], 1.5, items[0, 0], -1.0, items[0, 2]],
            [9.5, 1.5, 0.25, -1.0, 0.0],
            [7.25, 1.5, 0.25, -1.0, 0.0],
        ]
        np.testing.assert_array_equal(batch.matrix, np.array(expected, dtype=np.float32))
        # The user and item "absent" entirely; "price-only" lacks popularity and emb_0.
        assert (batch.missing_entities, batch.missing_fields) == (2, 2)
        assert empty.matrix.shape == (0, 5) and empty.missing_entities == 1
        assert (store.stats.missing_entities, store.stats.missing_fields) == (3, 2)

    asyncio.run(main())


def test_one_round_trip_for_a_user_and_200_items(
    world: World, definitions: FeatureDefinitions
) -> None:
    user_ids, users, item_ids, items = world
    layout = definitions.layout("ranker")

    async def main() -> None:
        async with CountingProxy(6379) as proxy:
            store = RedisFeatureStore(redis_config(proxy.url))
            try:
                await store.fetch(layout, {"user": user_ids[0]}, item_ids[:1])  # connects
                proxy.reset()
                batch = await store.fetch(layout, {"user": user_ids[0]}, item_ids)
            finally:
                await store.close()
            assert proxy.round_trips == 1
            assert proxy.commands == [b"HMGET"] * 201
            assert np.array_equal(batch.matrix, expected_matrix(users[0], items))

            # The same count for a client that waits for each reply: the check can fail.
            proxy.reset()
            client = redis.asyncio.Redis.from_url(proxy.url)
            for item_id in item_ids[:20]:
                await client.hgetall(definitions.entity("item").key(item_id))
            await client.aclose()
            assert proxy.round_trips >= 20

    asyncio.run(main())


def test_bad_values_and_keys_of_another_type_get_defaults(
    world: World, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    user_ids, users, item_ids, items = world
    layout = definitions.layout("ranker")
    item = definitions.entity("item")
    shared_redis.hset(item.key("bad"), mapping={"popularity": "lots", "price": "2", "emb_0": "1"})
    shared_redis.set(item.key("a-string"), "not a hash")

    async def main() -> None:
        store = RedisFeatureStore(redis_config())
        try:
            batch = await store.fetch(layout, {"user": user_ids[0]}, ["bad", "a-string", *item_ids])
            # The error replies were read in turn: the next fetch on the connection is right.
            again = await store.fetch(layout, {"user": user_ids[0]}, item_ids)
        finally:
            await store.close()
        np.testing.assert_array_equal(batch.matrix[0], [2.0, users[0, 0], 0.25, users[0, 1], 1.0])
        np.testing.assert_array_equal(batch.matrix[1], [9.5, users[0, 0], 0.25, users[0, 1], 0.0])
        assert (batch.missing_entities, batch.missing_fields) == (1, 1)
        assert store.stats.invalid_values == 1
        assert np.array_equal(again.matrix, expected_matrix(users[0], items))

    asyncio.run(main())


def test_context_ids_must_match_the_layout(definitions: FeatureDefinitions) -> None:
    layout = definitions.layout("ranker")

    async def main() -> None:
        store = RedisFeatureStore(redis_config())
        try:
            with pytest.raises(InvalidArgument, match=r"one id for each of \['user'\]"):
                await store.fetch(layout, {"account": "1"}, ["i"])
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("on_unavailable", ["fail", "degrade"])
def test_a_redis_that_hangs_costs_timeout_s_then_answers_again(
    world: World, definitions: FeatureDefinitions, on_unavailable: str
) -> None:
    user_ids, users, item_ids, items = world
    layout = definitions.layout("ranker")

    async def main() -> None:
        async with CountingProxy(6379) as proxy:
            settings = {"timeout_s": 0.05, "on_unavailable": on_unavailable}
            store = RedisFeatureStore(redis_config(proxy.url, **settings))
            try:
                await store.fetch(layout, {"user": user_ids[0]}, item_ids)
                proxy.hold()
                started_s = time.monotonic()
                if on_unavailable == "fail":
                    with pytest.raises(Unavailable, match="no answer within 50 ms"):
                        await store.fetch(layout, {"user": user_ids[0]}, item_ids)
                else:
                    batch = await store.fetch(layout, {"user": user_ids[0]}, item_ids)
                    assert batch.degraded and batch.missing_entities == 201
                    np.testing.assert_array_equal(batch.matrix[0], [9.5, 1.5, 0.25, -1.0, 0.0])
                assert time.monotonic() - started_s < 1.0
                proxy.release()
                batch = await store.fetch(layout, {"user": user_ids[0]}, item_ids)
            finally:
                await store.close()
            assert not batch.degraded
            assert np.array_equal(batch.matrix, expected_matrix(users[0], items))
            assert store.stats.store_errors == 1
            assert store.stats.unavailable_errors == (on_unavailable == "fail")
            assert store.stats.degraded_responses == (on_unavailable == "degrade")

    asyncio.run(main())


def test_cache_serves_hot_entities_until_their_ttl(
    world: World, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    user_ids, users, item_ids, items = world
    layout = definitions.layout("ranker")
    now_s = [100.0]
    cache = {"ttl_s": 5, "max_entries": 1000, "entities": ["item"]}

    async def main() -> None:
        async with CountingProxy(6379) as proxy:
            store = RedisFeatureStore(redis_config(proxy.url, cache=cache), clock=lambda: now_s[0])
            try:
                first = await store.fetch(layout, {"user": user_ids[0]}, item_ids[:50])
                write_rows(shared_redis, definitions, "item", item_ids[:50], items[:50] + 1)
                proxy.reset()
                now_s[0] += 4.9
                cached = await store.fetch(layout, {"user": user_ids[0]}, item_ids[:50])
                # Only the user went to Redis: items are the cached entities.
                assert proxy.commands == [b"HMGET"]
                now_s[0] += 0.1
                fresh = await store.fetch(layout, {"user": user_ids[0]}, item_ids[:50])
            finally:
                await store.close()
        assert np.array_equal(first.matrix, expected_matrix(users[0], items[:50]))
        assert np.array_equal(cached.matrix, first.matrix)
        assert np.array_equal(fresh.matrix, expected_matrix(users[0], items[:50] + 1))
        assert (store.stats.cache_hits, store.stats.cache_misses) == (50, 100)

    asyncio.run(main())


def test_cache_remembers_missing_entities_and_their_count(definitions: FeatureDefinitions) -> None:
    layout = definitions.layout("ranker")
    cache = {"ttl_s": 5, "max_entries": 10}

    async def main() -> None:
        store = RedisFeatureStore(redis_config(cache=cache), clock=lambda: 0.0)
        try:
            first = await store.fetch(layout, {"user": "x"}, ["gone"])
            second = await store.fetch(layout, {"user": "x"}, ["gone"])
        finally:
            await store.close()
        assert first.missing_entities == second.missing_entities == 2
        assert store.stats.cache_hits == 2

    asyncio.run(main())


def test_logs_show_no_password() -> None:
    assert redacted_url("redis://user:secret@cache.internal:6380/2") == (
        "redis://cache.internal:6380/2"
    )
    assert redacted_url("redis://[::1]:6379/0") == "redis://[::1]:6379/0"

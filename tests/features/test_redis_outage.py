"""Redis stopped and started again under a running store: a redis-server of the test's own."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import redis

from loadtests.redis_process import RedisServer
from switchyard.runtimes.errors import Unavailable
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.redis_store import RedisFeatureStore
from tests.features.support import CountingProxy
from tests.features.test_redis_store import expected_matrix, random_rows, redis_config, write_rows

RECOVERY_BOUND_S = 2.0


def seed(server: RedisServer, definitions: FeatureDefinitions) -> tuple[np.ndarray, np.ndarray]:
    users, items = random_rows(np.random.default_rng(2), 1, 100)
    client = redis.Redis.from_url(server.url)
    write_rows(client, definitions, "user", ["u0"], users)
    write_rows(client, definitions, "item", [f"i{i}" for i in range(100)], items)
    client.close()
    return users, items


@pytest.mark.parametrize("on_unavailable", ["fail", "degrade"])
def test_stopped_redis_is_answered_as_configured_and_recovered_from(
    own_redis: RedisServer, definitions: FeatureDefinitions, on_unavailable: str
) -> None:
    layout = definitions.layout("ranker")
    item_ids = [f"i{i}" for i in range(100)]
    now_s = [0.0]
    settings = {
        "on_unavailable": on_unavailable,
        "timeout_s": 0.2,
        "breaker": {"after_failures": 2, "open_s": 1.0},
    }

    async def fetch_while_down(store: RedisFeatureStore) -> None:
        if on_unavailable == "fail":
            with pytest.raises(Unavailable, match="online features are unavailable"):
                await store.fetch(layout, {"user": "u0"}, item_ids)
        else:
            batch = await store.fetch(layout, {"user": "u0"}, item_ids)
            assert batch.degraded and batch.missing_entities == 101
            np.testing.assert_array_equal(batch.matrix[:, 1], 1.5)  # user.activity's default

    async def main() -> None:
        users, items = seed(own_redis, definitions)
        store = RedisFeatureStore(redis_config(own_redis.url, **settings), clock=lambda: now_s[0])
        try:
            before = await store.fetch(layout, {"user": "u0"}, item_ids)
            assert np.array_equal(before.matrix, expected_matrix(users[0], items))

            own_redis.stop()
            await fetch_while_down(store)
            await fetch_while_down(store)  # the second failure in a row opens the breaker
            assert store.stats.store_errors == 2
            started_s = time.monotonic()
            await fetch_while_down(store)  # answered without trying Redis
            assert store.stats.short_circuited == 1 and store.stats.store_errors == 2
            assert time.monotonic() - started_s < 0.05

            restarted_s = time.monotonic()
            own_redis.start()
            users, items = seed(own_redis, definitions)  # no persistence: a new data set
            await fetch_while_down(store)  # still within open_s: not tried yet
            now_s[0] += 1.0
            after = await store.fetch(layout, {"user": "u0"}, item_ids)
            assert time.monotonic() - restarted_s < RECOVERY_BOUND_S
        finally:
            await store.close()
        assert not after.degraded
        assert np.array_equal(after.matrix, expected_matrix(users[0], items))

    asyncio.run(main())


def test_without_a_breaker_the_first_fetch_after_a_restart_succeeds(
    own_redis: RedisServer, definitions: FeatureDefinitions
) -> None:
    """The pooled connections Redis closed are replaced without a failed request."""
    layout = definitions.layout("ranker")
    item_ids = [f"i{i}" for i in range(100)]

    async def main() -> None:
        seed(own_redis, definitions)
        store = RedisFeatureStore(redis_config(own_redis.url, breaker={"after_failures": 0}))
        try:
            # Several pooled connections, all of which the restart will close.
            await asyncio.gather(*(store.fetch(layout, {"user": "u0"}, item_ids) for _ in range(4)))
            own_redis.stop()
            own_redis.start()
            users, items = seed(own_redis, definitions)
            batches = await asyncio.gather(
                *(store.fetch(layout, {"user": "u0"}, item_ids) for _ in range(4))
            )
        finally:
            await store.close()
        for batch in batches:
            assert np.array_equal(batch.matrix, expected_matrix(users[0], items))
        assert store.stats.store_errors == 0

    asyncio.run(main())


def test_a_pooled_connection_cut_unnoticed_is_replaced_within_the_fetch(
    own_redis: RedisServer, definitions: FeatureDefinitions
) -> None:
    """A connection the pool still believes in fails on use: the fetch retries it once."""
    layout = definitions.layout("ranker")
    item_ids = [f"i{i}" for i in range(100)]

    async def main() -> None:
        users, items = seed(own_redis, definitions)
        async with CountingProxy(own_redis.port) as proxy:
            store = RedisFeatureStore(redis_config(proxy.url))
            try:
                await store.fetch(layout, {"user": "u0"}, item_ids)
                proxy.cut_connections()  # the event loop has not run: nothing noticed yet
                batch = await store.fetch(layout, {"user": "u0"}, item_ids)
            finally:
                await store.close()
        assert np.array_equal(batch.matrix, expected_matrix(users[0], items))
        assert proxy.connections == 2 and store.stats.store_errors == 0

    asyncio.run(main())

"""Feature fetch latency for one user and N candidate items over loopback Redis.

Writes N items and one user under a fresh key prefix on the Redis at --redis-url, then
times, one fetch at a time on uvloop (as the server runs), each way of building the same
[N, 16] FP32 matrix of the demo ranker:

  store            RedisFeatureStore.fetch: one packed write of N+1 HMGETs, one round trip
  store + cache    the same with the items in its TTL cache (only the user goes to Redis)
  redis-py pipeline  Pipeline of N+1 HMGETs, the same decode: one round trip, more CPU
  naive            one awaited HGETALL per entity, then dicts to a matrix: N+1 round trips
  memory store     MemoryFeatureStore.fetch: the in-process floor

Every way is checked to build the same matrix before it is timed. Prints p50/p90/p99.

Run: `.venv/bin/python -m loadtests.bench_feature_fetch [--items 100] [--requests 2000]`
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable, Mapping

import numpy as np
import redis
import redis.asyncio
import uvloop
import yaml
from redis.typing import EncodableT, FieldT

from loadtests.latency import percentiles_us, time_async_calls
from switchyard.demo.paths import DEMO_CONFIG_PATH as DEMO_FEATURES_PATH
from switchyard.server.features.config import FeaturesConfig, RedisStoreConfig
from switchyard.server.features.definitions import (
    EntityColumns,
    EntityTable,
    FeatureDefinitions,
    RowLayout,
    assemble_rows,
)
from switchyard.server.features.memory_store import MemoryFeatureStore
from switchyard.server.features.redis_store import RedisFeatureStore, decode_hmget_replies
from switchyard.server.features.store import FeatureStore


def demo_definitions(prefix: str) -> FeatureDefinitions:
    raw = yaml.safe_load(DEMO_FEATURES_PATH.read_text())["features"]
    for entity in raw["entities"].values():
        entity["key"] = prefix + entity["key"]
    return FeatureDefinitions.from_config(FeaturesConfig.model_validate(raw))


async def main(args: argparse.Namespace) -> None:
    prefix = f"switchyard-bench:{uuid.uuid4().hex[:8]}:"
    definitions = demo_definitions(prefix)
    layout: RowLayout = definitions.layout("ranker")
    user, item = definitions.entity("user"), definitions.entity("item")
    rng = np.random.default_rng(0)
    users = rng.normal(size=(1, 8)).astype(np.float32)
    items = rng.normal(size=(args.items, 8)).astype(np.float32)
    item_ids = [f"i{i}" for i in range(args.items)]

    sync_client = redis.Redis.from_url(args.redis_url)
    pipeline = sync_client.pipeline(transaction=False)
    for spec, ids, rows in ((user, ["u0"], users), (item, item_ids, items)):
        for entity_id, row in zip(ids, rows, strict=True):
            mapping: dict[FieldT, EncodableT] = {
                f.name: str(v) for f, v in zip(spec.fields, row, strict=True)
            }
            pipeline.hset(spec.key(entity_id), mapping=mapping)
    pipeline.execute()

    expected = np.hstack([np.repeat(users, args.items, axis=0), items])
    store_config = {"kind": "redis", "url": args.redis_url, "timeout_s": 1.0}
    store = RedisFeatureStore(RedisStoreConfig.model_validate(store_config))
    cached = RedisFeatureStore(
        RedisStoreConfig.model_validate(
            {**store_config, "cache": {"ttl_s": 3600, "entities": ["item"]}}
        )
    )
    memory = MemoryFeatureStore(
        {
            "user": EntityTable.from_arrays(user, ["u0"], users),
            "item": EntityTable.from_arrays(item, item_ids, items),
        }
    )
    client = redis.asyncio.Redis.from_url(args.redis_url)
    user_part, item_part = layout.context[0], layout.candidates

    async def redis_py_pipeline() -> np.ndarray:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(user.key("u0"), user_part.field_names)
        for item_id in item_ids:
            pipe.hmget(item.key(item_id), item_part.field_names)
        replies = await pipe.execute()
        user_values = decode_hmget_replies(replies[:1], user_part)[0]
        item_values = decode_hmget_replies(replies[1:], item_part)[0]
        return assemble_rows(layout, {"user": user_values, "item": item_values}, len(item_ids))

    def row_of(found: Mapping[bytes | str, bytes | str], part: EntityColumns) -> list[float]:
        names, defaults = part.field_names, part.defaults
        return [float(found.get(n.encode(), d)) for n, d in zip(names, defaults, strict=True)]

    async def naive() -> np.ndarray:
        matrix = np.empty((len(item_ids), layout.n_features), np.float32)
        user_row = row_of(await client.hgetall(user.key("u0")), user_part)
        for row, item_id in enumerate(item_ids):
            matrix[row] = user_row + row_of(await client.hgetall(item.key(item_id)), item_part)
        return matrix

    async def fetch_matrix(feature_store: FeatureStore) -> np.ndarray:
        return (await feature_store.fetch(layout, {"user": "u0"}, item_ids)).matrix

    cases: dict[str, Callable[[], Awaitable[np.ndarray]]] = {
        "store (one round trip)": lambda: fetch_matrix(store),
        "store + item cache": lambda: fetch_matrix(cached),
        "redis-py Pipeline, HMGET": redis_py_pipeline,
        "naive HGETALL per entity": naive,
        "memory store": lambda: fetch_matrix(memory),
    }
    try:
        for name, call in cases.items():
            assert np.array_equal(await call(), expected), f"{name} built another matrix"
        print(f"1 user + {args.items} items, {args.requests} sequential fetches, loopback Redis")
        print(f"{'':28}{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}")
        for name, call in cases.items():
            stats = percentiles_us(await time_async_calls(call, args.requests, args.warmup))
            print(f"{name:28}{stats['p50']:10.0f}{stats['p90']:10.0f}{stats['p99']:10.0f}")
    finally:
        for feature_store in (store, cached, memory):
            await feature_store.close()
        await client.aclose()
        keys = list(sync_client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            sync_client.delete(*keys)
        sync_client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    uvloop.run(main(parser.parse_args()))

"""Builds the configured online store once at start, and says in the log which it is."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from switchyard.server.features.config import FeastStoreConfig, FeaturesConfig, RedisStoreConfig
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.feast_store import FeastFeatureStore
from switchyard.server.features.memory_store import MemoryFeatureStore
from switchyard.server.features.redis_store import RedisFeatureStore
from switchyard.server.features.store import FeatureStore

log = logging.getLogger(__name__)


def create_store(
    config: FeaturesConfig,
    definitions: FeatureDefinitions,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> FeatureStore:
    """The store of config.store. A memory store reads its seed files here (raising
    FeatureFileError naming row and column); a Redis store connects on first use."""
    store: FeatureStore
    if isinstance(config.store, RedisStoreConfig | FeastStoreConfig):
        settings = config.store
        if isinstance(settings, FeastStoreConfig):
            store = FeastFeatureStore(settings, clock=clock)
        else:
            store = RedisFeatureStore(settings, clock=clock)
        cache = (
            f"cache {settings.cache.ttl_s:g} s x {settings.cache.max_entries}"
            if settings.cache
            else "no cache"
        )
        log.info(
            "online features: %s (timeout %g ms, pool %d, on_unavailable=%s, %s)",
            store.description,
            settings.timeout_s * 1e3,
            settings.pool_size,
            settings.on_unavailable,
            cache,
        )
    else:
        store = MemoryFeatureStore.from_files(definitions, config.store.seed_files)
        sources = ", ".join(str(path) for path in config.store.seed_files.values())
        log.info(
            "online features: %s, seeded from %s (no Redis configured)",
            store.description,
            sources or "nothing",
        )
    return store

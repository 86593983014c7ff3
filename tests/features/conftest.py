from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from loadtests.redis_process import RedisServer
from switchyard.server.features.config import FeaturesConfig
from switchyard.server.features.definitions import FeatureDefinitions
from tests.features.support import SHARED_REDIS_URL, features_section


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[redis.Redis]:
    """The Redis at 127.0.0.1:6379 (never stopped: tests that stop one start their own)."""
    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        # The test command starts one; a missing Redis is a broken set-up, not a skip.
        pytest.fail(f"no Redis at {SHARED_REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def prefix(shared_redis: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    value = f"switchyard-test:{uuid.uuid4().hex[:12]}:"
    yield value
    keys = list(shared_redis.scan_iter(match=value + "*", count=1000))
    if keys:
        shared_redis.delete(*keys)


@pytest.fixture
def definitions(prefix: str) -> FeatureDefinitions:
    return FeatureDefinitions.from_config(FeaturesConfig.model_validate(features_section(prefix)))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()

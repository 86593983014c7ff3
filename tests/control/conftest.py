from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.features.support import SHARED_REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=2)
    value = f"switchyard-test:{uuid.uuid4().hex[:12]}:"
    yield value
    keys = list(client.scan_iter(match=value + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()

"""The control store over rediss:// (a TLS-only redis-server of the test's own), configured
through the config file: CA and password from files, relative to the config's folder."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.certificates import TestCA
from loadtests.redis_process import RedisServer, RedisTls
from switchyard.server.config import ConfigError, parse_config
from switchyard.server.control.factory import create_control_store
from switchyard.server.control.state import EndpointRecord
from switchyard.server.control.store import ControlStoreError
from tests.control.test_stores import entry, record

PASSWORD = "control-secret-51d2"
MODEL = {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "certs")


@pytest.fixture
def tls_redis(tmp_path: Path, ca: TestCA) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, tls=RedisTls(ca.issue("redis"), ca.ca_file), password=PASSWORD)
    server.start()
    yield server
    server.stop()


def control_section(url: str, ca_file: str) -> dict[str, object]:
    return {
        "store": "redis",
        "url": url,
        "prefix": "tls-test:",
        "timeout_s": 1.0,
        "password": {"from_env": "TEST_CONTROL_PASSWORD"},
        "tls": {"ca_file": ca_file},
    }


def test_commits_go_over_tls_with_the_password_from_the_environment(
    tls_redis: RedisServer, tmp_path: Path
) -> None:
    raw = {
        "models": [MODEL],
        "control": control_section(tls_redis.url, "certs/switchyard-test-CA.pem"),
    }
    config = parse_config(raw, tmp_path, "test", env={"TEST_CONTROL_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(config.control)

    async def scenario() -> None:
        store = create_control_store(config.control)
        try:
            assert await store.commit("recs", 0, record({"a": 1.0}), entry("one")) == 1
            snapshot = await store.snapshot()
            assert snapshot.endpoints["recs"].revision == 1
        finally:
            await store.close()
        assert PASSWORD not in store.description

    asyncio.run(scenario())


def test_a_wrong_ca_is_a_control_store_error_not_a_crash(
    tls_redis: RedisServer, tmp_path: Path
) -> None:
    other = TestCA(tmp_path / "other", "other CA")
    raw = {"models": [MODEL], "control": control_section(tls_redis.url, str(other.ca_file))}
    config = parse_config(raw, tmp_path, "test", env={"TEST_CONTROL_PASSWORD": PASSWORD})

    async def scenario() -> None:
        store = create_control_store(config.control)
        try:
            with pytest.raises(ControlStoreError) as caught:
                await store.commit("recs", 0, EndpointRecord("fp"), entry("x"))
            assert PASSWORD not in str(caught.value)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_an_unset_password_variable_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    raw = {"models": [MODEL], "control": control_section("rediss://127.0.0.1:1/0", "ca.pem")}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path, "test", env={})
    assert caught.value.errors == (
        "control.password: from_env: the environment variable TEST_CONTROL_PASSWORD is not set",
    )

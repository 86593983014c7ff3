"""The feature store over rediss:// to a TLS-only redis-server of the test's own, with a
password read from a file; a CA that does not match is a store that is down, not a crash."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import redis

from loadtests.certificates import TestCA
from loadtests.redis_process import RedisServer, RedisTls
from switchyard.runtimes.errors import Unavailable
from switchyard.server.features.config import FeatureConfigError, RedisStoreConfig, parse_features
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.loader import load_file
from switchyard.server.features.redis_store import RedisFeatureStore
from tests.features.support import features_section
from tests.features.test_redis_store import expected_matrix, random_rows, write_rows

PASSWORD = "redis-secret-7f3a9c"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "certs")


@pytest.fixture(params=[False, True], ids=["server-tls", "mutual-tls"])
def tls_redis(request: pytest.FixtureRequest, tmp_path: Path, ca: TestCA) -> Iterator[RedisServer]:
    tls = RedisTls(ca.issue("redis-server"), ca.ca_file, auth_clients=request.param)
    server = RedisServer(tmp_path, tls=tls, password=PASSWORD)
    server.start()
    yield server
    server.stop()


def store_settings(url: str, tls: Mapping[str, object], **settings: object) -> dict[str, object]:
    return {
        "kind": "redis",
        "url": url,
        "password": {"from_file": "redis-password"},
        "tls": tls,
        "timeout_s": 1.0,
        **settings,
    }


def test_features_are_read_over_tls_with_a_password_from_a_file(
    tls_redis: RedisServer,
    ca: TestCA,
    tmp_path: Path,
    definitions: FeatureDefinitions,
    prefix: str,
) -> None:
    (tmp_path / "redis-password").write_text(PASSWORD + "\n")  # as `echo` writes it
    client_cert = ca.issue("gateway")
    seed = redis.Redis.from_url(
        tls_redis.url,
        password=PASSWORD,
        ssl_ca_certs=str(ca.ca_file),
        ssl_certfile=str(client_cert.cert_file),
        ssl_keyfile=str(client_cert.key_file),
    )
    users, items = random_rows(np.random.default_rng(3), 1, 20)
    write_rows(seed, definitions, "user", ["u0"], users)
    write_rows(seed, definitions, "item", [f"i{i}" for i in range(20)], items)
    seed.close()
    # Relative certificate paths resolve against the config's folder, as every path does.
    tls = {
        "ca_file": "certs/switchyard-test-CA.pem",
        "cert_file": "certs/gateway.crt",
        "key_file": "certs/gateway.key",
    }
    config = parse_features(
        features_section(prefix, **store_settings(tls_redis.url, tls)),
        tmp_path,
        "test",
    )
    assert "redis-secret" not in repr(config) and "redis-secret" not in str(config.model_dump())

    async def main() -> None:
        store = RedisFeatureStore(config.store)  # type: ignore[arg-type]
        try:
            batch = await store.fetch(
                definitions.layout("ranker"), {"user": "u0"}, [f"i{i}" for i in range(20)]
            )
        finally:
            await store.close()
        np.testing.assert_array_equal(batch.matrix, expected_matrix(users[0], items))
        assert not batch.degraded and "redis-secret" not in store.description

    asyncio.run(main())


def test_a_server_certificate_of_another_ca_is_a_store_down_logged_once(
    tls_redis: RedisServer,
    tmp_path: Path,
    definitions: FeatureDefinitions,
    caplog: pytest.LogCaptureFixture,
    prefix: str,
) -> None:
    (tmp_path / "redis-password").write_text(PASSWORD)
    other = TestCA(tmp_path / "other", "other CA")
    client_cert = other.issue("gateway")
    tls = {
        "ca_file": str(other.ca_file),
        "cert_file": str(client_cert.cert_file),
        "key_file": str(client_cert.key_file),
    }
    settings = store_settings(tls_redis.url, tls, breaker={"after_failures": 2, "open_s": 60})
    config = parse_features(features_section(prefix, **settings), tmp_path, "test")

    async def main() -> None:
        store = RedisFeatureStore(config.store)  # type: ignore[arg-type]
        try:
            for _ in range(4):
                with pytest.raises(Unavailable, match="online features are unavailable"):
                    await store.fetch(definitions.layout("ranker"), {"user": "u0"}, ["i0"])
        finally:
            await store.close()
        assert store.stats.store_errors == 2 and store.stats.short_circuited == 2

    with caplog.at_level(logging.WARNING, logger="switchyard.server.features.redis_store"):
        asyncio.run(main())
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "CERTIFICATE_VERIFY_FAILED" in failures[0], failures
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"url": "redis://127.0.0.1:6379/0", "tls": {"ca_file": "ca.pem"}},
            "features.store: tls is set, but the url is not rediss:// (TLS would not be used)",
        ),
        (
            {"url": "rediss://127.0.0.1:6379/0", "tls": {"cert_file": "c.pem"}},
            "features.store.tls: cert_file and key_file go together (the client certificate)",
        ),
        (
            {"url": "rediss://127.0.0.1:6379/0", "password": {"from_file": "nope"}},
            "features.store.password: from_file: cannot read {base}/nope: No such file or "
            "directory",
        ),
        (
            {"url": "rediss://127.0.0.1:6379/0", "password": {"from_env": "SWITCHYARD_NO_SUCH"}},
            "features.store.password: from_env: the environment variable SWITCHYARD_NO_SUCH is "
            "not set",
        ),
    ],
)
def test_bad_tls_and_password_settings_are_config_errors_at_their_key(
    tmp_path: Path, prefix: str, settings: dict[str, object], expected: str
) -> None:
    with pytest.raises(FeatureConfigError) as caught:
        parse_features(features_section(prefix, kind="redis", **settings), tmp_path, "test")
    assert caught.value.errors == (expected.format(base=tmp_path),)


def test_the_loader_writes_over_tls_with_the_stores_password(
    tls_redis: RedisServer, ca: TestCA, tmp_path: Path, prefix: str
) -> None:
    (tmp_path / "redis-password").write_text(PASSWORD)
    rows = tmp_path / "users.csv"
    rows.write_text("user_id,activity,tenure,premium\nu7,2.5,12,1\n")
    client = ca.issue("loader")
    tls = {"ca_file": str(ca.ca_file), "cert_file": str(client.cert_file),
           "key_file": str(client.key_file)}  # fmt: skip
    config = parse_features(
        features_section(prefix, **store_settings(tls_redis.url, tls)), tmp_path, "test"
    )
    assert isinstance(config.store, RedisStoreConfig)
    url, options = config.store.connection()
    entity = FeatureDefinitions.from_config(config).entity("user")
    assert load_file(rows, entity, url, progress=None, connection_options=options) == 1
    check = redis.Redis.from_url(url, **options)
    assert check.hget(prefix + "user:u7", "tenure") == b"12"
    check.close()

"""kind: feast config: the registry read with our protos, references checked against it, and
the store reading Feast's layout from a real Redis (values written here in Feast's encoding;
test_feast_e2e does the same with Feast itself)."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from switchyard.protos import feast_core_pb2, feast_types_pb2
from switchyard.runtimes.errors import InvalidArgument, Unavailable
from switchyard.server.features.config import FeatureConfigError, parse_features
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.feast_encoding import (
    ValueType,
    entity_key_prefix,
    field_name,
    key_value,
    timestamp_field,
)
from switchyard.server.features.feast_store import FeastFeatureStore
from tests.features.support import SHARED_REDIS_URL

T = feast_types_pb2.ValueType


def write_registry(path: Path, project: str, *, ttl_s: int = 3600) -> Path:
    registry = feast_core_pb2.Registry()
    for name, join_key in (("user", "user_id"), ("item", "item_id")):
        entity = registry.entities.add()
        entity.spec.name, entity.spec.join_key, entity.spec.project = name, join_key, project
        entity.spec.value_type = T.STRING
    for view_name, entity_name, features in (
        ("user_stats", "user", [("activity", T.FLOAT), ("visits", T.INT64), ("vip", T.BOOL)]),
        ("item_stats", "item", [("price", T.DOUBLE), ("title", T.STRING)]),
    ):
        view = registry.feature_views.add()
        view.spec.name, view.spec.project = view_name, project
        view.spec.entities.append(entity_name)
        view.spec.ttl.seconds = ttl_s
        for feature_name, value_type in features:
            feature = view.spec.features.add()
            feature.name, feature.value_type = feature_name, value_type
    path.write_bytes(registry.SerializeToString())
    return path


def features_raw(registry: Path, project: str, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "store": {
            "kind": "feast",
            "project": project,
            "registry": str(registry),
            "url": SHARED_REDIS_URL,
            "on_unavailable": "fail",
        },
        "inputs": {
            "ranker": {
                "candidates": "item",
                "row": [
                    "user_stats.activity",
                    "user_stats:visits",
                    "user_stats.vip",
                    "item_stats.price",
                ],
            }
        },
        "defaults": {"user_stats.activity": 2.5, "item_stats.price": -1.0},
    }
    raw.update(extra)
    return raw


@pytest.fixture
def project() -> str:
    return f"sy_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def registry(tmp_path: Path, project: str) -> Path:
    return write_registry(tmp_path / "registry.db", project)


def errors_of(raw: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(FeatureConfigError) as info:
        parse_features(raw, tmp_path, "test.yaml")
    return "\n".join(info.value.errors)


def test_layout_comes_from_the_registry(registry: Path, project: str, tmp_path: Path) -> None:
    config = parse_features(features_raw(registry, project), tmp_path, "test.yaml")
    layout = FeatureDefinitions.from_config(config).layout("ranker")
    assert layout.feature_names == (
        "user_stats.activity",
        "user_stats.visits",
        "user_stats.vip",
        "item_stats.price",
    )
    assert [p.entity.name for p in layout.parts] == ["user", "item"]
    assert layout.context[0].defaults.tolist() == [2.5, 0.0, 0.0]
    assert layout.candidates.defaults.tolist() == [-1.0]


def test_references_are_checked_against_the_registry(
    registry: Path, project: str, tmp_path: Path
) -> None:
    raw = features_raw(registry, project)
    raw["inputs"]["ranker"]["row"][1] = "user_stats.actvity"
    raw["inputs"]["ranker"]["row"][2] = "item_stats.title"
    raw["inputs"]["ranker"]["candidates"] = "shop"
    raw["defaults"] = {"nope.x": 1.0}
    text = errors_of(raw, tmp_path)
    assert (
        "features.inputs.ranker.row.1: feature 'user_stats.actvity' not in the Feast registry "
        "(views: item_stats, user_stats)" in text
    )
    assert "features.inputs.ranker.row.2: feature 'item_stats.title' is not a number" in text
    assert "features.inputs.ranker.candidates: 'shop' is neither an entity" in text
    assert "features.defaults.nope.x: feature 'nope.x' not in the Feast registry" in text


def test_registry_and_repo_errors_say_what_to_do(
    registry: Path, project: str, tmp_path: Path
) -> None:
    raw = features_raw(tmp_path / "absent.db", project)
    assert "cannot read the Feast registry" in errors_of(raw, tmp_path)
    assert "run `feast apply`" in errors_of(raw, tmp_path)
    raw = features_raw(registry, "other_project")
    assert "has nothing for project 'other_project'" in errors_of(raw, tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: p\nregistry: {registry_type: sql, path: 'postgresql://x'}\n"
    )
    raw = features_raw(registry, project)
    raw["store"] = {"kind": "feast", "repo_path": str(repo)}
    assert "Switchyard reads only Feast's file registry" in errors_of(raw, tmp_path)
    raw = features_raw(
        registry,
        project,
        entities={"user": {"key": "u:{id}", "id_column": "u", "fields": [{"name": "a"}]}},
    )
    assert "features.entities: not used with store kind feast" in errors_of(raw, tmp_path)


def test_repo_path_gives_project_registry_and_url(
    registry: Path, project: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    write_registry(repo / "data" / "registry.db", project)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\nregistry: data/registry.db\nonline_store:\n  type: redis\n"
        "  connection_string: 'localhost:6390,db=4,password=s3cret'\n"
    )
    raw = features_raw(registry, project)
    raw["store"] = {"kind": "feast", "repo_path": "repo"}  # relative to the config's folder
    config = parse_features(raw, tmp_path, "test.yaml")
    assert config.store.url == "redis://:s3cret@localhost:6390/4"  # type: ignore[union-attr]
    assert config.store.feast_registry.project == project  # type: ignore[union-attr]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(SHARED_REDIS_URL)
    yield connection
    connection.close()


def feast_key(join_key: str, entity_id: str, project: str) -> bytes:
    return entity_key_prefix(join_key) + key_value(ValueType.STRING, entity_id) + project.encode()


def value(**kind: Any) -> bytes:
    return feast_types_pb2.Value(**kind).SerializeToString()


def timestamp(seconds: float) -> bytes:
    return struct.pack("<B", 0x08) + _varint(int(seconds))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_store_reads_feasts_layout_with_defaults_and_ttl(
    registry: Path, project: str, tmp_path: Path, client: redis.Redis
) -> None:
    now = time.time()
    fresh, stale = timestamp(now - 60), timestamp(now - 7200)  # the views' ttl is 1 h
    client.hset(
        feast_key("user_id", "u1", project),
        mapping={
            field_name("user_stats", "activity"): value(float_val=1.5),
            field_name("user_stats", "visits"): value(int64_val=-3),
            field_name("user_stats", "vip"): value(bool_val=True),
            timestamp_field("user_stats"): fresh,
        },
    )
    client.hset(
        feast_key("user_id", "old", project),
        mapping={
            field_name("user_stats", "activity"): value(float_val=9.0),
            timestamp_field("user_stats"): stale,
        },
    )
    for item, price in (("i1", 4.25), ("i2", 8.5)):
        client.hset(
            feast_key("item_id", item, project),
            mapping={
                field_name("item_stats", "price"): value(double_val=price),
                timestamp_field("item_stats"): fresh,
            },
        )
    try:
        config = parse_features(features_raw(registry, project), tmp_path, "test.yaml")
        layout = FeatureDefinitions.from_config(config).layout("ranker")
        store = FeastFeatureStore(config.store)  # type: ignore[arg-type]

        async def scenario() -> None:
            batch = await store.fetch(layout, {"user": "u1"}, ["i1", "nope", "i2"])
            expected = [[1.5, -3, 1, 4.25], [1.5, -3, 1, -1.0], [1.5, -3, 1, 8.5]]
            np.testing.assert_array_equal(batch.matrix, np.array(expected, np.float32))
            assert (batch.missing_entities, batch.missing_fields) == (1, 0)
            # Stale: every user field is its default, the user counts as missing.
            batch = await store.fetch(layout, {"user": "old"}, ["i1"])
            np.testing.assert_array_equal(batch.matrix, np.array([[2.5, 0, 0, 4.25]], np.float32))
            assert batch.missing_entities == 1
            assert store.stats.stale_values == 1  # only activity was present
            await store.close()

        asyncio.run(scenario())
    finally:
        keys = list(client.scan_iter(match=f"*{project}", count=1000))
        if keys:
            client.delete(*keys)


def test_unreachable_redis_fails_or_degrades(registry: Path, project: str, tmp_path: Path) -> None:
    raw = features_raw(registry, project)
    raw["store"]["url"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    config = parse_features(raw, tmp_path, "test.yaml")
    layout = FeatureDefinitions.from_config(config).layout("ranker")
    store = FeastFeatureStore(config.store)  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="online features are unavailable"):
        asyncio.run(store.fetch(layout, {"user": "u1"}, ["i1"]))
    raw["store"]["on_unavailable"] = "degrade"
    config = parse_features(raw, tmp_path, "test.yaml")
    store = FeastFeatureStore(config.store)  # type: ignore[arg-type]
    batch = asyncio.run(store.fetch(layout, {"user": "u1"}, ["i1"]))
    assert batch.degraded
    np.testing.assert_array_equal(batch.matrix, np.array([[2.5, 0, 0, -1.0]], np.float32))


def test_ids_of_the_wrong_type_are_invalid_arguments(tmp_path: Path, project: str) -> None:
    registry = feast_core_pb2.Registry()
    entity = registry.entities.add()
    entity.spec.name, entity.spec.join_key, entity.spec.project = "user", "user_id", project
    entity.spec.value_type = T.INT64
    view = registry.feature_views.add()
    view.spec.name, view.spec.project = "u", project
    view.spec.entities.append("user")
    feature = view.spec.features.add()
    feature.name, feature.value_type = "a", T.FLOAT
    path = tmp_path / "registry.db"
    path.write_bytes(registry.SerializeToString())
    raw = {
        "store": {
            "kind": "feast",
            "project": project,
            "registry": str(path),
            "url": SHARED_REDIS_URL,
        },
        "inputs": {"m": {"candidates": "user", "row": ["u.a"]}},
    }
    config = parse_features(raw, tmp_path, "test.yaml")
    layout = FeatureDefinitions.from_config(config).layout("m")
    store = FeastFeatureStore(config.store)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="is not a valid INT64 join key"):
        asyncio.run(store.fetch(layout, {}, ["12", "abc"]))

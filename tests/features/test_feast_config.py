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
    entity_key_encoder,
    field_name,
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
        view.spec.online = True  # as Feast writes it for every view unless online=False
        for feature_name, value_type in features:
            feature = view.spec.features.add()
            feature.name, feature.value_type = feature_name, value_type
    path.write_bytes(registry.SerializeToString())
    return path


def write_one_view_registry(
    path: Path,
    project: str,
    entity: tuple[str, str, T.Enum],
    view_name: str,
    features: dict[str, T.Enum],
    *,
    ttl_s: int = 0,
) -> Path:
    """A registry of one entity (name, join key, value type) and one online view on it."""
    registry = feast_core_pb2.Registry()
    spec = registry.entities.add().spec
    spec.name, spec.join_key, spec.value_type = entity
    spec.project = project
    view = registry.feature_views.add()
    view.spec.name, view.spec.project, view.spec.online = view_name, project, True
    view.spec.entities.append(entity[0])
    view.spec.ttl.seconds = ttl_s
    for name, value_type in features.items():
        feature = view.spec.features.add()
        feature.name, feature.value_type = name, value_type
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
        "features.inputs.ranker.row.1: feature 'user_stats.actvity' not in the Feast "
        "registry's feature views (views: item_stats, user_stats; stream and on-demand feature "
        "views are not read)" in text
    )
    assert "features.inputs.ranker.row.2: feature 'item_stats.title' is not a number" in text
    assert "features.inputs.ranker.candidates: 'shop' is neither an entity" in text
    assert "features.defaults.nope.x: feature 'nope.x' not in the Feast registry" in text


def test_a_view_feast_does_not_materialize_is_refused(project: str, tmp_path: Path) -> None:
    path = write_registry(tmp_path / "registry.db", project)
    registry = feast_core_pb2.Registry.FromString(path.read_bytes())
    registry.feature_views[0].spec.online = False  # user_stats
    path.write_bytes(registry.SerializeToString())
    text = errors_of(features_raw(path, project), tmp_path)
    assert (
        "features.inputs.ranker.row.0: feature view 'user_stats' has online=False: Feast does "
        "not materialize it" in text
    )


def test_the_join_key_type_is_the_views_entity_column_type(project: str, tmp_path: Path) -> None:
    """Feast materializes keys of the entity column's type; an Entity declared without a
    value_type (Feast's own template) leaves it out of the Entity."""
    path = write_registry(tmp_path / "registry.db", project)
    registry = feast_core_pb2.Registry.FromString(path.read_bytes())
    registry.entities[0].spec.value_type = T.INVALID  # user, declared without a type
    column = registry.feature_views[0].spec.entity_columns.add()
    column.name, column.value_type = "user_id", T.INT64
    path.write_bytes(registry.SerializeToString())
    config = parse_features(features_raw(path, project), tmp_path, "test.yaml")
    assert config.store.feast_registry.entities["user"].value_type == T.INT64  # type: ignore[union-attr]
    # Two views on one entity whose columns disagree: Feast would write keys of both types.
    other = registry.feature_views.add()
    other.CopyFrom(registry.feature_views[0])
    other.spec.name = "user_more"
    other.spec.entity_columns[0].value_type = T.STRING
    path.write_bytes(registry.SerializeToString())
    text = errors_of(features_raw(path, project), tmp_path)
    assert "the feature views on entity 'user' disagree on the type of its join key" in text
    assert "INT64 in user_stats; STRING in user_more" in text


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


def write_repo(repo: Path, project: str, online_store: str) -> Path:
    (repo / "data").mkdir(parents=True, exist_ok=True)
    write_registry(repo / "data" / "registry.db", project)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\nregistry: data/registry.db\n{online_store}"
    )
    return repo


def test_repo_settings_switchyard_cannot_follow_are_errors(
    registry: Path, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def store_errors(online_store: str, **store: Any) -> str:
        repo = write_repo(tmp_path / "repo", project, online_store)
        raw = features_raw(registry, project)
        raw["store"] = {"kind": "feast", "repo_path": str(repo), **store}
        return errors_of(raw, tmp_path)

    # Feast's default online store is SQLite: no silent fall back on a local Redis.
    assert "the repo's online store is 'sqlite', not redis" in store_errors("")
    assert "not redis" in store_errors("online_store: {type: sqlite, path: data/o.db}\n")
    cluster = "online_store: {type: redis, redis_type: redis_cluster, connection_string: 'a:1'}\n"
    assert "redis_type 'redis_cluster' is not supported" in store_errors(cluster)
    version = "entity_key_serialization_version: '3'\n"
    assert "entity_key_serialization_version must be a number, got '3'" in store_errors(version)
    both = store_errors("online_store: {type: redis}\n", project=project)
    assert "give repo_path, or project and registry, not both" in both
    # An explicit url reads a repo whose online store the file does not describe as Redis.
    repo = write_repo(tmp_path / "repo2", project, "")
    raw = features_raw(registry, project)
    raw["store"] = {"kind": "feast", "repo_path": str(repo), "url": SHARED_REDIS_URL}
    parse_features(raw, tmp_path, "test.yaml")
    # ${VARIABLES} are expanded, as Feast does; username and password both reach the URL.
    monkeypatch.setenv("SY_TEST_REDIS_HOST", "redis.internal")
    repo = write_repo(
        tmp_path / "repo3",
        project,
        "online_store:\n  type: redis\n"
        "  connection_string: '${SY_TEST_REDIS_HOST}:6379,username=app,password=p@ss,ssl=true'\n",
    )
    raw["store"] = {"kind": "feast", "repo_path": str(repo)}
    config = parse_features(raw, tmp_path, "test.yaml")
    assert config.store.url == "rediss://app:p%40ss@redis.internal:6379/0"  # type: ignore[union-attr]


@pytest.fixture
def client(project: str) -> Iterator[redis.Redis]:
    """The test Redis; the project's keys are deleted after the test."""
    connection = redis.Redis.from_url(SHARED_REDIS_URL)
    yield connection
    keys = list(connection.scan_iter(match=f"*{project}", count=1000))
    if keys:
        connection.delete(*keys)
    connection.close()


def feast_key(join_key: str, entity_id: str, project: str) -> bytes:
    return entity_key_encoder(join_key, ValueType.STRING, project)(entity_id)


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


def test_one_fetch_of_float_features_with_stale_null_absent_and_wrongtype_entities(
    project: str, tmp_path: Path, client: redis.Redis
) -> None:
    """The all-FLOAT fast path gives way, row by row, to every case that needs it."""
    path = write_one_view_registry(
        tmp_path / "registry.db",
        project,
        ("item", "item_id", T.STRING),
        "item_stats",
        {"a": T.FLOAT, "b": T.FLOAT},
        ttl_s=3600,
    )
    now = time.time()

    def put(item: str, a: bytes | None, b: bytes | None, ts: bytes | None) -> None:
        cells = {field_name("item_stats", "a"): a, field_name("item_stats", "b"): b}
        cells[timestamp_field("item_stats")] = ts
        client.hset(
            feast_key("item_id", item, project),
            mapping={k: v for k, v in cells.items() if v is not None},
        )

    put("fresh", value(float_val=1.0), value(float_val=2.0), timestamp(now - 60))
    put("stale", value(float_val=3.0), value(float_val=4.0), timestamp(now - 7200))
    put("null_b", value(float_val=5.0), value(), timestamp(now - 60))  # Feast's null value
    put("no_ts", value(float_val=7.0), value(float_val=8.0), None)  # never stale
    client.set(feast_key("item_id", "wrongtype", project), b"not a hash")
    raw = {
        "store": {"kind": "feast", "project": project, "registry": str(path)},
        "inputs": {"m": {"candidates": "item", "row": ["item_stats.a", "item_stats.b"]}},
        "defaults": {"item_stats.a": -1.0, "item_stats.b": -2.0},
    }
    raw["store"]["url"] = SHARED_REDIS_URL  # type: ignore[index]
    config = parse_features(raw, tmp_path, "test.yaml")
    layout = FeatureDefinitions.from_config(config).layout("m")
    store = FeastFeatureStore(config.store)  # type: ignore[arg-type]
    ids = ["fresh", "stale", "null_b", "absent", "no_ts", "wrongtype"]

    async def scenario() -> None:
        batch = await store.fetch(layout, {}, ids)
        expected = [[1, 2], [-1, -2], [5, -2], [-1, -2], [7, 8], [-1, -2]]
        np.testing.assert_array_equal(batch.matrix, np.array(expected, np.float32))
        # stale, absent and wrongtype are missing entities; null_b a missing field.
        assert (batch.missing_entities, batch.missing_fields) == (3, 1)
        assert store.stats.stale_values == 2
        # Every entity fresh: the one-pass path, the same answer.
        batch = await store.fetch(layout, {}, ["fresh", "no_ts"])
        np.testing.assert_array_equal(batch.matrix, np.array([[1, 2], [7, 8]], np.float32))
        assert (batch.missing_entities, batch.missing_fields) == (0, 0)
        await store.close()

    asyncio.run(scenario())


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
    path = write_one_view_registry(
        tmp_path / "registry.db", project, ("user", "user_id", T.INT64), "u", {"a": T.FLOAT}
    )
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

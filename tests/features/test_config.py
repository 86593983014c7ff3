"""The `features:` section: defaults, path resolution, and errors that name their key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.demo.paths import DEMO_CONFIG_PATH as DEMO_FEATURES_PATH
from switchyard.demo.paths import artifacts_dir
from switchyard.server.features.config import (
    FeatureConfigError,
    FeaturesConfig,
    MemoryStoreConfig,
    RedisStoreConfig,
    load_features_section,
    parse_features,
)
from tests.features.support import features_section


def with_changes(**changes: Any) -> dict[str, Any]:
    section = features_section("t:")
    for path, value in changes.items():
        node: Any = section  # nested mappings and lists of the raw section
        keys = [int(k) if k.isdigit() else k for k in path.split("__")]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return section


def test_defaults_serve_anywhere() -> None:
    config = FeaturesConfig()
    assert isinstance(config.store, MemoryStoreConfig) and config.store.seed_files == {}
    redis = parse_features({"store": {"kind": "redis"}}, Path("."), "x").store
    assert isinstance(redis, RedisStoreConfig)
    assert (redis.url, redis.timeout_s, redis.pool_size, redis.on_unavailable) == (
        "redis://127.0.0.1:6379/0",
        0.05,
        16,
        "fail",
    )
    assert redis.cache is None and redis.breaker.after_failures == 3


def test_seed_files_resolve_against_the_config_folder(tmp_path: Path) -> None:
    raw = with_changes(store={"kind": "memory", "seed_files": {"user": "data/u.csv"}})
    config = parse_features(raw, tmp_path, "x.yaml")
    assert isinstance(config.store, MemoryStoreConfig)
    assert config.store.seed_files == {"user": tmp_path / "data/u.csv"}
    assert raw["store"]["seed_files"]["user"] == "data/u.csv"  # the caller's dict is untouched


def test_demo_features_are_valid_and_form_the_16_column_ranker_row() -> None:
    config = load_features_section(DEMO_FEATURES_PATH)
    assert config is not None
    assert config.inputs["ranker"].tensor == "features"
    assert len(config.inputs["ranker"].row) == 16
    assert isinstance(config.store, MemoryStoreConfig)
    assert config.store.seed_files["user"] == artifacts_dir() / "users.csv"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (with_changes(inputs__ranker__row__3="user.actvity"),
         "features.inputs.ranker.row.3: unknown field 'user.actvity'"),
        (with_changes(inputs__ranker__row__1="activity"),
         "features.inputs.ranker.row.1: 'activity' is not of the form entity.field"),
        (with_changes(inputs__ranker__row__4="item.price"),
         "features.inputs.ranker.row.4: 'item.price' appears twice in the row"),
        (with_changes(inputs__ranker__candidates="items"),
         "features.inputs.ranker.candidates: unknown entity 'items'"),
        (with_changes(inputs__ranker__colour=1), "features.inputs.ranker.colour: Extra inputs"),
        (with_changes(entities__user__key="user"),
         "features.entities.user.key: 'user' must contain {id} exactly once"),
        (with_changes(entities__item__key="t:user:{id}"),
         "features.entities: two entities share a key template"),
        (with_changes(entities__user__fields__1__dtype="float64"),
         "features.entities.user.fields.1.dtype: Input should be 'float32', 'int32' or 'bool'"),
        (with_changes(entities__user__fields__0__name="bad name"),
         "features.entities.user.fields.0.name: String should match pattern"),
        (with_changes(entities__user__fields=[{"name": "a"}, {"name": "a"}]),
         "features.entities.user: field names repeat"),
        (with_changes(entities__user__fields=[]), "features.entities.user.fields: List should"),
        (with_changes(entities__user__id_column="activity"),
         "features.entities.user: id_column 'activity' is also a field name"),
        (with_changes(store={"kind": "redis", "timeout_s": 0}),
         "features.store.timeout_s: Input should be greater than 0"),
        (with_changes(store={"kind": "redis", "timeout_ms": 50}),
         "features.store.timeout_ms: renamed to timeout_s (seconds)"),
        (with_changes(store={"kind": "redis", "breaker": {"open_ms": 1000}}),
         "features.store.breaker.open_ms: renamed to open_s (seconds)"),
        (with_changes(store={"kind": "redis", "on_unavailable": "ignore"}),
         "features.store.on_unavailable: Input should be 'fail' or 'degrade'"),
        (with_changes(store={"kind": "redis", "url": "http://x"}),
         "features.store.url: String should match pattern"),
        (with_changes(store={"kind": "redis", "cache": {"ttl_s": 1, "entities": ["usr"]}}),
         "features.store.cache.entities.0: unknown entity 'usr'"),
        (with_changes(store={"kind": "memory", "seed_files": {"usr": "u.csv"}}),
         "features.store.seed_files.usr: unknown entity"),
        (with_changes(store={"kind": "sql"}), "features.store: Input tag 'sql' found using"),
    ],
)  # fmt: skip
def test_errors_name_the_offending_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(FeatureConfigError) as caught:
        parse_features(raw, Path("."), "switchyard.yaml")
    assert message in str(caught.value)


def test_every_error_is_reported_at_once() -> None:
    raw = with_changes(inputs__ranker__row__0="user.x", inputs__ranker__row__2="item.y")
    with pytest.raises(FeatureConfigError) as caught:
        parse_features(raw, Path("."), "c.yaml")
    assert "row.0: unknown field 'user.x'" in str(caught.value)
    assert "row.2: unknown field 'item.y'" in str(caught.value)


def test_a_config_file_without_features_has_none(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": []}))
    assert load_features_section(path) is None
    path.write_text("features: [unclosed")
    with pytest.raises(FeatureConfigError, match="not valid YAML"):
        load_features_section(path)

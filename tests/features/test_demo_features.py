"""The demo end to end: its feature files, its training rows and its served rows agree."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from switchyard.demo.build_model import (
    build,
    feature_definitions,
    generate_data,
    training_matrix,
)
from switchyard.server.config import DEFAULT_CONFIG_PATH as DEMO_FEATURES_PATH
from switchyard.server.features.config import FeaturesConfig, parse_features
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.factory import create_store
from switchyard.server.features.files import read_table
from switchyard.server.features.memory_store import MemoryFeatureStore


def test_training_rows_are_the_user_then_the_item_features() -> None:
    data = generate_data(np.random.default_rng(5), n_users=50, n_items=40, n_pairs=300)
    expected = np.hstack(
        [data.user_features[data.pairs[:, 0]], data.item_features[data.pairs[:, 1]]]
    )
    assert training_matrix(data).tobytes() == expected.astype(np.float32).tobytes()


def test_the_served_rows_are_the_trained_rows(tmp_path: Path) -> None:
    build(tmp_path, seed=7)
    data = generate_data(np.random.default_rng(7))
    definitions = feature_definitions()
    users = read_table(tmp_path / "users.csv", definitions.entity("user"))
    assert users.values[:-1].tobytes() == data.user_features.tobytes()  # the CSV is exact
    store = MemoryFeatureStore.from_files(
        definitions, {"user": tmp_path / "users.csv", "item": tmp_path / "items.csv"}
    )
    examples = data.pairs[data.pairs[:, 0] == 3][:20]  # user u3's labelled pairs
    item_ids = [f"i{i}" for i in examples[:, 1]]
    batch = asyncio.run(store.fetch(definitions.layout("ranker"), {"user": "u3"}, item_ids))
    expected = np.hstack([data.user_features[examples[:, 0]], data.item_features[examples[:, 1]]])
    assert batch.matrix.tobytes() == expected.tobytes()
    assert (batch.missing_entities, batch.missing_fields, batch.degraded) == (0, 0, False)


def test_the_log_says_which_store_is_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = yaml.safe_load(DEMO_FEATURES_PATH.read_text())["features"]
    (tmp_path / "users.csv").write_text("user_id,activity\nu1,1.0\nu2,2.0\n")
    seeded = {"kind": "memory", "seed_files": {"user": "users.csv"}}
    memory = parse_features({**raw, "store": seeded}, tmp_path, "test")
    definitions = FeatureDefinitions.from_config(memory)
    redis = FeaturesConfig.model_validate(
        {**raw, "store": {"kind": "redis", "url": "redis://me:secret@127.0.0.1:6379/0"}}
    )
    with caplog.at_level(logging.INFO, logger="switchyard.server.features.factory"):
        create_store(memory, definitions)
        asyncio.run(create_store(redis, definitions).close())
    assert "in-memory store (user: 2 rows), seeded from " in caplog.text
    assert "no Redis configured" in caplog.text
    assert "online features: Redis at redis://127.0.0.1:6379/0 (timeout 50 ms" in caplog.text
    assert "secret" not in caplog.text

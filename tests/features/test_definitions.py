"""Row layouts, canonical texts, and training rows that equal serving rows."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from switchyard.runtimes.errors import NotFound
from switchyard.server.features.config import FeaturesConfig
from switchyard.server.features.definitions import (
    EntityColumns,
    EntityTable,
    FeatureDefinitions,
    FieldSpec,
    assemble_rows,
    texts_to_values,
    training_matrix,
)
from switchyard.server.features.memory_store import MemoryFeatureStore
from switchyard.server.features.redis_store import RedisFeatureStore, decode_hmget_replies
from switchyard.server.features.store import FeatureStore
from tests.features.test_redis_store import random_rows, redis_config, write_rows


def test_layout_follows_the_configured_row(definitions: FeatureDefinitions) -> None:
    layout = definitions.layout("ranker")
    assert layout.tensor == "features" and layout.n_features == 5
    assert [part.entity.name for part in layout.context] == ["user"]
    assert layout.candidates.field_names == ("price", "popularity", "emb_0")
    assert layout.candidates.columns.tolist() == [0, 2, 4]
    assert layout.context[0].field_names == ("activity", "tenure")
    assert layout.context[0].defaults.tolist() == [1.5, -1.0]
    with pytest.raises(NotFound, match="model 'other' has no feature inputs"):
        definitions.layout("other")


def test_assemble_broadcasts_the_context_entity(definitions: FeatureDefinitions) -> None:
    layout = definitions.layout("ranker")
    items = np.arange(9, dtype=np.float32).reshape(3, 3)
    matrix = assemble_rows(layout, {"user": np.array([[7, 8]], np.float32), "item": items}, 3)
    np.testing.assert_array_equal(matrix, [[0, 7, 1, 8, 2], [3, 7, 4, 8, 5], [6, 7, 7, 8, 8]])


def test_training_rows_equal_the_rows_served_online(
    definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    users, items = random_rows(np.random.default_rng(3), 4, 30)
    user_ids = [f"u{i}" for i in range(4)]
    item_ids = [f"i{i}" for i in range(30)]
    tables = {
        "user": EntityTable.from_arrays(definitions.entity("user"), user_ids, users),
        "item": EntityTable.from_arrays(definitions.entity("item"), item_ids[:25], items[:25]),
    }
    write_rows(shared_redis, definitions, "user", user_ids, users)
    write_rows(shared_redis, definitions, "item", item_ids[:25], items[:25])
    layout = definitions.layout("ranker")
    # Labelled examples: every user with every item, some of which no store has.
    pairs = [(u, i) for u in [*user_ids, "ghost"] for i in item_ids]
    offline = training_matrix(
        layout, tables, {"user": [u for u, _ in pairs], "item": [i for _, i in pairs]}
    )

    async def serve(store: FeatureStore) -> np.ndarray:
        try:
            batches = [
                await store.fetch(layout, {"user": u}, item_ids) for u in [*user_ids, "ghost"]
            ]
        finally:
            await store.close()
        return np.vstack([batch.matrix for batch in batches])

    assert offline.tobytes() == asyncio.run(serve(MemoryFeatureStore(tables))).tobytes()
    assert offline.tobytes() == asyncio.run(serve(RedisFeatureStore(redis_config()))).tobytes()
    np.testing.assert_array_equal(offline[-1], [9.5, 1.5, 0.25, -1.0, 0.0])  # ghost, i29


def test_table_lookup_counts_missing_fields_and_entities(definitions: FeatureDefinitions) -> None:
    user = definitions.entity("user")
    present = np.array([[True, True, True], [True, False, True], [False, False, True]])
    table = EntityTable(
        user, ("a", "b", "c"), np.array([[1, 2, 1], [3, -1, 0], [1.5, -1, 1]], np.float32), present
    )
    part = definitions.layout("ranker").context[0]  # activity, tenure
    values, missing = table.lookup(["a", "b", "c", "zz"], part)
    np.testing.assert_array_equal(values, [[1, 2], [3, -1], [1.5, -1], [1.5, -1]])
    # "c" has neither activity nor tenure: like an HMGET of all nils, a missing entity.
    assert missing.tolist() == [0, 1, 2, 2]


float32_values = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(float32_values)
def test_float32_texts_read_back_exactly_on_both_paths(value: float) -> None:
    spec = FieldSpec("x", "float32", 0.0)
    exact = np.float32(value)
    for cell in (str(exact), exact, float(exact)):  # a CSV cell, Parquet float32 and float64
        text = spec.to_text(cell)
        assert text is not None
        offline = texts_to_values([text])[0]
        online = decode_hmget_replies([[text.encode()]], _single_column())[0][0, 0]
        assert offline.tobytes() == online.tobytes() == exact.tobytes()


@pytest.mark.parametrize(
    ("dtype", "cell", "text"),
    [
        ("float32", " 2.50 ", "2.50"),
        ("float32", "", None),
        ("float32", None, None),
        ("float32", 3, "3.0"),
        ("float32", "\u0661", "1.0"),  # float() reads other digits; Redis gets ASCII
        ("int32", "-12", "-12"),
        ("int32", 12.0, "12"),
        ("bool", "True", "1"),
        ("bool", "no", "0"),
        ("bool", False, "0"),
    ],
)
def test_cells_become_canonical_text(dtype: str, cell: object, text: str | None) -> None:
    assert FieldSpec("x", dtype, 0.0).to_text(cell) == text


@pytest.mark.parametrize(
    ("dtype", "cell"),
    [("float32", "nan"), ("float32", "1e40"), ("int32", "2147483648"), ("int32", True),
     ("int32", 1.5), ("bool", "2")],
)  # fmt: skip
def test_bad_cells_are_refused(dtype: str, cell: object) -> None:
    with pytest.raises(ValueError):
        FieldSpec("x", dtype, 0.0).to_text(cell)


@functools.cache
def _single_column() -> EntityColumns:
    """A layout of one float32 field, x, for decoding single values."""
    raw = {
        "entities": {"e": {"key": "e:{id}", "id_column": "id", "fields": [{"name": "x"}]}},
        "inputs": {"m": {"candidates": "e", "row": ["e.x"]}},
    }
    definitions = FeatureDefinitions.from_config(FeaturesConfig.model_validate(raw))
    return definitions.layout("m").candidates

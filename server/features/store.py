"""The online feature store interface, shared by the Redis and the in-memory stores.

A Recommend request calls, for one user and its candidate items:

    layout = definitions.layout("ranker")
    batch = await store.fetch(layout, {"user": user_id}, item_ids)
    inputs = {layout.tensor: batch.matrix}  # [len(item_ids), n_features] FP32
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.features.definitions import RowLayout, assemble_rows


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    matrix: np.ndarray  # [n_candidates, n_features] float32, in the layout's column order
    missing_entities: int  # entities served entirely from defaults (absent, or store down)
    missing_fields: int  # single fields served from defaults, of entities otherwise found
    degraded: bool  # the store was unavailable and on_unavailable is degrade


@dataclass(slots=True)
class FeatureStats:
    """Running counters for metrics (a collector can export them as Prometheus counters)."""

    fetches: int = 0
    entities_requested: int = 0
    missing_entities: int = 0
    missing_fields: int = 0
    invalid_values: int = 0  # stored text that did not parse as a number (default served)
    stale_values: int = 0  # kind: feast: values past their view's ttl (default served)
    cache_hits: int = 0
    cache_misses: int = 0
    store_errors: int = 0  # fetches whose store round trip failed (timeout, connection)
    short_circuited: int = 0  # fetches that skipped the store while the breaker was open
    degraded_responses: int = 0
    unavailable_errors: int = 0  # fetches that raised Unavailable


class FeatureStore(Protocol):
    description: str  # for logs: which store, where
    stats: FeatureStats

    async def fetch(
        self, layout: RowLayout, context_ids: Mapping[str, str], candidate_ids: Sequence[str]
    ) -> FeatureBatch:
        """The model input rows for candidate_ids, each joined with the context entities
        (context_ids: entity name -> id, one per context entity of the layout).

        Raises InvalidArgument for wrong context ids and Unavailable when the store cannot
        answer and on_unavailable is fail.
        """
        ...

    async def close(self) -> None: ...


def ids_per_part(
    layout: RowLayout, context_ids: Mapping[str, str], candidate_ids: Sequence[str]
) -> list[Sequence[str]]:
    """The ids to look up for each of layout.parts, checking the context ids."""
    names = [part.entity.name for part in layout.context]
    if set(context_ids) != set(names):
        raise InvalidArgument(
            f"features of model '{layout.model}' need one id for each of {names}, "
            f"got {client_text(sorted(context_ids))}"
        )
    return [*([context_ids[name]] for name in names), candidate_ids]


def finish_batch(
    layout: RowLayout,
    values: Sequence[np.ndarray],
    missing_per_row: Sequence[np.ndarray],
    n_candidates: int,
    degraded: bool,
    stats: FeatureStats,
) -> FeatureBatch:
    """Assemble the matrix from each part's values and count what was filled by defaults.

    missing_per_row[i][r]: fields of part i missing for its row r; the part's width means
    the whole entity is missing.
    """
    missing_entities = missing_fields = 0
    for part, missing in zip(layout.parts, missing_per_row, strict=True):
        if part.width == 0:
            continue  # an entity that only sets the row count (no fields in the row)
        whole = missing == part.width
        missing_entities += int(whole.sum())
        missing_fields += int(missing[~whole].sum())
    stats.fetches += 1
    stats.entities_requested += sum(len(m) for m in missing_per_row)
    stats.missing_entities += missing_entities
    stats.missing_fields += missing_fields
    stats.degraded_responses += degraded
    by_entity = {part.entity.name: v for part, v in zip(layout.parts, values, strict=True)}
    matrix = assemble_rows(layout, by_entity, n_candidates)
    return FeatureBatch(matrix, missing_entities, missing_fields, degraded)

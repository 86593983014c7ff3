"""Features that Feast materialized into Redis, read in Feast's layout by the Redis store's
machinery: one packed round trip, the pool, breaker, cache, timeout and fail/degrade.

Each entity is one HMGET of its Feast key (feast_encoding) for the hashed fields of every
layout feature from the views on that entity, plus each such view's `_ts:<view>` field:
where Feast's own reader sends one HMGET per feature view and entity, this sends one per
entity, so a user and 100 items are 101 commands in one write.

Freshness: a view with a ttl whose event timestamp is older than now - ttl has its values
served as defaults and counted as missing (and as stale_values): the ttl as the
FeatureView proto documents it, and as feast 0.67 applies it to precomputed vectors
(OUTSIDE_MAX_AGE in feast/infra/online_stores/online_store.py); its plain
get_online_features path returns such values as present (docs/architecture.md, "Feast
features"). A missing `_ts` field is never stale, as there. A cached entity is judged
when it was fetched, so with a cache it may be served up to cache.ttl_s past its ttl.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from struct import error as struct_error
from typing import Any

import numpy as np

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.features.config import FeastStoreConfig
from switchyard.server.features.definitions import EntityColumns
from switchyard.server.features.feast_encoding import (
    JOIN_KEY_TYPES,
    ValueType,
    decode_float_values,
    decode_timestamp_s,
    decode_value,
    entity_key_encoder,
    field_name,
    timestamp_field,
    whole_seconds,
)
from switchyard.server.features.feast_registry import FeastRegistry
from switchyard.server.features.redis_store import (
    HmgetCommand,
    Packer,
    RedisFeatureStore,
    decode_cells_one_by_one,
    redacted_url,
)
from switchyard.server.features.store import FeatureStats


@dataclass(frozen=True, eq=False)
class _FeastColumns:
    """How one part's HMGET reply is laid out: its k feature values, then one timestamp per
    view; view_of[c] is column c's view (an index into ttl_s)."""

    view_of: np.ndarray  # [k] intp
    ttl_s: np.ndarray  # [n_views] float64, 0 = no ttl
    all_float: bool  # every feature is FLOAT: the vectorised decode applies


class _FeastPacker:
    """RESP of `HMGET <feast key> <hashed fields...> <_ts:view...>` for one part."""

    def __init__(self, part: EntityColumns, registry: FeastRegistry) -> None:
        entity = registry.entities[part.entity.name]
        views: list[str] = []
        fields = []
        view_of = []
        types = []
        for ref in part.field_names:
            view, _, feature = ref.partition(".")
            if view not in views:
                views.append(view)
            view_of.append(views.index(view))
            fields.append(field_name(view, feature))
            found = registry.feature(view, feature)
            types.append(found.value_type if found else ValueType.INVALID)
        fields += [timestamp_field(view) for view in views]
        self.columns = _FeastColumns(
            np.array(view_of, np.intp),
            np.array([registry.views[view].ttl_s for view in views], np.float64),
            all(value_type == ValueType.FLOAT for value_type in types),
        )
        self._entity = entity
        self._hmget = HmgetCommand(fields)
        self._key = entity_key_encoder(entity.join_key, entity.value_type, registry.project)

    def command(self, entity_id: str) -> bytes:
        try:
            key = self._key(entity_id)
        except (ValueError, struct_error):
            raise InvalidArgument(
                f"id {client_text(entity_id)} of entity '{self._entity.name}' is not a valid "
                f"{JOIN_KEY_TYPES.get(self._entity.value_type, '?')} join key"
            ) from None
        return self._hmget(key)


class FeastFeatureStore(RedisFeatureStore):
    def __init__(
        self,
        config: FeastStoreConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        stats: FeatureStats | None = None,
    ) -> None:
        super().__init__(config, clock=clock, stats=stats)
        self._registry = config.feast_registry
        self._wall_clock = wall_clock
        self.description = (
            f"Feast project '{self._registry.project}' in Redis at {redacted_url(config.url)}"
        )
        self._columns: dict[EntityColumns, _FeastColumns] = {}

    def _new_packer(self, part: EntityColumns) -> Packer:
        packer = _FeastPacker(part, self._registry)
        self._columns[part] = packer.columns
        return packer

    def _decode(
        self, replies: Sequence[Any], part: EntityColumns
    ) -> tuple[np.ndarray, np.ndarray, int]:
        columns = self._columns[part]
        values, present, invalid = _decode_values(replies, part, columns)
        stale = self._stale_columns(replies, part, columns)
        if stale is not None:
            expired = stale & present  # absent cells are missing already
            if expired.any():
                self.stats.stale_values += int(expired.sum())
                present &= ~stale
                values = np.where(expired, part.defaults, values).astype(np.float32)
        return values, part.width - present.sum(axis=1), invalid

    def _stale_columns(
        self, replies: Sequence[Any], part: EntityColumns, columns: _FeastColumns
    ) -> np.ndarray | None:
        """[m, k] True where the cell's view is past its ttl; None when no view has one."""
        if not (columns.ttl_s > 0).any():
            return None
        width = part.width
        now_s = self._wall_clock()
        expired = np.zeros((len(replies), len(columns.ttl_s)), bool)
        for view, ttl_s in enumerate(columns.ttl_s):
            if ttl_s <= 0:
                continue
            cutoff_s = now_s - ttl_s
            cells = [reply[width + view] if isinstance(reply, list) else None for reply in replies]
            seconds = whole_seconds(cells)
            expired[:, view] = seconds + 1 <= cutoff_s  # stale whatever its nanos
            # Absent, unusual, or within the cutoff's second: decoded one by one.
            for row in np.flatnonzero(np.isnan(seconds) | (seconds < cutoff_s) & ~expired[:, view]):
                try:
                    event_s = decode_timestamp_s(cells[row])
                except (ValueError, IndexError):
                    event_s = None  # judged by its values alone
                expired[row, view] = event_s is not None and event_s < cutoff_s
        return expired[:, columns.view_of]


def _decode_values(
    replies: Sequence[Any], part: EntityColumns, columns: _FeastColumns
) -> tuple[np.ndarray, np.ndarray, int]:
    """Values [m, k] float32 (defaults where absent), which cells were present [m, k], and
    the count of values that are not numbers (served as defaults)."""
    width = part.width
    if columns.all_float:
        # A None reply (or an error one) raises TypeError: decoded one by one below.
        cells = chain.from_iterable(reply[:width] for reply in replies)
        flat = decode_float_values(cells, len(replies) * width)
        if flat is not None:
            return flat.reshape(len(replies), width), np.ones((len(replies), width), bool), 0
    return decode_cells_one_by_one(replies, part, decode_value)

"""The embedded store: feature files read into this process at start, served from numpy.

The default when no Redis is configured, so that `switchyard serve` runs anywhere. It
serves exactly what the Redis store would after `switchyard features load` of the same
files: the same defaults, the same missing counts. It is never unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from switchyard.server.features.definitions import (
    EntityTable,
    FeatureDefinitions,
    RowLayout,
    empty_table,
)
from switchyard.server.features.files import read_table
from switchyard.server.features.store import FeatureBatch, FeatureStats, finish_batch, ids_per_part


class MemoryFeatureStore:
    def __init__(
        self, tables: Mapping[str, EntityTable], *, stats: FeatureStats | None = None
    ) -> None:
        self._tables = dict(tables)
        self.stats = stats if stats is not None else FeatureStats()
        seeded = ", ".join(f"{name}: {len(table)} rows" for name, table in self._tables.items())
        self.description = f"in-memory store ({seeded or 'empty'})"

    @classmethod
    def from_files(
        cls,
        definitions: FeatureDefinitions,
        seed_files: Mapping[str, Path],
        *,
        stats: FeatureStats | None = None,
    ) -> MemoryFeatureStore:
        """Read each entity's seed file (raises FeatureFileError naming row and column)."""
        tables = {
            entity: read_table(path, definitions.entity(entity))
            for entity, path in seed_files.items()
        }
        return cls(tables, stats=stats)

    async def fetch(
        self, layout: RowLayout, context_ids: Mapping[str, str], candidate_ids: Sequence[str]
    ) -> FeatureBatch:
        ids = ids_per_part(layout, context_ids, candidate_ids)
        values, missing = [], []
        for part, part_ids in zip(layout.parts, ids, strict=True):
            table = self._tables.get(part.entity.name)
            table = empty_table(part.entity) if table is None else table
            part_values, part_missing = table.lookup(part_ids, part)
            values.append(part_values)
            missing.append(part_missing)
        return finish_batch(layout, values, missing, len(candidate_ids), False, self.stats)

    async def close(self) -> None:
        pass

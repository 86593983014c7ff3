"""Compiled feature definitions, and the one way entity values become model input rows.

`assemble_rows` is used online (one context entity, say a user, broadcast over n
candidates) and offline (`training_matrix`, one row per labelled example), and values
reach it the same way on both paths: a cell's canonical text (`FieldSpec.to_text`, what
the loader writes to Redis) parsed by float() and rounded to float32. So training and
serving cannot transform features differently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import SupportsFloat, SupportsIndex

import numpy as np

from switchyard.runtimes.errors import NotFound
from switchyard.server.features.config import ID_PLACEHOLDER, FeastStoreConfig, FeaturesConfig
from switchyard.server.features.feast_encoding import NUMERIC_TYPES, ValueType
from switchyard.server.features.feast_registry import FeastRegistry, split_reference

_TRUE_TEXTS = frozenset({"1", "true", "yes"})
_FALSE_TEXTS = frozenset({"0", "false", "no"})
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# The least magnitude that rounds to infinity in float32 (float32 max + half its ulp).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    dtype: str  # float32 | int32 | bool: how file cells are checked; FP32 in every row
    default: float

    def to_text(self, raw: object) -> str | None:
        """The canonical text of a file cell (what Redis holds); None for an empty cell.

        Raises ValueError saying what was expected. Text cells of float32 fields are kept
        as written, so Redis holds the file's own digits and both paths parse the same text.
        """
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if self.dtype == "bool":
            text = str(raw).strip().lower()
            if raw is True or text in _TRUE_TEXTS:
                return "1"
            if raw is False or text in _FALSE_TEXTS:
                return "0"
            raise ValueError(f"{raw!r} is not a bool (true/false/1/0)")
        if self.dtype == "int32":
            try:
                value = int(raw.strip()) if isinstance(raw, str) else _exact_int(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{raw!r} is not an integer") from None
            if not _INT32_MIN <= value <= _INT32_MAX:
                raise ValueError(f"{raw!r} is out of the int32 range")
            return str(value)
        try:
            number = _float(raw)  # str, int, float or numpy scalar
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(number) or abs(number) >= _FLOAT32_OVERFLOW:
            raise ValueError(f"{raw!r} is not a finite float32")
        # ASCII text is kept; anything else (numbers, exotic digits) is written as Python's repr.
        text = raw.strip() if isinstance(raw, str) else ""
        return text if text.isascii() and text else repr(number)


def _float(raw: object) -> float:
    """float() of a cell; TypeError for what float() refuses by type (the concrete types
    first: checking the protocols costs more)."""
    if isinstance(raw, str | int | float | bytes | bytearray | SupportsFloat | SupportsIndex):
        return float(raw)
    raise TypeError(f"{type(raw).__name__} is not a number")


def _exact_int(raw: object) -> int:
    """An int from a cell that is not text: ints, and floats without a fraction (no bools)."""
    if isinstance(raw, bool):
        raise TypeError
    if isinstance(raw, int):
        return raw
    value = _float(raw)
    if not value.is_integer():
        raise ValueError
    return int(value)


def texts_to_values(texts: Sequence[str]) -> np.ndarray:
    """Canonical texts to float32: float() then rounding, exactly as the Redis decoder does."""
    return np.fromiter(map(float, texts), np.float32, len(texts))


@dataclass(frozen=True, eq=False)
class EntitySpec:
    name: str
    key_template: str  # the Redis key, `{id}` replaced by the entity id
    id_column: str  # the column of feature files holding the id
    fields: tuple[FieldSpec, ...]
    field_index: Mapping[str, int] = field(init=False)
    defaults: np.ndarray = field(init=False)  # [n_fields] float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_index", {f.name: i for i, f in enumerate(self.fields)})
        defaults = np.array([f.default for f in self.fields], dtype=np.float32)
        object.__setattr__(self, "defaults", defaults)

    def key(self, entity_id: str) -> str:
        return self.key_template.replace(ID_PLACEHOLDER, entity_id)


@dataclass(frozen=True, eq=False)
class EntityColumns:
    """One entity's part of a model row: which of its fields, at which row columns."""

    entity: EntitySpec
    field_names: tuple[str, ...]  # in row order
    field_indexes: np.ndarray  # [k] positions in entity.fields
    columns: np.ndarray  # [k] positions in the model row
    defaults: np.ndarray  # [k] float32

    @property
    def width(self) -> int:
        return len(self.field_names)


@dataclass(frozen=True, eq=False)
class RowLayout:
    """How a model's input rows are formed: [n_candidates, n_features] FP32."""

    model: str
    tensor: str
    feature_names: tuple[str, ...]  # `entity.field`, one per column
    context: tuple[EntityColumns, ...]  # one id per request, broadcast over the rows
    candidates: EntityColumns  # one id per row

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def parts(self) -> tuple[EntityColumns, ...]:
        return (*self.context, self.candidates)


def assemble_rows(layout: RowLayout, values: Mapping[str, np.ndarray], n_rows: int) -> np.ndarray:
    """The model input matrix [n_rows, n_features] float32.

    values[entity]: that entity's fields in the layout's order (EntityColumns.field_names),
    [n_rows, k] or [1, k] (broadcast to every row, as a request's user is).
    """
    matrix = np.empty((n_rows, layout.n_features), dtype=np.float32)
    for part in layout.parts:
        matrix[:, part.columns] = values[part.entity.name]
    return matrix


@dataclass(frozen=True, eq=False)
class EntityTable:
    """Feature values of many entities (a feature file): the offline side, the memory store."""

    entity: EntitySpec
    ids: tuple[str, ...]
    values: np.ndarray  # [n, n_fields] float32, the field's default where absent
    present: np.ndarray  # [n, n_fields] bool
    _row_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_fields = len(self.entity.fields)
        if self.values.shape != (len(self.ids), n_fields) or self.present.shape != (
            self.values.shape
        ):
            raise ValueError(f"table of '{self.entity.name}' has inconsistent shapes")
        # Later rows win, as a later HSET of the same key does.
        object.__setattr__(self, "_row_of", {entity_id: i for i, entity_id in enumerate(self.ids)})
        # A last row of defaults, never present, that unknown ids map to.
        object.__setattr__(self, "values", np.vstack([self.values, self.entity.defaults]))
        object.__setattr__(self, "present", np.vstack([self.present, np.zeros(n_fields, bool)]))

    @classmethod
    def from_arrays(cls, entity: EntitySpec, ids: Sequence[str], values: np.ndarray) -> EntityTable:
        """A table with every field present (values [n, n_fields] in declared field order)."""
        values = np.asarray(values, dtype=np.float32)
        return cls(entity, tuple(ids), values, np.ones(values.shape, dtype=bool))

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: Sequence[str], part: EntityColumns) -> tuple[np.ndarray, np.ndarray]:
        """Values [len(ids), k] of part's fields, defaults where missing, and each row's
        count of missing fields (k: the entity counts as missing, as in Redis)."""
        unknown = len(self.ids)
        rows = np.fromiter((self._row_of.get(i, unknown) for i in ids), np.intp, len(ids))
        present = self.present[np.ix_(rows, part.field_indexes)]
        values = self.values[np.ix_(rows, part.field_indexes)]
        missing_fields = part.width - present.sum(axis=1)
        return values, missing_fields


def training_matrix(
    layout: RowLayout, tables: Mapping[str, EntityTable], ids: Mapping[str, Sequence[str]]
) -> np.ndarray:
    """Model input rows for labelled examples, built exactly as serving builds them.

    Row i joins, for each entity of the layout, the entity with id ids[entity][i] from
    tables[entity]; missing entities and fields get their defaults, as online.
    """
    n_rows = len(ids[layout.candidates.entity.name])
    values = {}
    for part in layout.parts:
        name = part.entity.name
        if len(ids[name]) != n_rows:
            raise ValueError(f"{len(ids[name])} ids of '{name}' for {n_rows} rows")
        table = tables.get(name)
        table = empty_table(part.entity) if table is None else table
        values[name] = table.lookup(ids[name], part)[0]
    return assemble_rows(layout, values, n_rows)


def empty_table(entity: EntitySpec) -> EntityTable:
    shape = (0, len(entity.fields))
    return EntityTable(entity, (), np.empty(shape, np.float32), np.empty(shape, bool))


@dataclass(frozen=True)
class FeatureDefinitions:
    entities: Mapping[str, EntitySpec]
    layouts: Mapping[str, RowLayout]  # by model name

    @classmethod
    def from_config(cls, config: FeaturesConfig) -> FeatureDefinitions:
        if isinstance(config.store, FeastStoreConfig):
            return _feast_definitions(config, config.store.feast_registry)
        entities = {
            name: EntitySpec(
                name,
                spec.key,
                spec.id_column,
                tuple(FieldSpec(f.name, f.dtype, f.default) for f in spec.fields),
            )
            for name, spec in config.entities.items()
        }
        layouts = {
            model: _compile_layout(model, spec.tensor, spec.candidates, spec.row, entities)
            for model, spec in config.inputs.items()
        }
        return cls(entities, layouts)

    def entity(self, name: str) -> EntitySpec:
        try:
            return self.entities[name]
        except KeyError:
            raise NotFound(f"unknown entity '{name}'; defined: {sorted(self.entities)}") from None

    def layout(self, model: str) -> RowLayout:
        try:
            return self.layouts[model]
        except KeyError:
            raise NotFound(f"model '{model}' has no feature inputs configured") from None


def _compile_layout(
    model: str,
    tensor: str,
    candidates: str,
    row: Sequence[str],
    entities: Mapping[str, EntitySpec],
) -> RowLayout:
    # Entity order: the candidates last, the others as they first appear in the row.
    columns_of: dict[str, list[tuple[int, str]]] = {candidates: []}
    for column, ref in enumerate(row):
        entity, _, name = ref.partition(".")
        columns_of.setdefault(entity, []).append((column, name))
    parts = {}
    for entity_name, refs in columns_of.items():
        spec = entities[entity_name]
        names = tuple(name for _, name in refs)
        indexes = np.array([spec.field_index[name] for name in names], dtype=np.intp)
        parts[entity_name] = EntityColumns(
            spec,
            names,
            indexes,
            np.array([column for column, _ in refs], dtype=np.intp),
            spec.defaults[indexes],
        )
    context = tuple(part for name, part in parts.items() if name != candidates)
    return RowLayout(model, tensor, tuple(row), context, parts[candidates])


_FEAST_DTYPES: dict[int, str] = {ValueType.BOOL: "bool", ValueType.INT32: "int32"}


def _feast_definitions(config: FeaturesConfig, registry: FeastRegistry) -> FeatureDefinitions:
    """Entities and layouts from a Feast registry: one EntitySpec per Feast entity whose
    fields are the numeric features of every view on it, named `view.feature`."""
    defaults = {".".join(split_reference(ref)): value for ref, value in config.defaults.items()}
    fields: dict[str, list[FieldSpec]] = {name: [] for name in registry.entities}
    for view in registry.views.values():
        if view.entity not in fields:
            continue
        for feature in view.features:
            if feature.value_type in NUMERIC_TYPES:
                name = f"{view.name}.{feature.name}"
                dtype = _FEAST_DTYPES.get(feature.value_type, "float32")
                fields[view.entity].append(FieldSpec(name, dtype, defaults.get(name, 0.0)))
    entities = {
        name: EntitySpec(
            name,
            # Only for logs and uniqueness: the Feast store forms its keys itself.
            f"feast:{registry.project}:{name}:{ID_PLACEHOLDER}",
            e.join_key,
            tuple(fields[name]),
        )
        for name, e in registry.entities.items()
    }
    layouts = {}
    for model, spec in config.inputs.items():
        candidates = spec.candidates
        if candidates not in registry.entities:  # a view: its entity (checked by the config)
            candidates = registry.views[candidates].entity or candidates
        refs = [".".join(split_reference(ref)) for ref in spec.row]
        # `entity.view.feature`: _compile_layout splits at the first dot.
        entity_refs = [f"{registry.views[ref.partition('.')[0]].entity}.{ref}" for ref in refs]
        layout = _compile_layout(model, spec.tensor, candidates, entity_refs, entities)
        layouts[model] = dataclasses.replace(layout, feature_names=tuple(refs))
    return FeatureDefinitions(entities, layouts)

"""The `features:` section of the config: the online store, the entities and model input rows.

    features:
      store:                       # kind: memory (the default) or kind: redis
        kind: redis
        url: redis://127.0.0.1:6379/0
        timeout_ms: 50             # the whole fetch: pool wait, connect, one round trip
        pool_size: 16
        on_unavailable: fail       # fail: UNAVAILABLE / 503; degrade: defaults, degraded=True
        breaker: {after_failures: 3, open_ms: 1000}
        cache: {ttl_s: 5, max_entries: 10000, entities: [item]}
      entities:
        user: {key: "user:{id}", id_column: user_id, fields: [{name: activity}, ...]}
      inputs:                      # per model: the fields that form one input row, in order
        ranker: {tensor: features, candidates: item, row: [user.activity, ..., item.price]}

Redis layout: one HASH per entity at its `key` with `{id}` replaced by the entity id, one
hash field per feature holding its value as decimal text, for example
`HSET user:42 activity 1.5 tenure 3.2`. Every field of a row is FP32 in the model input;
`dtype` says how file cells are checked when loaded (see definitions.FieldSpec.to_text).

Unknown keys are errors and every error names its key, e.g.
`features.inputs.ranker.row.3: unknown field 'user.actvity'`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from switchyard.demo.paths import config_base_dir

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ID_PLACEHOLDER = "{id}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class FeatureConfigError(Exception):
    """The features section is invalid; the message names every offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CacheConfig(Strict):
    """An in-process cache of hot entities in front of Redis (stale by at most ttl_s)."""

    ttl_s: float = Field(default=5.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    # Which entities are cached; unset: all. Candidates (items) repeat across requests far
    # more than users do, so caching only them is often the better use of the entries.
    entities: list[Name] | None = None


class BreakerConfig(Strict):
    """After after_failures failed fetches in a row, requests skip Redis for open_ms (answered
    as on_unavailable says, without waiting timeout_ms), then one at a time try it again."""

    after_failures: int = Field(default=3, ge=0)  # 0: never skip Redis
    open_ms: float = Field(default=1000.0, gt=0)


class RedisStoreConfig(Strict):
    kind: Literal["redis"]
    url: str = Field(default=DEFAULT_REDIS_URL, pattern=r"^(redis|rediss|unix)://")
    timeout_ms: float = Field(default=50.0, gt=0)
    pool_size: int = Field(default=16, ge=1)
    on_unavailable: Literal["fail", "degrade"] = "fail"
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    cache: CacheConfig | None = None


class MemoryStoreConfig(Strict):
    """The embedded store: feature files read at start, held in this process."""

    kind: Literal["memory"] = "memory"
    # Entity name -> a CSV or Parquet file in the loader's format; relative to the config file.
    seed_files: dict[Name, Path] = Field(default_factory=dict)


StoreConfig = Annotated[RedisStoreConfig | MemoryStoreConfig, Field(discriminator="kind")]


class FieldConfig(Strict):
    name: Name
    dtype: Literal["float32", "int32", "bool"] = "float32"
    # The value used where the entity or this field is missing.
    default: float = 0.0


class EntityConfig(Strict):
    # The Redis key of one entity: `{id}` is replaced by its id; anything else is literal.
    key: str
    # The column of feature files that holds the entity id.
    id_column: Name
    fields: list[FieldConfig] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str) -> str:
        if key.count(ID_PLACEHOLDER) != 1:
            raise ValueError(f"'{key}' must contain {ID_PLACEHOLDER} exactly once")
        return key

    @model_validator(mode="after")
    def _check_fields(self) -> EntityConfig:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"field names repeat: {names}")
        if self.id_column in names:
            raise ValueError(f"id_column '{self.id_column}' is also a field name")
        return self


class InputConfig(Strict):
    # The model input tensor the rows go to.
    tensor: str = Field(default="features", min_length=1)
    # The entity with one row per candidate (many ids per request); every other entity in
    # `row` is a context entity (one id per request) whose fields repeat on every row.
    candidates: Name
    # `entity.field` references, in the order of the model's input columns.
    row: list[str] = Field(min_length=1)


class FeaturesConfig(Strict):
    store: StoreConfig = Field(default_factory=MemoryStoreConfig)
    entities: dict[Name, EntityConfig] = Field(default_factory=dict)
    inputs: dict[str, InputConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> FeaturesConfig:
        errors = list(self._reference_errors())
        if errors:
            raise ValidationError.from_exception_data("FeaturesConfig", errors)
        return self

    def _reference_errors(self) -> Any:
        def error(loc: tuple[str | int, ...], message: str, value: object) -> InitErrorDetails:
            # The message goes in as context: its braces (key templates) are not placeholders.
            kind = PydanticCustomError("reference", "{message}", {"message": message})
            return InitErrorDetails(type=kind, loc=loc, input=value)

        fields = {name: {f.name for f in e.fields} for name, e in self.entities.items()}
        keys = [e.key for e in self.entities.values()]
        if len(set(keys)) != len(keys):
            yield error(("entities",), f"two entities share a key template: {keys}", keys)
        for model, spec in self.inputs.items():
            if spec.candidates not in fields:
                message = f"unknown entity '{spec.candidates}'"
                yield error(("inputs", model, "candidates"), message, spec.candidates)
            seen: set[str] = set()
            for index, ref in enumerate(spec.row):
                entity, _, field = ref.partition(".")
                loc = ("inputs", model, "row", index)
                if not field:
                    yield error(loc, f"'{ref}' is not of the form entity.field", ref)
                elif entity not in fields or field not in fields[entity]:
                    yield error(loc, f"unknown field '{ref}'", ref)
                elif ref in seen:
                    yield error(loc, f"'{ref}' appears twice in the row", ref)
                seen.add(ref)
        if isinstance(self.store, MemoryStoreConfig):
            for entity in self.store.seed_files:
                if entity not in fields:
                    yield error(("store", "seed_files", entity), "unknown entity", entity)
        elif self.store.cache is not None:
            for index, entity in enumerate(self.store.cache.entities or []):
                if entity not in fields:
                    loc = ("store", "cache", "entities", index)
                    yield error(loc, f"unknown entity '{entity}'", entity)


def resolve_feature_paths(raw_features: Any, base_dir: Path) -> None:
    """Make the memory store's relative seed_files absolute against base_dir, in place: call
    it on the raw section before validation, as server.config does for model paths."""
    store = raw_features.get("store") if isinstance(raw_features, dict) else None
    seed_files = store.get("seed_files") if isinstance(store, dict) else None
    if not isinstance(seed_files, dict):
        return
    for entity, path in seed_files.items():
        if isinstance(path, str):
            expanded = Path(path).expanduser()
            seed_files[entity] = str(expanded if expanded.is_absolute() else base_dir / expanded)


def parse_features(raw: Any, base_dir: Path, source: str) -> FeaturesConfig:
    """Validate a raw `features` section on its own (the loader CLI, the demo build)."""
    if not isinstance(raw, dict):
        raise FeatureConfigError(f"invalid configuration in {source}: features must be a mapping")
    raw = copy.deepcopy(raw)  # paths are resolved in place
    resolve_feature_paths(raw, base_dir)
    try:
        return FeaturesConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"invalid configuration in {source}:"]
        for item in exc.errors():
            key = ".".join(["features", *(str(part) for part in item["loc"])])
            lines.append(f"  {key}: {item['msg']}")
        raise FeatureConfigError("\n".join(lines)) from None


def load_features_section(path: Path) -> FeaturesConfig | None:
    """The validated `features` section of the config file at path; None when it has none."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FeatureConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise FeatureConfigError(f"configuration {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or raw.get("features") is None:
        return None
    return parse_features(raw["features"], config_base_dir(path), str(path))

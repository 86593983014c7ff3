"""The `features:` section of the config: the online store, the entities and model input rows.

    features:
      store:                       # kind: memory (the default), redis or feast (below)
        kind: redis
        url: redis://127.0.0.1:6379/0
        timeout_s: 0.05            # the whole fetch: pool wait, connect, one round trip
        pool_size: 16
        on_unavailable: fail       # fail: UNAVAILABLE / 503; degrade: defaults, degraded=True
        breaker: {after_failures: 3, open_s: 1.0}
        cache: {ttl_s: 5, max_entries: 10000, entities: [item]}
      entities:
        user: {key: "user:{id}", id_column: user_id, fields: [{name: activity}, ...]}
      inputs:                      # per model: the fields that form one input row, in order
        ranker: {tensor: features, candidates: item, row: [user.activity, ..., item.price]}

Redis layout: one HASH per entity at its `key` with `{id}` replaced by the entity id, one
hash field per feature holding its value as decimal text, for example
`HSET user:42 activity 1.5 tenure 3.2`. Every field of a row is FP32 in the model input;
`dtype` says how file cells are checked when loaded (see definitions.FieldSpec.to_text).

kind: feast reads what Feast materialized into its Redis online store, in Feast's layout
(server/features/feast_encoding.py), with entities and features from the Feast registry:

      store: {kind: feast, repo_path: feature_repo}   # or project: P, registry: PATH, url: ...
      inputs:
        ranker: {candidates: item, row: [user_stats.activity, ..., item_stats.price]}
      defaults: {user_stats.tenure: 6.6}               # unset: 0

The section is part of the one schema (server/config_base.py): unknown keys are errors and every
error names its key, e.g. `features.inputs.ranker.row.3: unknown field 'user.actvity'`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from switchyard.demo.paths import config_base_dir
from switchyard.server.config_base import (
    ConfigError,
    FilePath,
    StrictModel,
    error_details,
    error_lines,
    raise_errors,
)
from switchyard.server.config_secrets import secret_context
from switchyard.server.config_sections import (
    RedisConnectionSettings,
    resolve_path,
)
from switchyard.server.config_yaml import load_yaml
from switchyard.server.features.feast_registry import (
    DEFAULT_KEY_VERSION,
    FeastRegistry,
    FeastRegistryError,
    read_registry,
    read_repo,
    reference_error,
    split_reference,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ID_PLACEHOLDER = "{id}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class FeatureConfigError(ConfigError):
    """The features section is invalid; the message names every offending key."""


class CacheConfig(StrictModel):
    """An in-process cache of hot entities in front of Redis (stale by at most ttl_s)."""

    ttl_s: float = Field(default=5.0, gt=0, description="Seconds a cached entity is served.")
    max_entries: int = Field(default=10_000, ge=1, description="Entities cached at most.")
    # Candidates (items) repeat across requests far more than users do, so caching only them
    # is often the better use of the entries.
    entities: list[Name] | None = Field(
        default=None, description="Which entities are cached; unset: all."
    )


class BreakerConfig(StrictModel):
    """After after_failures failed fetches in a row, requests skip Redis for open_s (answered
    as on_unavailable says, without waiting timeout_s), then one at a time try it again."""

    renamed_keys: ClassVar[Mapping[str, str]] = {"open_ms": "open_s"}

    after_failures: int = Field(
        default=3, ge=0, description="Failed fetches in a row that open it; 0: never skip Redis."
    )
    open_s: float = Field(default=1.0, gt=0, description="Seconds Redis is skipped once open.")


class RedisClientSettings(RedisConnectionSettings):
    """How a Redis-backed store (kind: redis, kind: feast) fetches: the round trip's bound,
    the pool, the breaker, the cache and the answer when Redis is unavailable."""

    renamed_keys: ClassVar[Mapping[str, str]] = {"timeout_ms": "timeout_s"}

    url: str = Field(
        default=DEFAULT_REDIS_URL,
        pattern=r"^(redis|rediss|unix)://",
        description="The Redis server (redis://, rediss:// or unix://).",
    )
    timeout_s: float = Field(
        default=0.05,
        gt=0,
        description="Seconds the whole fetch may take: pool wait, connect, one round trip.",
    )
    pool_size: int = Field(default=16, ge=1, description="Connections to Redis at most.")
    on_unavailable: Literal["fail", "degrade"] = Field(
        default="fail",
        description="fail: UNAVAILABLE / 503; degrade: default values, marked degraded.",
    )
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig, description="Skipping a Redis that keeps failing."
    )
    cache: CacheConfig | None = Field(default=None, description="In-process cache; unset: none.")


class RedisStoreConfig(RedisClientSettings):
    """Features from Redis: one HASH per entity."""

    kind: Literal["redis"] = Field(description="redis: features from a Redis server.")


class FeastStoreConfig(RedisClientSettings):
    """Features that Feast materialized into its Redis online store, read in Feast's own
    layout; entities, features and ttls come from the Feast file registry."""

    kind: Literal["feast"] = Field(description="feast: a Feast repo's Redis online store.")
    repo_path: FilePath | None = Field(
        default=None,
        description="The Feast repo (its feature_store.yaml gives project, registry, url and "
        "key version), relative to the config file.",
    )
    project: str | None = Field(default=None, description="Without repo_path: the project.")
    registry: FilePath | None = Field(
        default=None, description="Without repo_path: the registry file (registry.db)."
    )
    entity_key_serialization_version: int | None = Field(
        default=None, description="Feast's entity key version; unset: the repo's, else 3."
    )
    _registry: FeastRegistry | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _url_from_repo(cls, raw: Any) -> Any:
        """url defaults to the repo's online_store connection_string."""
        if isinstance(raw, dict) and "url" not in raw and isinstance(raw.get("repo_path"), str):
            try:
                url = read_repo(Path(raw["repo_path"])).redis_url
            except FeastRegistryError:
                return raw  # reported, at repo_path, by _load_registry
            if url is not None:
                return {**raw, "url": url}
        return raw

    @model_validator(mode="after")
    def _load_registry(self) -> FeastStoreConfig:
        if self.repo_path is not None and (self.project is not None or self.registry is not None):
            raise ValueError("give repo_path, or project and registry, not both")
        if self.repo_path is not None:
            repo = read_repo(self.repo_path)
            project, path, version = repo.project, repo.registry_path, repo.key_version
            if repo.redis_url is None and "url" not in self.model_fields_set:
                raise ValueError(
                    f"the repo's online store is '{repo.online_store_type}', not redis: "
                    "Switchyard reads Feast's Redis online store (give url if the repo "
                    "materializes into Redis under another configuration)"
                )
        elif self.project is None or self.registry is None:
            raise ValueError("give repo_path, or both project and registry")
        else:
            project, path, version = self.project, self.registry, DEFAULT_KEY_VERSION
        if self.entity_key_serialization_version is not None:
            version = self.entity_key_serialization_version
        self._registry = read_registry(path, project, version)
        return self

    @property
    def feast_registry(self) -> FeastRegistry:
        assert self._registry is not None  # set by validation
        return self._registry


class MemoryStoreConfig(StrictModel):
    """The embedded store: feature files read at start, held in this process."""

    kind: Literal["memory"] = Field(default="memory", description="memory: held in process.")
    seed_files: dict[Name, FilePath] = Field(
        default_factory=dict,
        description="Entity name -> a CSV or Parquet file in the loader's format, relative to "
        "the config file.",
    )


def _without_union_tag(value: Any, handler: Callable[[Any], Any]) -> Any:
    """Validate a tagged union, its errors at the file's keys: pydantic puts the tag in the
    path (store.redis.url), where the file has no such key."""
    try:
        return handler(value)
    except ValidationError as exc:
        errors = [
            error_details(
                item["loc"][1:] if item["type"] != "union_tag_invalid" else item["loc"],
                item["msg"],
                item["input"],
            )
            for item in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data("store", errors) from None


StoreConfig = Annotated[
    RedisStoreConfig | FeastStoreConfig | MemoryStoreConfig,
    Field(discriminator="kind"),
    WrapValidator(_without_union_tag),
]


class FieldConfig(StrictModel):
    """One feature of an entity."""

    name: Name = Field(description="The feature's name (its Redis hash field).")
    dtype: Literal["float32", "int32", "bool"] = Field(
        default="float32", description="How file cells are checked when loaded."
    )
    default: float = Field(
        default=0.0, description="The value used where the entity or this field is missing."
    )


class EntityConfig(StrictModel):
    """An entity (user, item) and its features."""

    key: str = Field(
        description="The Redis key of one entity: {id} is replaced by its id, the rest literal."
    )
    id_column: Name = Field(description="The column of feature files that holds the entity id.")
    fields: list[FieldConfig] = Field(min_length=1, description="The entity's features.")

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


class InputConfig(StrictModel):
    """How one model's input rows are built from features."""

    tensor: str = Field(
        default="features", min_length=1, description="The model input tensor the rows go to."
    )
    # Every other entity in `row` is a context entity (one id per request) whose fields
    # repeat on every row.
    candidates: Name = Field(description="The entity with one row per candidate.")
    row: list[str] = Field(
        min_length=1,
        description="entity.field references, in the order of the model's input columns.",
    )


class FeaturesConfig(StrictModel):
    """Online features: the store, the entities, and each model's input rows."""

    store: StoreConfig = Field(
        default_factory=MemoryStoreConfig,
        description="Where features are read: memory, redis or feast.",
    )
    entities: dict[Name, EntityConfig] = Field(
        default_factory=dict, description="Entity name -> its key and features."
    )
    inputs: dict[str, InputConfig] = Field(
        default_factory=dict, description="Model name -> how its input rows are built."
    )
    defaults: dict[str, float] = Field(
        default_factory=dict,
        description="kind: feast only: `view.feature` -> the value used where it is missing "
        "or stale (unset: 0).",
    )

    @model_validator(mode="after")
    def _check_references(self) -> FeaturesConfig:
        if isinstance(self.store, FeastStoreConfig):
            raise_errors("features", self._feast_reference_errors(self.store.feast_registry))
        else:
            raise_errors("features", self._reference_errors())
        return self

    def _feast_reference_errors(self, registry: FeastRegistry) -> Iterator[InitErrorDetails]:
        """In feast mode rows reference `view.feature` (or `view:feature`) of the registry
        and candidates name a Feast entity or a view on it."""
        error = error_details
        if self.entities:
            message = "not used with store kind feast: the entities come from the Feast registry"
            yield error(("entities",), message, sorted(self.entities))
        for model, spec in self.inputs.items():
            if spec.candidates not in registry.entities and (
                spec.candidates not in registry.views
                or registry.views[spec.candidates].entity is None
            ):
                message = (
                    f"'{spec.candidates}' is neither an entity nor a single-entity feature view "
                    f"of the Feast registry (entities: {', '.join(sorted(registry.entities))})"
                )
                yield error(("inputs", model, "candidates"), message, spec.candidates)
            seen: set[tuple[str, str]] = set()
            for index, ref in enumerate(spec.row):
                loc = ("inputs", model, "row", index)
                problem = reference_error(registry, ref)
                if problem is not None:
                    yield error(loc, problem, ref)
                elif split_reference(ref) in seen:
                    yield error(loc, f"'{ref}' appears twice in the row", ref)
                seen.add(split_reference(ref))
        for ref in self.defaults:
            problem = reference_error(registry, ref)
            if problem is not None:
                yield error(("defaults", ref), problem, ref)
        assert isinstance(self.store, FeastStoreConfig)
        if self.store.cache is not None:
            for index, entity in enumerate(self.store.cache.entities or []):
                if entity not in registry.entities:
                    loc = ("store", "cache", "entities", index)
                    yield error(loc, f"unknown Feast entity '{entity}'", entity)

    def _reference_errors(self) -> Iterator[InitErrorDetails]:
        error = error_details
        if self.defaults:
            message = "only with store kind feast (give other stores' defaults on their fields)"
            yield error(("defaults",), message, sorted(self.defaults))
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
    """Make the stores' relative files (seed_files, TLS files, the Feast repo) absolute
    against base_dir, in place: call it on the raw section before validation, as
    server.config does for model paths."""
    store = raw_features.get("store") if isinstance(raw_features, dict) else None
    tls = store.get("tls") if isinstance(store, dict) else None
    for key in ("ca_file", "cert_file", "key_file"):
        if isinstance(tls, dict) and isinstance(tls.get(key), str):
            tls[key] = resolve_path(tls[key], base_dir)
    for key in ("repo_path", "registry"):
        if isinstance(store, dict) and isinstance(store.get(key), str):
            store[key] = resolve_path(store[key], base_dir)
    seed_files = store.get("seed_files") if isinstance(store, dict) else None
    if not isinstance(seed_files, dict):
        return
    for entity, path in seed_files.items():
        if isinstance(path, str):
            seed_files[entity] = resolve_path(path, base_dir)


def parse_features(raw: Any, base_dir: Path, source: str) -> FeaturesConfig:
    """Validate a raw `features` section on its own (the loader CLI, the demo build)."""
    if not isinstance(raw, dict):
        raise FeatureConfigError(source, ["features: must be a mapping"])
    raw = copy.deepcopy(raw)  # paths are resolved in place
    resolve_feature_paths(raw, base_dir)
    try:
        return FeaturesConfig.model_validate(raw, context=secret_context(base_dir))
    except ValidationError as exc:
        raise FeatureConfigError(source, error_lines(exc, ("features",))) from None


def load_features_section(path: Path) -> FeaturesConfig | None:
    """The validated `features` section of the config file at path; None when it has none."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FeatureConfigError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        raw = load_yaml(text, str(path))
    except ConfigError as exc:
        raise FeatureConfigError(exc.source, exc.errors) from None
    if not isinstance(raw, dict) or raw.get("features") is None:
        return None
    return parse_features(raw["features"], config_base_dir(path), str(path))

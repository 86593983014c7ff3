"""A Feast repo's settings and its file registry, read without the feast package.

`feature_store.yaml` gives the project, the registry file, the Redis online store's
connection string and the entity key serialization version. The registry is the serialized
feast.core.Registry that `feast apply` writes; it is parsed with our own subset of Feast's
public protos (protos/feast_core.proto). Only the local file registry is supported (not
SQL, S3/GCS or the remote registry server), and only single-entity feature views.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from switchyard.protos import feast_core_pb2, feast_types_pb2
from switchyard.server.features.feast_encoding import (
    JOIN_KEY_TYPES,
    NUMERIC_TYPES,
    SUPPORTED_KEY_VERSIONS,
)

FEATURE_STORE_YAML = "feature_store.yaml"
DEFAULT_KEY_VERSION = 3  # Feast's default since 0.38


class FeastRegistryError(ValueError):
    """The repo or its registry cannot be used; the message says what to change."""


@dataclass(frozen=True)
class FeastRepo:
    project: str
    registry_path: Path
    # From the Redis online store's connection_string; None: the online store is not Redis
    # (online_store_type says which), so a url must be given.
    redis_url: str | None
    online_store_type: str
    key_version: int


@dataclass(frozen=True)
class FeastFeature:
    view: str
    name: str
    value_type: int  # feast.types.ValueType.Enum


@dataclass(frozen=True)
class FeastEntity:
    name: str
    join_key: str
    value_type: int


@dataclass(frozen=True)
class FeastView:
    name: str
    entity: str | None  # None: not one entity (entityless or composite; not servable)
    ttl_s: float  # 0: never stale
    features: tuple[FeastFeature, ...]  # every feature, numeric or not
    online: bool  # False: Feast never materializes it


@dataclass(frozen=True)
class FeastRegistry:
    project: str
    entities: dict[str, FeastEntity]
    views: dict[str, FeastView]

    def feature(self, view: str, name: str) -> FeastFeature | None:
        found = self.views.get(view)
        return next((f for f in found.features if f.name == name), None) if found else None


def read_repo(repo_path: Path) -> FeastRepo:
    """The settings of the Feast repo at repo_path (its feature_store.yaml)."""
    path = repo_path / FEATURE_STORE_YAML
    try:
        # Feast expands ${VARIABLES} in the file before parsing it; so do we.
        raw = yaml.safe_load(os.path.expandvars(path.read_text()))
    except OSError as exc:
        raise FeastRegistryError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise FeastRegistryError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("project"), str):
        raise FeastRegistryError(f"{path} has no 'project'")
    registry = raw.get("registry")
    if isinstance(registry, dict):
        kind = registry.get("registry_type", "file")
        if kind != "file":
            raise FeastRegistryError(
                f"{path}: registry_type '{kind}' is not supported; Switchyard reads only "
                "Feast's file registry (registry: PATH)"
            )
        if registry.get("enable_online_feature_view_versioning"):
            raise FeastRegistryError(
                f"{path}: enable_online_feature_view_versioning is not supported (the online "
                "store's view names then carry a version suffix)"
            )
        registry = registry.get("path")
    if not isinstance(registry, str):
        raise FeastRegistryError(f"{path} has no registry path")
    if "://" in registry:
        raise FeastRegistryError(
            f"{path}: registry '{registry}' is not a local file; Switchyard reads only "
            "Feast's file registry"
        )
    registry_path = Path(registry)
    if not registry_path.is_absolute():
        registry_path = repo_path / registry_path
    version = raw.get("entity_key_serialization_version", DEFAULT_KEY_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FeastRegistryError(
            f"{path}: entity_key_serialization_version must be a number, got {version!r}"
        )
    online_store = raw.get("online_store")
    if not isinstance(online_store, dict):
        online_store = {}
    # Feast's default online store, when the file names none, is SQLite.
    store_type = str(online_store.get("type", "sqlite"))
    url = _redis_url(online_store, path) if store_type == "redis" else None
    return FeastRepo(raw["project"], registry_path, url, store_type, version)


def _redis_url(online_store: dict[str, Any], path: Path) -> str:
    """Feast's `connection_string` ("host:port,db=1,ssl=true,username=u,password=x") as a
    redis URL."""
    redis_type = online_store.get("redis_type", "redis")
    if redis_type != "redis":
        raise FeastRegistryError(
            f"{path}: online_store redis_type '{redis_type}' is not supported; Switchyard "
            "reads a single Redis server (redis_type: redis)"
        )
    host_port, *options = str(online_store.get("connection_string", "localhost:6379")).split(",")
    settings = dict(option.strip().split("=", 1) for option in options if "=" in option)
    scheme = "rediss" if settings.get("ssl", "").lower() == "true" else "redis"
    db = settings.get("db", "0")
    if not db.isdigit():
        raise FeastRegistryError(f"{path}: connection_string db={db} is not a number")
    user = quote(settings.get("username", ""), safe="")
    password = settings.get("password")
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@" if user else ""
    return f"{scheme}://{auth}{host_port.strip()}/{db}"


def read_registry(path: Path, project: str, key_version: int) -> FeastRegistry:
    """The entities and feature views of project in the file registry at path."""
    if key_version not in SUPPORTED_KEY_VERSIONS:
        raise FeastRegistryError(
            f"entity_key_serialization_version {key_version} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_KEY_VERSIONS))})"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeastRegistryError(
            f"cannot read the Feast registry {path}: {exc.strerror} (run `feast apply`)"
        ) from None
    message = feast_core_pb2.Registry()
    try:
        message.ParseFromString(data)
    except Exception:  # protobuf's DecodeError
        raise FeastRegistryError(f"{path} is not a Feast file registry") from None
    entity_specs = [e.spec for e in message.entities if e.spec.project == project]
    join_keys = {spec.name: spec.join_key or spec.name for spec in entity_specs}
    # Feast forms the keys it materializes from the type of the view's entity column, which
    # an Entity declared without value_type (Feast's own template) does not repeat.
    key_types: dict[str, dict[int, list[str]]] = {name: {} for name in join_keys}
    views = {}
    for view in message.feature_views:
        spec = view.spec
        if spec.project != project:
            continue
        entity = spec.entities[0] if len(spec.entities) == 1 else None
        ttl_s = spec.ttl.seconds + spec.ttl.nanos * 1e-9
        features = tuple(FeastFeature(spec.name, f.name, f.value_type) for f in spec.features)
        views[spec.name] = FeastView(spec.name, entity, ttl_s, features, spec.online)
        for column in spec.entity_columns:
            if entity in join_keys and column.name == join_keys[entity] and column.value_type:
                key_types[entity].setdefault(column.value_type, []).append(spec.name)
    entities = {}
    for entity_spec in entity_specs:
        name = entity_spec.name
        types = key_types[name]
        if len(types) > 1:
            found = "; ".join(f"{_type_name(t)} in {', '.join(v)}" for t, v in types.items())
            raise FeastRegistryError(
                f"the feature views on entity '{name}' disagree on the type of its join "
                f"key '{join_keys[name]}' ({found}): Feast would write keys of each type"
            )
        value_type = next(iter(types), entity_spec.value_type)
        entities[name] = FeastEntity(name, join_keys[name], value_type)
    if not entities and not views:
        raise FeastRegistryError(f"the Feast registry {path} has nothing for project '{project}'")
    return FeastRegistry(project, entities, views)


def _type_name(value_type: int) -> str:
    return str(feast_types_pb2.ValueType.Enum.Name(value_type))


def describe_types(types: dict[int, str]) -> str:
    return ", ".join(types.values())


def reference_error(registry: FeastRegistry, ref: str) -> str | None:
    """Why a `view.feature` (or `view:feature`) reference cannot be a model row column."""
    view_name, feature_name = split_reference(ref)
    if not feature_name:
        return f"'{ref}' is not of the form view.feature"
    view = registry.views.get(view_name)
    feature = registry.feature(view_name, feature_name)
    if view is None or feature is None:
        known = ", ".join(sorted(registry.views)) or "none"
        return (
            f"feature '{ref}' not in the Feast registry's feature views (views: {known}; "
            "stream and on-demand feature views are not read)"
        )
    if view.entity is None or view.entity not in registry.entities:
        return f"feature view '{view_name}' is not on exactly one entity; only those are supported"
    if not view.online:
        return f"feature view '{view_name}' has online=False: Feast does not materialize it"
    if feature.value_type not in NUMERIC_TYPES:
        return (
            f"feature '{ref}' is not a number; model rows take "
            f"{describe_types(NUMERIC_TYPES)} features"
        )
    entity = registry.entities[view.entity]
    if entity.value_type not in JOIN_KEY_TYPES:
        return (
            f"entity '{entity.name}' has a join key type Switchyard cannot form from an id "
            f"(supported: {describe_types(JOIN_KEY_TYPES)})"
        )
    return None


def split_reference(ref: str) -> tuple[str, str]:
    """('view', 'feature') of 'view.feature' or Feast's own 'view:feature'."""
    separator = ":" if ":" in ref else "."
    view, _, feature = ref.partition(separator)
    return view, feature

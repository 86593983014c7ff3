"""The one configuration file: every section validated by one schema, compiled once at start.

Unknown keys, duplicate keys and values of the wrong type are errors, and every error names
its key path (`models.0.batching.max_batch_size`, `endpoints.0.shadow.fraction`). Durations are
seconds everywhere (`_s`). Relative paths resolve against the config file's folder, and
SWITCHYARD_<SETTING> environment variables override `server` settings (for example
SWITCHYARD_HTTP_PORT=9000). `switchyard config schema` prints the JSON Schema of the file.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from switchyard.demo.paths import DEMO_CONFIG_PATH, config_base_dir
from switchyard.router.table import RoutingTable
from switchyard.server.config_base import (
    ConfigError,
    StrictModel,
    error_details,
    error_lines,
    raise_errors,
)
from switchyard.server.config_secrets import secret_context
from switchyard.server.config_sections import (
    AdminSettings,
    ControlSettings,
    DriftSettings,
    FeedbackSettings,
    ModelRepositorySettings,
    RayHostSettings,
    RecommendSettings,
    RoutingSettings,
    ServerSettings,
    resolve_path,
)
from switchyard.server.config_yaml import load_yaml
from switchyard.server.endpoints_config import EndpointConfig, compile_endpoints
from switchyard.server.features.config import FeaturesConfig, resolve_feature_paths
from switchyard.server.mlflow_source import MlflowSettings
from switchyard.server.model_config import AUTO_MAX_BATCH_SIZE, ModelConfig, ModelVersionConfig
from switchyard.server.tracing import TracingSettings

__all__ = [
    "AUTO_MAX_BATCH_SIZE",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "AdminSettings",
    "ConfigError",
    "ControlSettings",
    "DriftSettings",
    "FeedbackSettings",
    "ModelConfig",
    "ModelRepositorySettings",
    "ModelVersionConfig",
    "RayHostSettings",
    "RecommendSettings",
    "RoutingSettings",
    "ServerSettings",
    "SwitchyardConfig",
    "TracingSettings",
    "load_config",
    "parse_config",
    "routing_table",
]

ENV_PREFIX = "SWITCHYARD_"
# The embedded default: the demo, whose relative paths name files in the demo build's folder.
DEFAULT_CONFIG_PATH = DEMO_CONFIG_PATH


class SwitchyardConfig(StrictModel):
    """The Switchyard config file."""

    server: ServerSettings = Field(
        default_factory=ServerSettings, description="Listening sockets and process settings."
    )
    models: list[ModelConfig] = Field(
        default_factory=list,
        description="The served models (none only beside a `model_repository.path`).",
    )
    endpoints: list[EndpointConfig] = Field(
        default_factory=list, description="Routed endpoints: A/B, canary, shadow, rollouts."
    )
    routing: RoutingSettings = Field(
        default_factory=RoutingSettings, description="The router's background work."
    )
    admin: AdminSettings = Field(default_factory=AdminSettings, description="The admin API.")
    control: ControlSettings = Field(
        default_factory=ControlSettings,
        description="The store of routing state shared by every replica.",
    )
    features: FeaturesConfig = Field(
        default_factory=FeaturesConfig, description="Online features: store, entities, inputs."
    )
    recommend: RecommendSettings = Field(
        default_factory=RecommendSettings, description="The Recommend API."
    )
    feedback: FeedbackSettings = Field(
        default_factory=FeedbackSettings,
        description="Recommend predictions joined with reported clicks: online quality.",
    )
    ray: RayHostSettings = Field(
        default_factory=RayHostSettings, description="The Ray host's ingress deployment."
    )
    mlflow: MlflowSettings = Field(
        default_factory=MlflowSettings,
        description="The MLflow model registry that `models:/...` version sources name.",
    )
    model_repository: ModelRepositorySettings = Field(
        default_factory=ModelRepositorySettings,
        description="A Triton-layout model repository, and model changes while serving.",
    )
    tracing: TracingSettings = Field(
        default_factory=TracingSettings,
        description="OpenTelemetry traces of requests, exported over OTLP (off by default).",
    )
    drift: DriftSettings = Field(
        default_factory=DriftSettings,
        description="Online drift of inputs and outputs against reference profiles.",
    )

    # The endpoints compiled into the router's immutable table, once, at validation.
    _routing_table: RoutingTable = PrivateAttr(default_factory=lambda: RoutingTable({}))

    @model_validator(mode="after")
    def _compile_endpoints(self) -> SwitchyardConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names repeat: {names}")
        repository = self.model_repository.path is not None
        if not names and not repository:
            message = "no models: list some here or set model_repository.path"
            raise_errors("models", [error_details(("models",), message, self.models)])
        # A repository's models are known once it is read: the gateway checks endpoints
        # against what it loaded, at start and on every change.
        models = (
            None
            if repository
            else {model.name: [v.version for v in model.versions] for model in self.models}
        )
        table, errors = compile_endpoints(self.endpoints, models, prefix=("endpoints",))
        raise_errors("endpoints", errors)
        if table is not None:
            self._routing_table = table
        return self

    @model_validator(mode="after")
    def _one_routing_state_across_workers(self) -> SwitchyardConfig:
        # Each worker process would own its own memory store: weights set through one worker
        # and rollouts judged by each would disagree. Redis makes every worker a replica.
        # "auto" is refused too, so that a config's validity does not depend on the machine.
        if self.server.workers != 1 and self.control.store == "memory":
            raise_errors(
                "control",
                [
                    error_details(
                        ("control", "store"),
                        f"server.workers: {self.server.workers} needs `control.store: redis` "
                        "(each worker process would keep its own memory store)",
                        self.control.store,
                    )
                ],
            )
        return self


def routing_table(config: SwitchyardConfig) -> RoutingTable:
    """The routing table compiled from `config`'s endpoints when it was validated."""
    return config._routing_table


def _env_value(text: str) -> Any:
    # Read as YAML reads a scalar, so SWITCHYARD_HTTP_PORT=9000 is the int the schema wants.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    server = raw.get("server")
    server = dict(server) if isinstance(server, dict) else server
    for name in ServerSettings.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and isinstance(server, dict | None):
            server = {**(server or {}), name: _env_value(value)}
    raw = {**raw} if server is None else {**raw, "server": server}
    repository = raw.get("model_repository")
    if isinstance(repository, dict | None):
        # What the `serve` flags (--model-repository ...) set, for every worker and reload.
        repository = dict(repository or {})
        for name, value in _repository_env(env).items():
            repository[name] = value
        if repository:
            raw["model_repository"] = repository
    token = env.get(ENV_PREFIX + "ADMIN_TOKEN")
    admin = raw.get("admin")
    if token is not None and isinstance(admin, dict | None):
        # Secrets belong in the environment, not in the config file; a token is text as given.
        raw["admin"] = {**(admin or {}), "token": token}
    return raw


# Redis URLs may hold a password: on Kubernetes they come from a Secret, through these.
CONTROL_URL_ENV = ENV_PREFIX + "CONTROL_URL"
FEATURES_STORE_URL_ENV = ENV_PREFIX + "FEATURES_STORE_URL"


def _apply_redis_url_env(
    raw: dict[str, Any], env: Mapping[str, str], source: str
) -> dict[str, Any]:
    """`control.url` from SWITCHYARD_CONTROL_URL and `features.store.url` (a redis store's)
    from SWITCHYARD_FEATURES_STORE_URL; a variable set for a section that has no such URL is
    an error, not ignored, so that a deployment never runs without the Redis it names."""
    errors: list[str] = []
    control_url = env.get(CONTROL_URL_ENV)
    control = raw.get("control")
    if control_url is not None and isinstance(control, dict | None):
        raw = {**raw, "control": {**(control or {}), "url": control_url}}
    store_url = env.get(FEATURES_STORE_URL_ENV)
    features = raw.get("features")
    if store_url is not None:
        store = features.get("store") if isinstance(features, dict) else None
        redis_backed = isinstance(store, dict) and store.get("kind") in ("redis", "feast")
        if isinstance(features, dict) and isinstance(store, dict) and redis_backed:
            raw = {**raw, "features": {**features, "store": {**store, "url": store_url}}}
        else:
            errors.append(
                f"{FEATURES_STORE_URL_ENV}: is set, but features.store is not "
                "`kind: redis` or `kind: feast` (unset the variable or configure one)"
            )
    if errors:
        raise ConfigError(source, errors)
    return raw


REPOSITORY_ENV = {
    "path": ENV_PREFIX + "MODEL_REPOSITORY",
    "control_mode": ENV_PREFIX + "MODEL_CONTROL_MODE",
    "load": ENV_PREFIX + "LOAD_MODEL",  # comma-separated; empty: none
}


def _repository_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, variable in REPOSITORY_ENV.items():
        text = env.get(variable)
        if text is not None:
            values[name] = [n for n in text.split(",") if n] if name == "load" else text
    return values


def _resolve_path(section: Any, key: str, base_dir: Path) -> None:
    if isinstance(section, dict) and isinstance(section.get(key), str):
        section[key] = resolve_path(section[key], base_dir)


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> None:
    _resolve_path(raw.get("routing"), "disagreement_log_path", base_dir)
    _resolve_path(raw.get("admin"), "audit_log_path", base_dir)
    _resolve_path(raw.get("admin"), "audit_key_file", base_dir)
    _resolve_path(raw.get("admin"), "tokens_file", base_dir)
    _resolve_path(raw.get("model_repository"), "path", base_dir)
    control = raw.get("control")
    for key in ("ca_file", "cert_file", "key_file"):
        _resolve_path(control.get("tls") if isinstance(control, dict) else None, key, base_dir)
    _resolve_path(raw.get("mlflow"), "cache_dir", base_dir)
    server = raw.get("server")
    for tls in (server.get("tls"), server.get("metrics_tls")) if isinstance(server, dict) else ():
        for key in ("cert_file", "key_file", "client_ca_file"):
            _resolve_path(tls, key, base_dir)
    resolve_feature_paths(raw.get("features"), base_dir)
    models = raw.get("models")
    for model in models if isinstance(models, list) else []:
        triton = model.get("triton") if isinstance(model, dict) else None
        for key in ("ca_file", "cert_file", "key_file"):
            _resolve_path(triton.get("tls") if isinstance(triton, dict) else None, key, base_dir)
        versions = model.get("versions") if isinstance(model, dict) else None
        for version in versions if isinstance(versions, list) else []:
            _resolve_path(version, "path", base_dir)
            _resolve_path(version, "profile", base_dir)


def parse_config(
    raw: Any, base_dir: Path, source: str, env: Mapping[str, str] | None = None
) -> SwitchyardConfig:
    """Validate and compile an already-read YAML document; ConfigError lists every error."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping of sections"])
    raw = copy.deepcopy(raw)  # paths and overrides are applied to a copy
    env = os.environ if env is None else env
    raw = _apply_env_overrides(raw, env)
    raw = _apply_redis_url_env(raw, env, source)
    _resolve_paths(raw, base_dir)
    try:
        return SwitchyardConfig.model_validate(raw, context=secret_context(base_dir, env))
    except ValidationError as exc:
        raise ConfigError(source, error_lines(exc)) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> SwitchyardConfig:
    """Read, validate and compile the config file at `path`; the one parse path (the CLI's
    check and the live reload use it too)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    return parse_config_text(text, path, env)


def parse_config_text(
    text: str, path: Path, env: Mapping[str, str] | None = None
) -> SwitchyardConfig:
    """`load_config` of text already read from `path` (relative paths resolve against it)."""
    return parse_config(load_yaml(text, str(path)), config_base_dir(path), str(path), env)

"""The one configuration file: server settings and models, validated once at start.

Unknown keys are errors, every error names the offending key, relative model paths are
resolved against the config file's folder, and SWITCHYARD_<SETTING> environment
variables override `server` settings (for example SWITCHYARD_HTTP_PORT=9000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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

from switchyard.demo.paths import DEMO_CONFIG_PATH, config_base_dir
from switchyard.router.config import build_routing_table
from switchyard.router.errors import RoutingConfigError
from switchyard.router.table import RoutingTable
from switchyard.runtimes.batcher import BatchingOptions
from switchyard.runtimes.ort_runtime import OrtOptions
from switchyard.server.autoscaling.latency_policy import LatencyPolicyConfig
from switchyard.server.features.config import FeaturesConfig, resolve_feature_paths

ENV_PREFIX = "SWITCHYARD_"
# The embedded default: the demo, whose relative paths name files in the demo build's folder.
DEFAULT_CONFIG_PATH = DEMO_CONFIG_PATH

Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(Exception):
    """The configuration is invalid; the message names every offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Strict):
    host: str = "0.0.0.0"
    http_port: Port = 8000
    grpc_port: Port = 8001
    metrics_port: Port = 8002
    # gRPC calls handled at once; beyond it, RESOURCE_EXHAUSTED at once instead of a queue
    # inside gRPC that an overloaded event loop cannot drain.
    max_concurrent_rpcs: int = Field(default=1024, ge=1)
    # Largest request accepted on either protocol; also bounds a tensor's declared size.
    max_request_size_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # How long shutdown waits for in-flight requests before cancelling them.
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    # How often the autoscaling signal of models with an `autoscaling` policy is exported.
    autoscaling_signal_interval_s: float = Field(default=5.0, gt=0)


class OnnxRuntimeOptions(Strict):
    execution_providers: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    intra_op_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)
    warmup: bool = True

    def to_runtime_options(self, concurrent_runs: int) -> OrtOptions:
        return OrtOptions(
            execution_providers=tuple(self.execution_providers),
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            max_concurrent_runs=concurrent_runs,
            warmup=self.warmup,
        )


# Rows per batch when the config leaves max_batch_size unset and the model has a batch
# dimension (every input and output starts with a variable dimension).
AUTO_MAX_BATCH_SIZE = 64


class BatchingConfig(Strict):
    """Dynamic batching of each version of a model (Triton's dynamic_batching semantics)."""

    # Rows per batch; 0 turns batching off; unset: AUTO_MAX_BATCH_SIZE for a batchable model.
    max_batch_size: int | None = Field(default=None, ge=0)
    # How long a partial batch may wait for more requests; 0 sends what is queued at once.
    max_queue_delay_us: int = Field(default=0, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    # Requests waiting beyond this are refused at once (RESOURCE_EXHAUSTED / 503).
    max_queue_size: int = Field(default=1024, ge=1)
    # Batches running at once (threads running the model).
    instance_count: int = Field(default=1, ge=1)
    # Per-request timeout; a caller's own deadline applies too, the earlier wins.
    timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_options(self) -> BatchingConfig:
        self.to_options(AUTO_MAX_BATCH_SIZE if self.max_batch_size is None else self.max_batch_size)
        return self

    def to_options(self, max_batch_size: int) -> BatchingOptions:
        return BatchingOptions(
            max_batch_size=max_batch_size,
            max_queue_delay_us=self.max_queue_delay_us,
            preferred_batch_sizes=tuple(self.preferred_batch_sizes),
            max_queue_size=self.max_queue_size,
            instance_count=self.instance_count,
            default_timeout_s=self.timeout_s,
        )


class TritonRuntimeOptions(Strict):
    """A model served by a Triton server (runtime: triton)."""

    url: str = Field(min_length=1)  # host:port of Triton's gRPC endpoint
    model_name: str | None = None  # Triton's name for it; default: the model's own name
    model_version: str = ""  # Triton's version; empty: Triton's default
    # gateway: Switchyard batches in front of Triton (up to Triton's max_batch_size);
    # triton: requests pass through one by one and Triton's own dynamic batcher batches.
    batching: Literal["gateway", "triton"] = "gateway"
    timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    backoff_initial_s: float = Field(default=0.02, gt=0)
    backoff_max_s: float = Field(default=0.5, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=2.0, gt=0)


class ModelVersionConfig(Strict):
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    path: Path | None = None  # the model file; required for onnxruntime


class RayDeploymentSettings(Strict):
    """How the Ray host deploys each version of a model; the standalone host ignores it."""

    num_replicas: int = Field(default=1, ge=1)  # fixed replicas, when `autoscaling` is unset
    num_cpus: float = Field(default=1.0, ge=0)  # CPUs reserved per replica
    # The window of a replica's latency stats, and Serve's averaging window over its reports.
    look_back_period_s: float = Field(default=30.0, gt=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)  # how often replicas report stats

    @model_validator(mode="after")
    def _check_windows(self) -> RayDeploymentSettings:
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError(
                f"look_back_period_s ({self.look_back_period_s}) must be over "
                f"metrics_interval_s ({self.metrics_interval_s})"
            )
        return self


def _keyed_error(message: str, section: str, value: Any) -> ValidationError:
    """A 'key[, key]: rule' message as errors under those keys (models.N.autoscaling.<key>)."""
    keys, colon, rule = message.partition(": ")
    if not colon:
        keys, rule = "", message
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{rule}", {"rule": rule}),
            loc=(key,) if key else (),
            input=value,
        )
        for key in keys.split(", ")
    ]
    return ValidationError.from_exception_data(section, details)


class ModelConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    runtime: Literal["onnxruntime", "triton"] = "onnxruntime"
    versions: list[ModelVersionConfig] = Field(min_length=1)
    # The version served when a request names none; the last listed by default.
    default_version: str | None = None
    runtime_options: OnnxRuntimeOptions = Field(default_factory=OnnxRuntimeOptions)
    triton: TritonRuntimeOptions | None = None
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    # Latency autoscaling of each version on the Ray host: the settings of LatencyPolicyConfig
    # (server/autoscaling/latency_policy.py). Unset: ray.num_replicas replicas.
    autoscaling: dict[str, Any] | None = None
    ray: RayDeploymentSettings = Field(default_factory=RayDeploymentSettings)

    @field_validator("autoscaling")
    @classmethod
    def _check_autoscaling(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                LatencyPolicyConfig.from_mapping(value)
            except ValueError as exc:
                raise _keyed_error(str(exc), "autoscaling", value) from None
        return value

    @model_validator(mode="after")
    def _check_versions(self) -> ModelConfig:
        if self.runtime == "triton" and self.triton is None:
            raise ValueError("runtime triton needs a `triton:` section with at least `url`")
        if self.runtime == "onnxruntime":
            missing = [v.version for v in self.versions if v.path is None]
            if missing:
                raise ValueError(f"versions {missing} need a `path` for runtime onnxruntime")
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"versions of model '{self.name}' repeat: {names}")
        if self.default_version is not None and self.default_version not in names:
            raise ValueError(f"default_version '{self.default_version}' is not in {names}")
        return self

    @property
    def served_default_version(self) -> str:
        return self.default_version or self.versions[-1].version


class RoutingSettings(Strict):
    """How the router's background work runs (the endpoints themselves are `endpoints:`)."""

    # JSONL log of the largest shadow-versus-primary disagreements; none when unset.
    disagreement_log_path: Path | None = None
    disagreement_top_n: int = Field(default=10, ge=1)  # lines kept per window
    disagreement_window_s: float = Field(default=60.0, gt=0)
    # A shadow call still running after this long is cancelled and counted.
    shadow_timeout_s: float = Field(default=5.0, gt=0)
    rollout_tick_s: float = Field(default=1.0, gt=0)  # how often rollouts are judged
    # How often the config file is checked for endpoint changes; 0 turns reloading off.
    config_reload_s: float = Field(default=2.0, ge=0)


class AdminSettings(Strict):
    """The admin REST API (/admin/v1/...) on the HTTP port; off unless a token is set."""

    token: str | None = Field(default=None, min_length=16)
    # Every routing change as one JSON line (who, when, old -> new); the log gets them too.
    audit_log_path: Path | None = None


class RecommendSettings(Strict):
    """The Recommend API (features in, ranked items out)."""

    max_candidates: int = Field(default=500, ge=1)  # candidates per request
    score_output: str = "score"  # the model output that ranks the candidates


class SwitchyardConfig(Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: list[ModelConfig] = Field(min_length=1)
    # Validated by router.config (see routing_table below); raw here to keep one schema.
    endpoints: list[Any] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)

    @model_validator(mode="after")
    def _check_unique_models(self) -> SwitchyardConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names repeat: {names}")
        return self


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    server = dict(raw.get("server") or {})
    for name in ServerSettings.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            server[name] = value
    raw = {**raw, "server": server}
    token = env.get(ENV_PREFIX + "ADMIN_TOKEN")
    if token is not None:  # secrets belong in the environment, not in the config file
        raw["admin"] = {**(raw.get("admin") or {}), "token": token}
    return raw


def routing_table(config: SwitchyardConfig, source: str = "the configuration") -> RoutingTable:
    """The validated routing table of `config`'s endpoints; ConfigError naming the key."""
    models = {model.name: [v.version for v in model.versions] for model in config.models}
    try:
        table = build_routing_table(config.endpoints, models=models)
    except RoutingConfigError as exc:
        raise ConfigError(f"invalid configuration in {source}:\n  {exc}") from None
    clashes = sorted(set(table.endpoints) & set(models))
    if clashes:
        raise ConfigError(
            f"invalid configuration in {source}:\n  endpoints: names {clashes} are also model "
            "names; an endpoint needs a name of its own"
        )
    return table


def _resolve_path(section: Any, key: str, base_dir: Path) -> None:
    if isinstance(section, dict) and isinstance(section.get(key), str):
        path = Path(section[key]).expanduser()
        section[key] = str(path if path.is_absolute() else base_dir / path)


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> None:
    _resolve_path(raw.get("routing"), "disagreement_log_path", base_dir)
    _resolve_path(raw.get("admin"), "audit_log_path", base_dir)
    resolve_feature_paths(raw.get("features"), base_dir)
    for model in raw.get("models") or []:
        for version in (model.get("versions") if isinstance(model, dict) else None) or []:
            _resolve_path(version, "path", base_dir)


def parse_config(
    raw: Any, base_dir: Path, source: str, env: Mapping[str, str] | None = None
) -> SwitchyardConfig:
    """Validate an already-parsed YAML document."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    raw = _apply_env_overrides(raw, os.environ if env is None else env)
    _resolve_paths(raw, base_dir)
    try:
        config = SwitchyardConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    routing_table(config, source)  # endpoints are validated at start too
    return config


def load_config(path: Path, env: Mapping[str, str] | None = None) -> SwitchyardConfig:
    """Read, validate and return the config file at `path`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {path} is not valid YAML: {exc}") from None
    return parse_config(raw, config_base_dir(path), str(path), env)

"""The `models:` section: each model, its versions, runtime, batching, Triton and Ray options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from switchyard.runtimes.batcher import BatchingOptions
from switchyard.runtimes.ort_runtime import DEFAULT_INLINE_BELOW_S, OrtOptions
from switchyard.server.autoscaling.config import AutoscalingConfig
from switchyard.server.config_base import FilePath, Name, StrictModel, VersionName

# Rows per batch when the config leaves max_batch_size unset and the model has a batch
# dimension (every input and output starts with a variable dimension).
AUTO_MAX_BATCH_SIZE = 64
_US_PER_S = 1_000_000


class OnnxRuntimeOptions(StrictModel):
    """ONNX Runtime session settings (runtime: onnxruntime)."""

    execution_providers: list[str] = Field(
        default_factory=lambda: ["auto"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference; auto: GPU if any.",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="Threads within one operator; 0: ONNX Runtime's default."
    )
    inter_op_threads: int = Field(
        default=0, ge=0, description="Threads across operators; 0: ONNX Runtime's default."
    )
    warmup: bool = Field(default=True, description="Run the model once at load, before serving.")
    inline_below_s: float = Field(
        default=DEFAULT_INLINE_BELOW_S,
        ge=0,
        description="Runs faster than this many seconds (the median of recent runs) run on "
        "the event loop, not a thread (a thread hop costs more than a tiny model); 0: always "
        "a thread.",
    )

    def to_runtime_options(self, concurrent_runs: int) -> OrtOptions:
        return OrtOptions(
            execution_providers=tuple(self.execution_providers),
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            max_concurrent_runs=concurrent_runs,
            warmup=self.warmup,
            inline_below_s=self.inline_below_s,
        )


class BatchingConfig(StrictModel):
    """Dynamic batching of each version of a model (Triton's dynamic_batching semantics)."""

    renamed_keys: ClassVar[Mapping[str, str]] = {"max_queue_delay_us": "max_queue_delay_s"}

    max_batch_size: int | None = Field(
        default=None,
        ge=0,
        description=f"Rows per batch; 0 turns batching off; unset: {AUTO_MAX_BATCH_SIZE} for a "
        "model with a batch dimension.",
    )
    max_queue_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds a partial batch may wait for more requests; 0 sends it at once.",
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list, description="Row counts dispatched as soon as they form."
    )
    max_queue_size: int = Field(
        default=1024,
        ge=1,
        description="Requests waiting at most; more are refused (RESOURCE_EXHAUSTED / 503).",
    )
    max_queue_wait_s: float | None = Field(
        default=0.5,
        gt=0,
        description="Seconds of queued work a new request may wait behind, estimated from "
        "the recent run times; beyond it the request is refused at once (RESOURCE_EXHAUSTED / "
        "503), so that under overload accepted requests wait about this long at most "
        "(accepted latency: about this plus one run). null: only max_queue_size bounds it.",
    )
    instance_count: int = Field(
        default=1, ge=1, description="Batches running at once (threads running the model)."
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a request may take; a caller's own deadline applies too.",
    )

    @model_validator(mode="after")
    def _check_options(self) -> BatchingConfig:
        self.to_options(AUTO_MAX_BATCH_SIZE if self.max_batch_size is None else self.max_batch_size)
        return self

    def to_options(self, max_batch_size: int) -> BatchingOptions:
        return BatchingOptions(
            max_batch_size=max_batch_size,
            # The batcher counts in microseconds; the file in seconds.
            max_queue_delay_us=round(self.max_queue_delay_s * _US_PER_S),
            preferred_batch_sizes=tuple(self.preferred_batch_sizes),
            max_queue_size=self.max_queue_size,
            instance_count=self.instance_count,
            default_timeout_s=self.timeout_s,
            max_queue_wait_s=self.max_queue_wait_s,
        )


class TritonTlsSettings(StrictModel):
    """TLS towards Triton's gRPC endpoint (tritonserver --grpc-use-ssl); with cert_file and
    key_file, mutual TLS (--grpc-use-ssl-mutual). Triton's HTTP endpoint has no TLS of its
    own; the gateway talks gRPC to it."""

    ca_file: FilePath = Field(
        description="PEM CA certificate(s) Triton's server certificate must chain to."
    )
    cert_file: FilePath | None = Field(
        default=None, description="PEM client certificate (mutual TLS); with key_file."
    )
    key_file: FilePath | None = Field(
        default=None, description="PEM private key of cert_file (unencrypted)."
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> TritonTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client certificate)")
        return self


class TritonRuntimeOptions(StrictModel):
    """A model served by a Triton server (runtime: triton)."""

    url: str = Field(min_length=1, description="host:port of Triton's gRPC endpoint.")
    model_name: str | None = Field(
        default=None, description="Triton's name for the model; unset: the model's own name."
    )
    model_version: str = Field(
        default="", description="Triton's version of the model; empty: Triton's default."
    )
    batching: Literal["gateway", "triton"] = Field(
        default="gateway",
        description="gateway: Switchyard batches in front of Triton; triton: requests pass "
        "one by one and Triton's own dynamic batcher batches.",
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Seconds one call to Triton may take.")
    connect_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for Triton and the model at load."
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts of a failed call, the first included."
    )
    backoff_initial_s: float = Field(
        default=0.02, gt=0, description="Seconds before the first retry; doubles per retry."
    )
    backoff_max_s: float = Field(default=0.5, gt=0, description="Seconds between retries, at most.")
    breaker_failures: int = Field(
        default=5, ge=1, description="Failures in a row that open the circuit breaker."
    )
    breaker_open_s: float = Field(
        default=2.0, gt=0, description="Seconds the open breaker refuses calls before a probe."
    )
    tls: TritonTlsSettings | None = Field(
        default=None, description="TLS towards Triton; unset: plaintext gRPC."
    )


class ModelVersionConfig(StrictModel):
    """One version of a model."""

    version: VersionName = Field(description='The version\'s name (YAML `2` is read as "2").')
    path: FilePath | None = Field(
        default=None,
        description="The model file, relative to the config file; for onnxruntime, this or "
        "`source`.",
    )
    source: str | None = Field(
        default=None,
        pattern=r"^models:/",
        description="The MLflow model registry's `models:/<name>/<version>` or "
        "`models:/<name>@<alias>` (ONNX flavour), downloaded once to `mlflow.cache_dir`.",
    )
    profile: FilePath | None = Field(
        default=None,
        description="The version's reference profile for drift, relative to the config "
        "file; unset: `<model file stem>.profile.json`, else `profile.json`, beside `path`.",
    )

    @model_validator(mode="after")
    def _one_file(self) -> ModelVersionConfig:
        if self.path is not None and self.source is not None:
            raise ValueError("give `path` or `source`, not both")
        return self


# Execution providers that put a model on a GPU: such a model gets a deployment of its own
# by default, so that GPU replicas scale apart from the (CPU) ingress.
GPU_EXECUTION_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
Placement = Literal["ingress", "deployment"]


class RayDeploymentSettings(StrictModel):
    """How the Ray host deploys each version of a model; the standalone host ignores it."""

    placement: Placement | None = Field(
        default=None,
        description="ingress: each version runs inside every ingress replica (no second "
        "Serve hop); deployment: in a deployment of its own; unset: deployment for a GPU "
        "model (runtime_options.execution_providers name CUDA or TensorRT), else ingress.",
    )
    num_replicas: int = Field(
        default=1,
        ge=1,
        description="Fixed replicas, when `autoscaling` is unset (placement deployment).",
    )
    num_cpus: float = Field(
        default=1.0, ge=0, description="CPUs reserved per replica (placement deployment)."
    )
    num_gpus: float = Field(
        default=0.0,
        ge=0,
        description="GPUs reserved per replica (placement deployment): Serve places the "
        "replicas on nodes that have them (KubeRay: a worker group with nvidia.com/gpu).",
    )
    look_back_period_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds of a replica's latency stats and of Serve's averaging window.",
    )
    metrics_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between two stats reports of a replica."
    )

    @model_validator(mode="after")
    def _check_windows(self) -> RayDeploymentSettings:
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError(
                f"look_back_period_s ({self.look_back_period_s}) must be over "
                f"metrics_interval_s ({self.metrics_interval_s})"
            )
        return self


class ModelConfig(StrictModel):
    """A model and the versions of it that are served."""

    name: Name = Field(min_length=1, description="The model's name, as requests address it.")
    runtime: Literal["onnxruntime", "triton"] = Field(
        default="onnxruntime", description="What runs the model."
    )
    versions: list[ModelVersionConfig] = Field(min_length=1, description="The served versions.")
    default_version: VersionName | None = Field(
        default=None,
        description="The version served when a request names none; unset: the last listed.",
    )
    runtime_options: OnnxRuntimeOptions = Field(
        default_factory=OnnxRuntimeOptions, description="ONNX Runtime settings."
    )
    triton: TritonRuntimeOptions | None = Field(
        default=None, description="The Triton server, for runtime: triton."
    )
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Dynamic batching of each version."
    )
    autoscaling: AutoscalingConfig | None = Field(
        default=None,
        description="Latency autoscaling of each version; unset: ray.num_replicas replicas.",
    )
    ray: RayDeploymentSettings = Field(
        default_factory=RayDeploymentSettings, description="Deployment settings on the Ray host."
    )
    drift: bool = Field(
        default=True,
        description="Monitor this model's drift (with `drift.enabled` and a reference profile).",
    )

    @model_validator(mode="after")
    def _check_versions(self) -> ModelConfig:
        if self.runtime == "triton" and self.triton is None:
            raise ValueError("runtime triton needs a `triton:` section with at least `url`")
        if self.runtime == "onnxruntime":
            missing = [v.version for v in self.versions if v.path is None and v.source is None]
            if missing:
                raise ValueError(
                    f"versions {missing} need a `path` or an MLflow `source` for runtime "
                    "onnxruntime"
                )
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"versions of model '{self.name}' repeat: {names}")
        if self.default_version is not None and self.default_version not in names:
            raise ValueError(f"default_version '{self.default_version}' is not in {names}")
        if self.ray.num_gpus > 0 and self.ray_placement != "deployment":
            # Co-located versions run in the ingress replicas, which reserve no GPUs.
            raise ValueError(
                f"ray.num_gpus ({self.ray.num_gpus}) needs `ray.placement: deployment`: "
                "versions placed in the ingress reserve no GPUs of their own"
            )
        return self

    @property
    def uses_gpu(self) -> bool:
        """The runtime options ask for a GPU provider ("auto" is read as CPU: it only means
        a GPU where one happens to be present)."""
        providers = self.runtime_options.execution_providers
        return self.runtime == "onnxruntime" and bool(GPU_EXECUTION_PROVIDERS & set(providers))

    @property
    def ray_placement(self) -> Placement:
        """Where the Ray host runs this model's versions: `ray.placement`, or its default."""
        if self.ray.placement is not None:
            return self.ray.placement
        return "deployment" if self.uses_gpu else "ingress"

    @property
    def served_default_version(self) -> str:
        return self.default_version or self.versions[-1].version

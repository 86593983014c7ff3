"""The served models: one runtime and one dynamic batcher per configured model version."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from switchyard.runtimes.base import ModelSignature, Runtime
from switchyard.runtimes.batcher import DynamicBatcher
from switchyard.runtimes.errors import ModelLoadError, NotFound
from switchyard.runtimes.ort_runtime import OnnxRuntimeModel
from switchyard.runtimes.triton_runtime import TritonModel, TritonOptions
from switchyard.server.autoscaling.replica_stats import ReplicaStatsRecorder
from switchyard.server.config import AUTO_MAX_BATCH_SIZE, ModelConfig, ModelVersionConfig
from switchyard.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    name: str
    version: str
    signature: ModelSignature
    runtime: Runtime
    batcher: DynamicBatcher
    # Latency and load as this process sees them, kept for versions with an autoscaling
    # policy: the signal a Kubernetes HPA or KEDA scales the pods on.
    latency_stats: ReplicaStatsRecorder | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


def create_runtime(
    model: ModelConfig, version: ModelVersionConfig, metrics: ServerMetrics
) -> Runtime:
    """The runtime the config names for one model version."""
    label = f"{model.name}:{version.version}"
    if model.triton is not None and model.runtime == "triton":
        t = model.triton
        options = TritonOptions(
            url=t.url,
            model_name=t.model_name or model.name,
            model_version=t.model_version,
            timeout_s=t.timeout_s,
            connect_timeout_s=t.connect_timeout_s,
            max_attempts=t.max_attempts,
            backoff_initial_s=t.backoff_initial_s,
            backoff_max_s=t.backoff_max_s,
            breaker_failures=t.breaker_failures,
            breaker_open_s=t.breaker_open_s,
        )
        breaker_gauge = metrics.circuit_state.labels(model.name, version.version)
        breaker_gauge.set(0)
        return TritonModel(options, label, on_breaker_change=breaker_gauge.set)
    assert version.path is not None  # the config requires it for onnxruntime
    # The batcher runs up to instance_count batches at once; the runtime needs as many threads.
    ort_options = model.runtime_options.to_runtime_options(model.batching.instance_count)
    return OnnxRuntimeModel(version.path, ort_options, label)


def has_batch_dimension(signature: ModelSignature) -> bool:
    """Every input and output starts with a variable dimension that rows can stack on."""
    tensors = (*signature.inputs, *signature.outputs)
    return all(spec.shape and spec.shape[0] == -1 for spec in tensors)


def max_batch_size(model: ModelConfig, signature: ModelSignature) -> int:
    """Rows per batch: as configured, else the default for a batchable model, never more
    than the runtime takes; 0 where Triton is left to batch."""
    if model.triton is not None and model.runtime == "triton" and model.triton.batching == "triton":
        return 0
    configured = model.batching.max_batch_size
    batchable = has_batch_dimension(signature)
    limit = signature.max_batch_size
    if configured is None:
        size = AUTO_MAX_BATCH_SIZE if batchable else 0
        return min(size, limit) if limit is not None else size
    if configured > 0 and not batchable:
        raise ModelLoadError(
            f"model '{model.name}': batching.max_batch_size is {configured}, but not every "
            "input and output has a variable first (batch) dimension; set it to 0"
        )
    if limit is not None and configured > limit:
        raise ModelLoadError(
            f"model '{model.name}': batching.max_batch_size {configured} is over the "
            f"runtime's limit of {limit}"
        )
    return configured


def load_model_version(
    model: ModelConfig, version: ModelVersionConfig, metrics: ServerMetrics
) -> LoadedModel:
    """Load one version's runtime and put its dynamic batcher (not started) in front of it;
    ModelLoadError when it cannot be served."""
    runtime = create_runtime(model, version, metrics)
    try:
        signature = runtime.load()
        options = model.batching.to_options(max_batch_size(model, signature))
    except ModelLoadError:
        runtime.close()
        raise
    label = f"{model.name}:{version.version}"
    batcher = DynamicBatcher(
        runtime,
        options,
        [spec.name for spec in signature.outputs],
        label,
        observer=metrics.batch_observer(model.name, version.version),
    )
    log.info(
        "loaded %s (%s, max_batch_size %d, max_queue_delay_us %d)",
        label,
        signature.platform,
        options.max_batch_size,
        options.max_queue_delay_us,
    )
    stats = ReplicaStatsRecorder(model.ray.look_back_period_s) if model.autoscaling else None
    return LoadedModel(model.name, version.version, signature, runtime, batcher, stats)


# Loads one configured version: load_model_version in process; the Ray host's ingress
# loads a stand-in that forwards to the version's own deployment.
VersionLoader = Callable[[ModelConfig, ModelVersionConfig], LoadedModel]


class ModelRepository:
    """Loads every configured model version at start and looks them up by name and version."""

    def __init__(
        self,
        models: list[ModelConfig],
        metrics: ServerMetrics,
        loader: VersionLoader | None = None,
    ) -> None:
        self._configs = {model.name: model for model in models}
        self._loader = loader or functools.partial(load_model_version, metrics=metrics)
        self._loaded: dict[tuple[str, str], LoadedModel] = {}

    def load_all(self) -> None:
        """Load every version; raises one ModelLoadError listing every model that failed."""
        failures = []
        for model in self._configs.values():
            for version in model.versions:
                try:
                    loaded = self._loader(model, version)
                except ModelLoadError as exc:
                    failures.append(str(exc))
                    continue
                self._loaded[(model.name, version.version)] = loaded
        if failures:
            for loaded in self._loaded.values():
                loaded.runtime.close()
            self._loaded.clear()
            raise ModelLoadError("; ".join(failures))

    async def start(self) -> None:
        for loaded in self._loaded.values():
            await loaded.batcher.start()

    async def close(self, drain: bool = True) -> None:
        """Finish (drain) or fail what is queued, then release every runtime."""
        for loaded in self._loaded.values():
            await loaded.batcher.close(drain)
            await loaded.runtime.aclose()
        self._loaded.clear()

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The model version asked for, or its default version when `version` is empty."""
        config = self._configs.get(name)
        if config is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise NotFound(f"model '{name}' not found (models served: {known})")
        key = (name, version or config.served_default_version)
        loaded = self._loaded.get(key)
        if loaded is None:
            versions = ", ".join(self.versions(name))
            raise NotFound(f"model '{name}' has no version '{version}' (versions: {versions})")
        return loaded

    def has_model(self, name: str) -> bool:
        return name in self._configs

    def versions(self, name: str) -> list[str]:
        return [v.version for v in self._configs[name].versions]

    def models(self) -> list[LoadedModel]:
        return list(self._loaded.values())

"""The served models: one runtime and one dynamic batcher per loaded model version.

What is served is one immutable catalog (model name -> its config and loaded versions),
replaced in one assignment: a request looks a version up once and keeps it, so a swap never
shows it half a change. Versions load beside the ones serving (in a thread: an ONNX Runtime
session takes the loop for as long as it builds) and retire after the swap: no new request
reaches them, the requests that hold them finish, their batchers drain, then they are freed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.base import ModelSignature, Runtime
from switchyard.runtimes.batcher import BatchingOptions, DynamicBatcher
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import ModelLoadError, NotFound, ResourceExhausted
from switchyard.runtimes.ort_runtime import OnnxRuntimeModel
from switchyard.runtimes.triton_runtime import TritonModel, TritonOptions
from switchyard.server.autoscaling.replica_stats import ReplicaStatsRecorder
from switchyard.server.config import AUTO_MAX_BATCH_SIZE, ModelConfig, ModelVersionConfig
from switchyard.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


class InFlight:
    """Requests holding a model version now: it is freed only once they are done."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.count:
            self._idle = asyncio.Event()
            await self._idle.wait()


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
    # What it was loaded from: a version loaded again from the same settings is reused.
    source: ModelVersionConfig | None = None
    file_stamp: tuple[int, int] | None = None  # its model file's size and mtime at load
    size_bytes: int = 0  # of its model file: what the memory budget counts
    in_flight: InFlight = field(default_factory=InFlight, compare=False)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


# gRPC's message lengths are signed 32-bit integers.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1


def triton_message_bytes(model: ModelConfig, max_request_size_bytes: int) -> int:
    """The largest message on a model's Triton channel, either way: one batch, which is up
    to max_batch_size requests of at most max_request_size_bytes each where the gateway
    batches, and one request where Triton does (requests pass one by one)."""
    assert model.triton is not None
    configured = model.batching.max_batch_size
    if model.triton.batching == "triton":
        requests = 1
    else:
        requests = AUTO_MAX_BATCH_SIZE if configured is None else max(configured, 1)
    return min(requests * max_request_size_bytes, GRPC_MAX_MESSAGE_BYTES)


def create_runtime(
    model: ModelConfig,
    version: ModelVersionConfig,
    metrics: ServerMetrics,
    *,
    max_request_size_bytes: int | None = None,
) -> Runtime:
    """The runtime the config names for one model version. `max_request_size_bytes`: the
    server's, which sizes a Triton channel's messages (None: the channel's default)."""
    label = f"{model.name}:{version.version}"
    if model.triton is not None and model.runtime == "triton":
        t = model.triton
        sizes = (
            {}
            if max_request_size_bytes is None
            else {"max_message_bytes": triton_message_bytes(model, max_request_size_bytes)}
        )
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
            tls_ca_file=None if t.tls is None else t.tls.ca_file,
            tls_cert_file=None if t.tls is None else t.tls.cert_file,
            tls_key_file=None if t.tls is None else t.tls.key_file,
            **sizes,
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


def batching_options(model: ModelConfig, signature: ModelSignature) -> BatchingOptions:
    """The batcher's options at the batch size in force (max_batch_size); ModelLoadError
    when batching.preferred_batch_sizes cannot fit it, which only the loaded model tells."""
    rows = max_batch_size(model, signature)
    over = [size for size in model.batching.preferred_batch_sizes if size > rows]
    if over:
        why = (
            "batching is off for it (it has no batch dimension, or Triton batches it); remove them"
            if rows == 0
            else f"its max_batch_size in force is {rows}; keep them at most {rows}"
        )
        raise ModelLoadError(
            f"model '{model.name}': batching.preferred_batch_sizes {over} cannot be formed: {why}"
        )
    try:
        return model.batching.to_options(rows)
    except ValueError as exc:  # the config's own checks ran at a provisional batch size
        raise ModelLoadError(f"model '{model.name}': {exc}") from None


def load_model_version(
    model: ModelConfig,
    version: ModelVersionConfig,
    metrics: ServerMetrics,
    *,
    max_request_size_bytes: int | None = None,
) -> LoadedModel:
    """Load one version's runtime and put its dynamic batcher (not started) in front of it;
    ModelLoadError when it cannot be served. `max_request_size_bytes`: the server's."""
    runtime = create_runtime(model, version, metrics, max_request_size_bytes=max_request_size_bytes)
    try:
        signature = runtime.load()
        options = batching_options(model, signature)
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


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model as served: its config, its loaded versions in the config's order, and what
    its source said beyond our config (a config.pbtxt as read, the fields it ignored)."""

    config: ModelConfig
    versions: Mapping[str, LoadedModel]
    triton_config: pb.ModelConfig | None = None
    warnings: tuple[str, ...] = ()

    @property
    def default(self) -> LoadedModel:
        return self.versions[self.config.served_default_version]


Catalog = Mapping[str, ServedModel]


class ModelRepository:
    """The catalog this process serves, and the steps that change it (server/model_control.py
    orders them): `prepare` loads versions beside the catalog, `publish` swaps it, `retire`
    drains and frees versions that left it."""

    def __init__(
        self,
        metrics: ServerMetrics,
        loader: VersionLoader | None = None,
        *,
        memory_budget_bytes: int | None = None,
        max_request_size_bytes: int | None = None,
    ) -> None:
        """`max_request_size_bytes`: the server's, for the default loader (load_model_version)."""
        self._loader = loader or functools.partial(
            load_model_version, metrics=metrics, max_request_size_bytes=max_request_size_bytes
        )
        self._metrics = metrics.models
        self._budget_bytes = memory_budget_bytes
        self._catalog: Catalog = {}
        self._started = False

    # Reading: the serving path ---------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The model version asked for, or its default version when `version` is empty."""
        served = self._catalog.get(name)
        if served is None:
            known = ", ".join(sorted(self._catalog)) or "none"
            raise NotFound(f"model '{client_text(name)}' not found (models served: {known})")
        if not version:
            return served.default
        loaded = served.versions.get(version)
        if loaded is None:
            versions = ", ".join(served.versions)
            raise NotFound(
                f"model '{client_text(name)}' has no version '{client_text(version)}' "
                f"(versions: {versions})"
            )
        return loaded

    def served(self, name: str) -> ServedModel:
        self.get(name)  # NotFound, with the same message
        return self._catalog[name]

    def has_model(self, name: str) -> bool:
        return name in self._catalog

    def versions(self, name: str) -> list[str]:
        return list(self._catalog[name].versions)

    def models(self) -> list[LoadedModel]:
        return [loaded for served in self._catalog.values() for loaded in served.versions.values()]

    @property
    def loaded_bytes(self) -> int:
        return sum(loaded.size_bytes for loaded in self.models())

    # Changing ----------------------------------------------------------------------------

    async def prepare(
        self,
        model: ModelConfig,
        *,
        triton_config: pb.ModelConfig | None = None,
        warnings: tuple[str, ...] = (),
    ) -> tuple[ServedModel, list[LoadedModel]]:
        """`model` as it would be served, and the versions loaded for it (batchers started),
        beside what is served now. A served version with the same settings and an unchanged
        file is reused. Nothing is published; on ModelLoadError or over the
        memory budget (ResourceExhausted) what this loaded is freed again."""
        current = self._catalog.get(model.name)
        reusable = {} if current is None else dict(current.versions)
        versions: dict[str, LoadedModel] = {}
        to_load = []
        for version in model.versions:
            kept = reusable.get(version.version)
            if kept is not None and _same_settings(kept, version, model, current):
                versions[version.version] = kept
            else:
                to_load.append(version)
        self._check_budget(model, to_load)
        loaded: list[LoadedModel] = []
        try:
            for version in to_load:
                new = await asyncio.to_thread(self._load_version, model, version)
                loaded.append(new)
                if self._started:
                    await new.batcher.start()
                versions[version.version] = new
        except BaseException:
            self._metrics.loads.labels(model.name, "failed").inc()
            await self.retire(loaded, count=False)
            raise
        ordered = {v.version: versions[v.version] for v in model.versions}
        return ServedModel(model, ordered, triton_config, warnings), loaded

    def publish(self, catalog: Catalog) -> None:
        """Serve `catalog` from the next request on (one assignment)."""
        self._catalog = dict(catalog)

    async def retire(self, versions: Iterable[LoadedModel], *, count: bool = True) -> None:
        """Free versions no longer in the catalog: wait for the requests holding them, run
        what their batchers hold, then release their runtimes. `count=False`: versions of a
        change that did not happen (never served), not counted as unloads."""
        for loaded in versions:
            await loaded.in_flight.wait_idle()
            await loaded.batcher.close(drain=True)
            await loaded.runtime.aclose()
            served = self._catalog.get(loaded.name)
            if served is None or loaded.version not in served.versions:  # not replaced
                self._metrics.version_unloaded(loaded.name, loaded.version)
            if count:
                self._metrics.loads.labels(loaded.name, "unloaded").inc()
                log.info("unloaded %s", loaded.label)

    async def start(self) -> None:
        self._started = True
        for loaded in self.models():
            await loaded.batcher.start()

    async def close(self, drain: bool = True) -> None:
        """Finish (drain) or fail what is queued, then release every runtime."""
        models, self._catalog = self.models(), {}
        for loaded in models:
            await loaded.batcher.close(drain)
            await loaded.runtime.aclose()

    def _load_version(self, model: ModelConfig, version: ModelVersionConfig) -> LoadedModel:
        started_s = time.perf_counter()
        loaded = self._loader(model, version)
        stamp = _file_stamp(version.path)
        size_bytes = stamp[0] if stamp is not None else 0
        self._metrics.loads.labels(model.name, "loaded").inc()
        self._metrics.version_loaded(
            model.name, version.version, time.perf_counter() - started_s, size_bytes
        )
        return LoadedModel(
            loaded.name,
            loaded.version,
            loaded.signature,
            loaded.runtime,
            loaded.batcher,
            loaded.latency_stats,
            source=version,
            file_stamp=stamp,
            size_bytes=size_bytes,
        )

    def _check_budget(self, model: ModelConfig, versions: list[ModelVersionConfig]) -> None:
        if self._budget_bytes is None or not versions:
            return
        # Until the swap the versions being replaced still hold their memory: both count.
        wanted = sum(_file_bytes(v.path) for v in versions)
        held = self.loaded_bytes
        if held + wanted > self._budget_bytes:
            self._metrics.loads.labels(model.name, "refused").inc()
            raise ResourceExhausted(
                f"loading model '{model.name}' needs {wanted} bytes beside the {held} loaded; "
                f"server.model_memory_budget_bytes is {self._budget_bytes}: unload a model first"
            )


def _same_settings(
    loaded: LoadedModel,
    version: ModelVersionConfig,
    model: ModelConfig,
    current: ServedModel | None,
) -> bool:
    """A served version can stay as it is: same version entry and file, same model-wide
    settings."""
    if current is None or loaded.source != version:
        return False
    if loaded.file_stamp != _file_stamp(version.path):
        return False
    model_wide = {"versions", "default_version"}
    return current.config.model_dump(exclude=model_wide) == model.model_dump(exclude=model_wide)


def _file_stamp(path: Path | None) -> tuple[int, int] | None:
    """Size and modification time of a model file; None without one (a Triton runtime)."""
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return None
    return None if stat is None else (stat.st_size, stat.st_mtime_ns)


def _file_bytes(path: Path | None) -> int:
    stamp = _file_stamp(path)
    return stamp[0] if stamp is not None else 0

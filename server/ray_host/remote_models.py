"""The ingress's stand-ins for model versions that run in their own deployments.

The ingress serves the standalone host's DataPlane and RoutingService unchanged, over a
ModelRepository whose versions are loaded by `remote_loader`: each LoadedModel holds a
HandleRuntime, which forwards to the version's deployment handle, behind a pass-through
batcher (the variant batches; the ingress only queues and checks deadlines).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import numpy as np
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from switchyard.runtimes import tracing
from switchyard.runtimes.base import ModelSignature, Runtime
from switchyard.runtimes.batcher import BatchingOptions, DynamicBatcher
from switchyard.runtimes.errors import (
    DeadlineExceeded,
    ModelLoadError,
    ResourceExhausted,
    SwitchyardError,
    Unavailable,
)
from switchyard.server.config import ModelConfig, ModelVersionConfig
from switchyard.server.ray_host.deployments import variant_name
from switchyard.server.ray_host.variant import VariantInfo, VariantReplica
from switchyard.server.repository import LoadedModel, VersionLoader

# Requests the ingress forwards to one version at once, and waiting ones beyond that. Far
# above what one ingress replica takes (INGRESS_MAX_ONGOING_REQUESTS): Serve's limits on the
# variant (max_ongoing_requests, max_queued_requests) are the ones that shed load.
PASS_THROUGH_CONCURRENCY = 4096
PASS_THROUGH_OPTIONS = BatchingOptions(
    max_batch_size=0,
    max_queue_delay_us=0,
    max_queue_size=PASS_THROUGH_CONCURRENCY,
    instance_count=PASS_THROUGH_CONCURRENCY,
)
# A readiness probe waits no longer than this for the variant (a handle call waits for a
# replica as long as it takes: none may be running).
READY_TIMEOUT_S = 5.0


class HandleRuntime(Runtime):
    """A model version served by its variant deployment, reached through its handle."""

    def __init__(
        self, handle: DeploymentHandle[VariantReplica], signature: ModelSignature, label: str
    ) -> None:
        self._handle = handle
        self._signature = signature  # asked once at start: metadata needs no round trip
        self._label = label

    def load(self) -> ModelSignature:
        return self._signature

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        deadline_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        timeout_s = None
        if deadline_s is not None:
            timeout_s = deadline_s - time.monotonic()
            if timeout_s <= 0:
                raise DeadlineExceeded(f"model '{self._label}': the deadline passed")
        try:
            # Ray types a handle call's result as Any: VariantReplica.infer returns this.
            # The trace context goes as an argument: Serve's request context has no field
            # for it, and the variant makes its spans children of this call's span.
            outputs: dict[str, np.ndarray] = await self._handle.infer.remote(
                dict(inputs), timeout_s, tracing.outgoing_headers() or None
            )
            return outputs
        except RayTaskError as exc:
            # A variant's own errors arrive wrapped, their message a remote traceback: pass
            # on the original, written for the caller; anything else stays internal.
            if isinstance(exc.cause, SwitchyardError):
                raise exc.cause from None
            raise
        except BackPressureError as exc:
            raise ResourceExhausted(
                f"model '{self._label}': too many requests wait for a replica "
                f"({exc.message}); retry later"
            ) from None
        except (DeploymentUnavailableError, RayActorError):
            raise Unavailable(f"model '{self._label}' is unavailable; retry later") from None

    async def ready(self) -> bool:
        try:
            return await asyncio.wait_for(self._handle.ready.remote(), READY_TIMEOUT_S)
        except Exception:  # a variant that cannot answer (in time) is not ready
            return False


class RemoteBatcher(DynamicBatcher):
    """The pass-through batcher of a remote version. It reports the variant's max_batch_size,
    the rows the model takes per batch, so that the data plane splits oversized requests and
    the ModelConfig RPC answers as they do standalone."""

    def __init__(self, runtime: HandleRuntime, info: VariantInfo, label: str) -> None:
        outputs = [spec.name for spec in info.signature.outputs]
        super().__init__(runtime, PASS_THROUGH_OPTIONS, outputs, label)
        self._variant_max_batch_size = info.max_batch_size

    @property
    def max_batch_size(self) -> int:
        return self._variant_max_batch_size


def remote_loader(
    handles: Mapping[str, DeploymentHandle[VariantReplica]], infos: Mapping[str, VariantInfo]
) -> VersionLoader:
    """Loads each version as its HandleRuntime; both mappings are keyed by variant_name."""

    def load(model: ModelConfig, version: ModelVersionConfig) -> LoadedModel:
        name = variant_name(model.name, version.version)
        info = infos.get(name)
        if info is None:
            raise ModelLoadError(
                f"model '{model.name}' version '{version.version}' would run in a Ray "
                "deployment of its own (ray.placement: deployment), which only a redeploy "
                "creates; give the model ray.placement: ingress to load it while serving"
            )
        runtime = HandleRuntime(handles[name], info.signature, name)
        batcher = RemoteBatcher(runtime, info, name)
        return LoadedModel(model.name, version.version, info.signature, runtime, batcher)

    return load

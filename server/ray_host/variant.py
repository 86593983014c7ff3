"""One model version as a Ray Serve deployment: its runtime and dynamic batcher, built exactly
as the standalone repository builds them, and the latency stats its autoscaling policy reads.

The ingress reaches a variant through its deployment handle (remote_models.HandleRuntime);
Serve's router spreads the calls over the variant's replicas, at most max_ongoing_requests at
once on each, so one replica's batches merge at most that many requests. Each replica times
its requests in a ReplicaStatsRecorder and hands Serve a snapshot whenever Serve collects
custom autoscaling metrics (`record_autoscaling_stats`); the latency policy, installed as the
deployment's custom autoscaling policy (deployments.py), reads them on the controller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from switchyard.runtimes import tracing
from switchyard.runtimes.base import ModelSignature
from switchyard.server.autoscaling.ray_adapter import to_autoscaling_metrics
from switchyard.server.autoscaling.replica_stats import ReplicaStatsRecorder
from switchyard.server.config import ModelConfig
from switchyard.server.metrics import ServerMetrics
from switchyard.server.repository import load_model_version
from switchyard.server.tracing import TracingSettings, configure_tracing


@dataclass(frozen=True, slots=True)
class VariantInfo:
    """What the ingress needs to serve a version's metadata without asking it each time."""

    signature: ModelSignature
    max_batch_size: int  # rows per batch at the variant (0: batching off)


class VariantReplica:
    """The class behind each variant deployment (app.py wraps it with serve.deployment)."""

    # Serve awaits an async constructor (below); mypy knows only a None-returning __init__.
    async def __init__(  # type: ignore[misc]
        self,
        model: ModelConfig,
        version: str,
        max_request_size_bytes: int | None = None,
        tracing_settings: TracingSettings | None = None,
    ) -> None:
        """Serve awaits an async constructor on the loop that later runs the requests, which
        is the loop the batcher's scheduler task must live on."""
        # Each replica is a process of its own: its spans need a provider of its own.
        configure_tracing(tracing_settings or TracingSettings())
        version_config = next(v for v in model.versions if v.version == version)
        # Batch metrics go to a registry of the replica's own: Serve exports its own
        # per-deployment metrics, and one replica has no port of its own to serve ours on.
        self._loaded = load_model_version(
            model, version_config, ServerMetrics(), max_request_size_bytes=max_request_size_bytes
        )
        await self._loaded.batcher.start()
        # A replica's percentiles cover the period Serve averages its reports over.
        self._stats = ReplicaStatsRecorder(window_s=model.ray.look_back_period_s)

    def info(self) -> VariantInfo:
        return VariantInfo(self._loaded.signature, self._loaded.batcher.max_batch_size)

    async def ready(self) -> bool:
        return await self._loaded.runtime.ready()

    async def infer(
        self,
        inputs: dict[str, np.ndarray],
        timeout_s: float | None = None,
        trace_headers: dict[str, str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every output of the model for `inputs`, through the batcher. The caller's deadline
        comes as a duration: monotonic clocks are not shared between machines.
        `trace_headers`: the ingress's W3C traceparent / tracestate, the parent of the spans
        made here (when this replica traces)."""
        started_s = time.monotonic()
        deadline_s = None if timeout_s is None else started_s + timeout_s
        self._stats.request_started()
        try:
            with (
                tracing.remote_parent(trace_headers),
                tracing.span("variant.infer", {"switchyard.model": self._loaded.name}),
            ):
                return await self._loaded.batcher.infer(inputs, deadline_s)
        finally:
            self._stats.request_finished(time.monotonic() - started_s)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metrics hook: this replica's recent latency stats."""
        return to_autoscaling_metrics(self._stats.snapshot())

    async def __del__(self) -> None:
        """Serve's shutdown hook: finish what is queued, then release the runtime."""
        await self._loaded.batcher.close(drain=True)
        await self._loaded.runtime.aclose()

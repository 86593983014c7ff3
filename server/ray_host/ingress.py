"""The ingress deployment: the standalone host's data plane and router behind Serve's proxies.

gRPC: Serve's gRPC proxy, with our generated servicers registered through its gRPC options,
calls the ingress method named like each RPC with the request message and a
RayServegRPCContext. Those methods run the standalone servicers themselves (InferenceServicer,
RecommendServicer) through `_RayCallContext`, which gives them the grpc.aio context they
expect: their errors become statuses set on Serve's context, and the reply is then the RPC's
empty message, as Serve wants (raising instead would log each client error as a crash).

REST: Serve's HTTP proxy hands ASGI requests to the app `__serve_build_asgi_app__` returns:
the standalone RestApp, admin API and Recommend included, and GET /metrics: the replica's
own Switchyard metrics in Prometheus' text format (a replica has no port of its own for
them; under direct ingress each replica's HTTP port is scrapeable on its own).

Models: a ModelRepository whose co-located versions (`ray.placement: ingress`) are loaded
here as standalone loads them (runtime and batcher in this replica: no second Serve hop),
and whose other versions forward to their variant deployments (remote_models.py), so that
the data plane, routing service and inference entry point run unchanged: endpoints answer
ModelReady, ModelMetadata and ModelConfig as they do standalone.

Autoscaling: when a co-located model autoscales, the ingress deployment carries its latency
policy (deployments.ingress_policy_model) and each replica reports that model's latency
stats, recorded by the data plane as standalone records them, to Serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message
from prometheus_client import make_asgi_app
from ray.serve.handle import DeploymentHandle

from switchyard.protos import open_inference_pb2 as pb
from switchyard.protos import recommend_pb2 as recommend_pb
from switchyard.server.autoscaling.latency_policy import ReplicaStats
from switchyard.server.autoscaling.ray_adapter import to_autoscaling_metrics
from switchyard.server.config import ModelConfig, ModelVersionConfig, SwitchyardConfig
from switchyard.server.feedback import FeedbackStatsCollector
from switchyard.server.gateway_core import GatewayCore
from switchyard.server.metrics import ServerMetrics
from switchyard.server.ray_host.deployments import ingress_policy_model
from switchyard.server.ray_host.remote_models import remote_loader
from switchyard.server.repository import (
    LoadedModel,
    ModelRepository,
    VersionLoader,
    load_model_version,
)
from switchyard.server.rest_ingress import Receive, RestApp, Scope, Send

log = logging.getLogger(__name__)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _RayCallContext:
    """Serve's RayServegRPCContext as the CallContext our servicers use."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        metadata: Sequence[tuple[str, str | bytes]] = self._context.invocation_metadata()
        return metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._context.set_trailing_metadata(list(metadata))  # Serve's appends to a list

    def time_remaining(self) -> float | None:
        # Serve's proxy does not pass the client's deadline on; Triton's `timeout` request
        # parameter and gRPCOptions.request_timeout_s still apply.
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Aborted(code, details)  # grpc.aio's abort raises too: nothing runs after it


Rpc = Callable[[Any, Any], Awaitable[Message]]
METRICS_PATH = "/metrics"


class RestWithMetrics:
    """The REST app, with GET /metrics answered from the replica's metrics registry."""

    def __init__(self, rest: RestApp, metrics: ServerMetrics) -> None:
        self._rest = rest
        self._metrics: Callable[[Scope, Receive, Send], Awaitable[None]] = make_asgi_app(
            metrics.registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await self._metrics(scope, receive, send)
        else:
            await self._rest(scope, receive, send)


def ingress_loader(
    remote: VersionLoader, metrics: ServerMetrics, max_request_size_bytes: int | None = None
) -> VersionLoader:
    """Co-located versions load here, as standalone; the others through `remote`."""

    def load(model: ModelConfig, version: ModelVersionConfig) -> LoadedModel:
        if model.ray_placement == "ingress":
            return load_model_version(
                model, version, metrics, max_request_size_bytes=max_request_size_bytes
            )
        return remote(model, version)

    return load


def merged_stats(snapshots: Sequence[ReplicaStats]) -> ReplicaStats:
    """One model's stats over its versions in this replica: the worst latency among versions
    that served, the requests of all of them."""
    serving = [s for s in snapshots if s.request_rate_per_s > 0] or list(snapshots)
    p99 = [s.p99_latency_s for s in serving if s.p99_latency_s is not None]
    return ReplicaStats(
        p95_latency_s=max(s.p95_latency_s for s in serving),
        p99_latency_s=max(p99) if p99 else None,
        request_rate_per_s=sum(s.request_rate_per_s for s in snapshots),
        in_flight=sum(s.in_flight for s in snapshots),
    )


class IngressReplica:
    """The class behind the ingress deployment (app.py wraps it with serve.ingress and
    serve.deployment). `variants` maps the variant_name of each version of a deployed model
    (placement deployment) to its deployment handle."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        config: SwitchyardConfig,
        variants: dict[str, DeploymentHandle[Any]],
        config_path: str | None = None,
    ) -> None:
        # Each version's signature, asked once: metadata RPCs then need no round trip.
        infos = await asyncio.gather(*(handle.info.remote() for handle in variants.values()))
        self._max_request_size_bytes = config.server.max_request_size_bytes
        # This replica's requests, routing and co-located batchers; served on GET /metrics.
        metrics = ServerMetrics()
        remote = remote_loader(variants, dict(zip(variants, infos, strict=True)))
        loader = ingress_loader(remote, metrics, self._max_request_size_bytes)
        policy_model = ingress_policy_model(config)
        self._policy_model = None if policy_model is None else policy_model.name
        self.core = GatewayCore(
            config,
            Path(config_path) if config_path is not None else None,
            metrics,
            ModelRepository(
                metrics, loader, memory_budget_bytes=config.server.model_memory_budget_bytes
            ),
        )
        metrics.registry.register(FeedbackStatsCollector(self.core.feedback.stats))
        self._oip = self.core.oip_servicer()
        self._recommend = self.core.recommend_servicer()
        self._rest = RestWithMetrics(self.core.rest_app(), metrics)
        await self.core.start()
        log.info("switchyard ingress ready: %d model versions", len(self.core.repository.models()))

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metrics hook (used where the ingress carries a latency
        policy): the policy model's recent latency stats in this replica."""
        snapshots = [
            loaded.latency_stats.snapshot()
            for loaded in self.core.repository.models()
            if loaded.name == self._policy_model and loaded.latency_stats is not None
        ]
        return to_autoscaling_metrics(merged_stats(snapshots)) if snapshots else {}

    def __serve_build_asgi_app__(self) -> RestWithMetrics:
        return self._rest

    # gRPC: Serve's proxy calls these by RPC name, passing `grpc_context` by keyword.

    async def ServerLive(self, request: Message, grpc_context: Any) -> Message:
        return await self._grpc(self._oip.ServerLive, request, grpc_context, pb.ServerLiveResponse)

    async def ServerReady(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.ServerReady
        return await self._grpc(rpc, request, grpc_context, pb.ServerReadyResponse)

    async def ModelReady(self, request: Message, grpc_context: Any) -> Message:
        return await self._grpc(self._oip.ModelReady, request, grpc_context, pb.ModelReadyResponse)

    async def ServerMetadata(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.ServerMetadata
        return await self._grpc(rpc, request, grpc_context, pb.ServerMetadataResponse)

    async def ModelMetadata(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.ModelMetadata
        return await self._grpc(rpc, request, grpc_context, pb.ModelMetadataResponse)

    async def ModelConfig(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.ModelConfig
        return await self._grpc(rpc, request, grpc_context, pb.ModelConfigResponse)

    async def ModelInfer(self, request: Message, grpc_context: Any) -> Message:
        return await self._grpc(self._oip.ModelInfer, request, grpc_context, pb.ModelInferResponse)

    async def RepositoryIndex(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.RepositoryIndex
        return await self._grpc(rpc, request, grpc_context, pb.RepositoryIndexResponse)

    async def RepositoryModelLoad(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.RepositoryModelLoad
        return await self._grpc(rpc, request, grpc_context, pb.RepositoryModelLoadResponse)

    async def RepositoryModelUnload(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._oip.RepositoryModelUnload
        return await self._grpc(rpc, request, grpc_context, pb.RepositoryModelUnloadResponse)

    async def Recommend(self, request: Message, grpc_context: Any) -> Message:
        rpc = self._recommend.Recommend
        return await self._grpc(rpc, request, grpc_context, recommend_pb.RecommendResponse)

    async def _grpc(
        self, rpc: Rpc, request: Message, grpc_context: Any, empty: type[Message]
    ) -> Message:
        # Serve's proxy takes messages up to 2 GiB; hold them to our limit as standalone does.
        size_bytes = request.ByteSize()
        if size_bytes > self._max_request_size_bytes:
            grpc_context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            grpc_context.set_details(
                f"request of {size_bytes} bytes is over the maximum of "
                f"{self._max_request_size_bytes} bytes"
            )
            return empty()
        try:
            return await rpc(request, _RayCallContext(grpc_context))
        except _Aborted as aborted:
            grpc_context.set_code(aborted.code)
            grpc_context.set_details(aborted.details)
            return empty()

    async def __del__(self) -> None:
        """Serve's shutdown hook: stop taking requests, finish those in flight, release."""
        await self.core.stop()

"""The standalone host: gRPC, REST and metrics served from one asyncio (uvloop) process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop

from switchyard.protos import open_inference_pb2, recommend_pb2
from switchyard.protos.recommend_pb2_grpc import add_RecommenderServicer_to_server
from switchyard.server.autoscaling.metrics import AutoscalingSignals
from switchyard.server.config import SwitchyardConfig
from switchyard.server.feedback import FeedbackStatsCollector, FeedbackStatsExport
from switchyard.server.gateway_core import GatewayCore
from switchyard.server.grpc_drain import GrpcDrain
from switchyard.server.grpc_health import HEALTH_PROTO_FILE, GatewayHealth, add_health_to_server
from switchyard.server.grpc_ingress import create_grpc_server
from switchyard.server.grpc_reflection import add_reflection_to_server
from switchyard.server.http_serving import (
    HttpServer,
    metrics_limits,
    raise_open_files_limit,
    rest_limits,
)
from switchyard.server.metrics import FeatureStatsCollector, FeatureStatsCounters, ServerMetrics
from switchyard.server.metrics_endpoint import MetricsEndpoint
from switchyard.server.repository import ModelRepository
from switchyard.server.rest_ingress import Receive, RestApp, Scope, Send
from switchyard.server.tls import TlsFiles, TlsSettings

log = logging.getLogger(__name__)
# grpc-core cancels calls still running this long after the grace; GrpcDrain answers them
# UNAVAILABLE at the grace itself.
GRPC_CANCEL_MARGIN_S = 1.0
GRPC_QUEUE_DRAIN_S = 0.5  # at most, of the grace, to answer calls queued in grpc-core
# The .proto files of the application services on the gRPC port (health adds its own).
SERVED_PROTO_FILES = (open_inference_pb2.DESCRIPTOR, recommend_pb2.DESCRIPTOR)


def bind_socket(
    host: str, port: int, *, share_port: bool = False, listen: bool = True
) -> socket.socket:
    """A listening TCP socket; binding here (not in uvicorn) makes a taken port an error.
    `share_port`: SO_REUSEPORT, so that every worker process listens on the port and the
    kernel spreads new connections over them; `listen=False` only holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    if listen:
        sock.listen(2048)
    sock.setblocking(False)
    return sock


def transport_security(tls: TlsSettings | None) -> str:
    """How a port is served, for the start-up log: plaintext, TLS or mTLS."""
    return "plaintext" if tls is None else tls.describe()


WORKER_HEADER = "x-switchyard-worker"


class _WorkerHeader:
    """Names the worker process that answered each REST response (x-switchyard-worker)."""

    def __init__(self, app: RestApp, worker: int) -> None:
        self._app = app
        self._header = (WORKER_HEADER.encode(), str(worker).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self._app(scope, receive, send_with_header)


class StandaloneServer:
    """Owns every part of one gateway process and starts and stops them in order.

    `worker`: this process is worker N of a supervisor (server/workers.py): it shares the
    gRPC and REST ports with the other workers, names itself in an x-switchyard-worker
    header and serves no metrics port (the supervisor serves everyone's)."""

    def __init__(
        self,
        config: SwitchyardConfig,
        config_path: Path | None = None,
        *,
        worker: int | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self.metrics = ServerMetrics()
        self.core = GatewayCore(
            config,
            config_path,
            self.metrics,
            ModelRepository(
                self.metrics,
                memory_budget_bytes=config.server.model_memory_budget_bytes,
                max_request_size_bytes=config.server.max_request_size_bytes,
            ),
        )
        self._feature_counters: FeatureStatsCounters | None = None
        self._feedback_export: FeedbackStatsExport | None = None
        if worker is None:
            self.metrics.registry.register(FeatureStatsCollector(self.core.feature_store.stats))
            self.metrics.registry.register(FeedbackStatsCollector(self.core.feedback.stats))
        else:
            stats = self.core.feature_store.stats
            self._feature_counters = FeatureStatsCounters(stats, self.metrics.registry)
            self._feedback_export = FeedbackStatsExport(
                self.core.feedback.stats, self.metrics.registry
            )
        self._feature_task: asyncio.Task[None] | None = None
        self._signals = AutoscalingSignals(self.metrics.registry)
        self._signal_task: asyncio.Task[None] | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._grpc_drain = GrpcDrain(self._shed_counter("grpc"))
        # Health and reflection are not guarded by the drain: probes see it as it is.
        self.health = GatewayHealth(
            service.full_name
            for file in SERVED_PROTO_FILES
            for service in file.services_by_name.values()
        )
        self._http_servers: list[HttpServer] = []
        self.http_port = self.grpc_port = self.metrics_port = 0

    def _shed_counter(self, protocol: str) -> Callable[[str], None]:
        def shed(reason: str) -> None:
            self.metrics.shed.labels(protocol, reason).inc()

        return shed

    async def start(self) -> None:
        settings = self.config.server
        open_files = raise_open_files_limit()
        # Before anything starts: files that do not load fail the start with their reason.
        tls = None if settings.tls is None else TlsFiles(settings.tls, "REST/gRPC")
        metrics_tls = None
        if settings.metrics_tls is not None and self.worker is None:
            metrics_tls = TlsFiles(settings.metrics_tls, "metrics")
        await self.core.start()
        shared = self.worker is not None
        self._grpc_server, self.grpc_port = create_grpc_server(
            self._grpc_drain.guard(self.core.oip_servicer()),
            settings.host,
            settings.grpc_port,
            settings.max_request_size_bytes,
            settings.max_concurrent_rpcs,
            share_port=shared,
            max_pending_wait_s=settings.grpc_max_pending_wait_s,
            credentials=None if tls is None else tls.grpc_credentials(),
        )
        add_RecommenderServicer_to_server(
            self._grpc_drain.guard(self.core.recommend_servicer()), self._grpc_server
        )
        add_health_to_server(self.health, self._grpc_server)
        add_reflection_to_server(self._grpc_server, (*SERVED_PROTO_FILES, HEALTH_PROTO_FILE))
        http_socket = bind_socket(settings.host, settings.http_port, share_port=shared)
        self.http_port = http_socket.getsockname()[1]
        rest_app: Callable[..., object] = self.core.rest_app()
        if self.worker is not None:
            rest_app = _WorkerHeader(self.core.rest_app(), self.worker)
        self._http_servers.append(
            HttpServer(
                rest_app,
                http_socket,
                rest_limits(settings, open_files),
                log_level=settings.log_level,
                shed=self._shed_counter("rest"),
                ssl_context=None if tls is None else tls.ssl_context(),
            )
        )
        metrics_host = settings.metrics_host or settings.host
        if self.worker is None:
            metrics_socket = bind_socket(metrics_host, settings.metrics_port)
            self.metrics_port = metrics_socket.getsockname()[1]
            self._http_servers.append(
                HttpServer(
                    MetricsEndpoint(self.metrics.registry),
                    metrics_socket,
                    metrics_limits(settings),
                    log_level=settings.log_level,
                    shed=self._shed_counter("metrics"),
                    ssl_context=None if metrics_tls is None else metrics_tls.ssl_context(),
                )
            )
        # Before any port answers: whoever sees the gateway ready sees its health SERVING.
        self.health.set_ready(self.core.inference.ready())
        await self._grpc_server.start()
        for server in self._http_servers:
            await server.start()
        self._signal_task = asyncio.create_task(self._export_autoscaling_signal_forever())
        if self.worker is None:
            log.info(
                "switchyard ready: REST on %s:%d (%s), gRPC on %s:%d (%s), metrics on %s:%d (%s)",
                settings.host, self.http_port, transport_security(settings.tls),
                settings.host, self.grpc_port, transport_security(settings.tls),
                metrics_host, self.metrics_port, transport_security(settings.metrics_tls),
            )  # fmt: skip
        else:
            self._feature_task = asyncio.create_task(self._sync_feature_counters_forever())
            log.info(
                "worker %d ready (pid %d): REST on %s:%d, gRPC on %s:%d (%s)",
                self.worker, os.getpid(), settings.host, self.http_port,
                settings.host, self.grpc_port, transport_security(settings.tls),
            )  # fmt: skip

    async def _stop_grpc(self, grace_s: float) -> None:
        if self._grpc_server is None:
            return
        await self._grpc_drain.drain_queue(min(GRPC_QUEUE_DRAIN_S, grace_s / 2))
        stopped = asyncio.create_task(self._grpc_server.stop(grace_s + GRPC_CANCEL_MARGIN_S))
        done, _ = await asyncio.wait({stopped}, timeout=grace_s)
        if not done:
            answered = self._grpc_drain.expire()
            if answered:
                log.warning(
                    "shutdown grace of %g s over: %d gRPC call(s) answered UNAVAILABLE",
                    grace_s, answered,
                )  # fmt: skip
        await stopped

    async def _sync_feature_counters_forever(self) -> None:
        """A worker's feature store counters reach its metrics files once a second."""
        assert self._feature_counters is not None
        while True:
            await asyncio.sleep(1.0)
            self._feature_counters.sync()
            if self._feedback_export is not None:
                self._feedback_export.sync()

    async def _export_autoscaling_signal_forever(self) -> None:
        """This pod's share of the replicas each autoscaled model version needs, for an HPA
        or KEDA rule (server/autoscaling/metrics.py says how to scale on it)."""
        policies = {
            m.name: m.autoscaling.to_policy_config()
            for m in self.config.models
            if m.autoscaling is not None
        }
        while True:
            await asyncio.sleep(self.config.server.autoscaling_signal_interval_s)
            try:
                for model in self.core.repository.models():
                    if model.latency_stats is not None:
                        stats = [model.latency_stats.snapshot()]
                        self._signals.export(model.name, model.version, policies[model.name], stats)
            except Exception:  # a broken export must not end the loop (the next one may work)
                log.exception("exporting the autoscaling signal failed")

    async def stop(self) -> None:
        """Stop taking requests, let in-flight ones finish within the grace period (gRPC and
        HTTP drain at the same time), answer the rest 503 / UNAVAILABLE, release."""
        self.health.start_drain()  # first: balancers watching the health service leave now
        self.core.inference.set_ready(False)
        for task in (self._signal_task, self._feature_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        grace_s = self.config.server.shutdown_grace_s
        await asyncio.gather(
            self._stop_grpc(grace_s), *(server.stop(grace_s) for server in self._http_servers)
        )
        await self.core.stop()
        if self._feature_counters is not None:
            self._feature_counters.sync()
        if self._feedback_export is not None:
            self._feedback_export.sync()
        log.info("switchyard stopped")


async def serve_until_signalled(
    config: SwitchyardConfig,
    config_path: Path | None,
    *,
    worker: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    server = StandaloneServer(config, config_path, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("signal received, shutting down")
    finally:
        await server.stop()


def run_standalone(config: SwitchyardConfig, config_path: Path | None = None) -> None:
    uvloop.run(serve_until_signalled(config, config_path))

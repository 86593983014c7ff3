"""The standalone host: gRPC, REST and metrics served from one asyncio (uvloop) process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import uvicorn
import uvloop
from prometheus_client import make_asgi_app

from switchyard.protos.recommend_pb2_grpc import add_RecommenderServicer_to_server
from switchyard.server.autoscaling.metrics import AutoscalingSignals
from switchyard.server.config import SwitchyardConfig
from switchyard.server.gateway_core import GatewayCore
from switchyard.server.grpc_ingress import create_grpc_server
from switchyard.server.metrics import FeatureStatsCollector, ServerMetrics
from switchyard.server.repository import ModelRepository

log = logging.getLogger(__name__)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: signals are the host's to handle, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; binding here (not in uvicorn) makes a taken port an error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class StandaloneServer:
    """Owns every part of one gateway process and starts and stops them in order."""

    def __init__(self, config: SwitchyardConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.core = GatewayCore(
            config, config_path, self.metrics, ModelRepository(config.models, self.metrics)
        )
        self.metrics.registry.register(FeatureStatsCollector(self.core.feature_store.stats))
        self._signals = AutoscalingSignals(self.metrics.registry)
        self._signal_task: asyncio.Task[None] | None = None
        self._grpc_server: grpc.aio.Server | None = None
        self._http_servers: list[_EmbeddedUvicorn] = []
        self._http_tasks: list[asyncio.Task[None]] = []
        self.http_port = self.grpc_port = self.metrics_port = 0

    async def start(self) -> None:
        settings = self.config.server
        await self.core.start()
        self._grpc_server, self.grpc_port = create_grpc_server(
            self.core.oip_servicer(),
            settings.host,
            settings.grpc_port,
            settings.max_request_size_bytes,
            settings.max_concurrent_rpcs,
        )
        add_RecommenderServicer_to_server(self.core.recommend_servicer(), self._grpc_server)
        http_socket = _bind(settings.host, settings.http_port)
        metrics_socket = _bind(settings.host, settings.metrics_port)
        self.http_port = http_socket.getsockname()[1]
        self.metrics_port = metrics_socket.getsockname()[1]
        await self._grpc_server.start()
        for app, sock in (
            (self.core.rest_app(), http_socket),
            (make_asgi_app(self.metrics.registry), metrics_socket),
        ):
            server = _EmbeddedUvicorn(
                uvicorn.Config(
                    app,
                    http="httptools",
                    lifespan="off",
                    access_log=False,
                    log_config=None,
                    log_level=settings.log_level,
                    timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
                )
            )
            self._http_servers.append(server)
            self._http_tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not all(server.started for server in self._http_servers):
            if any(task.done() for task in self._http_tasks):
                await asyncio.gather(*self._http_tasks)  # surfaces the start-up error
                raise RuntimeError("an HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        self._signal_task = asyncio.create_task(self._export_autoscaling_signal_forever())
        log.info(
            "switchyard ready: REST on %s:%d, gRPC on %s:%d, metrics on %s:%d",
            settings.host, self.http_port, settings.host, self.grpc_port,
            settings.host, self.metrics_port,
        )  # fmt: skip

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
        """Stop taking requests, let in-flight ones finish within the grace period, release."""
        self.core.inference.set_ready(False)
        if self._signal_task is not None:
            self._signal_task.cancel()
            await asyncio.gather(self._signal_task, return_exceptions=True)
        if self._grpc_server is not None:
            await self._grpc_server.stop(self.config.server.shutdown_grace_s)
        for server in self._http_servers:
            server.should_exit = True
        await asyncio.gather(*self._http_tasks, return_exceptions=True)
        await self.core.stop()
        log.info("switchyard stopped")


async def serve_until_signalled(config: SwitchyardConfig, config_path: Path | None) -> None:
    server = StandaloneServer(config, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        await stop.wait()
        log.info("signal received, shutting down")
    finally:
        await server.stop()


def run_standalone(config: SwitchyardConfig, config_path: Path | None = None) -> None:
    uvloop.run(serve_until_signalled(config, config_path))

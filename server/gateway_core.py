"""Everything behind the ingresses, the same on every host (standalone and Ray Serve):
models, data plane, router and its control plane, the inference entry point, features and
Recommend, admin API and config reloads. A host adds its transports around it and starts
and stops it.

Built bottom-up, each part given what it calls: the data plane (model versions), the
routing service (given the data plane's direct path), the entry point over both, and the
ingresses and Recommend over the entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from pathlib import Path

from switchyard.demo.paths import config_base_dir
from switchyard.router.router import Router
from switchyard.server.access import AccessControl
from switchyard.server.admin_api import AdminApi
from switchyard.server.audit_log import AuditLog, configured_audit_key
from switchyard.server.client_paths import name_folder
from switchyard.server.config import SwitchyardConfig, routing_table
from switchyard.server.config_reload import ConfigReloader
from switchyard.server.control.factory import create_control_store
from switchyard.server.control.plane import ControlPlane
from switchyard.server.dataplane import DataPlane
from switchyard.server.drift import DriftService
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.factory import create_store
from switchyard.server.feedback import FeedbackLog, FeedbackMetrics
from switchyard.server.grpc_ingress import InferenceServicer
from switchyard.server.inference import InferenceService
from switchyard.server.metrics import ServerMetrics
from switchyard.server.model_control import ModelControl
from switchyard.server.predictions import create_prediction_store
from switchyard.server.recommend import Recommender
from switchyard.server.recommend_ingress import RecommendServicer
from switchyard.server.repository import ModelRepository
from switchyard.server.repository_api import RepositoryApi
from switchyard.server.rest_ingress import RestApp
from switchyard.server.routing import RoutingService
from switchyard.server.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)


def replica_name() -> str:
    """This process among the replicas: host, pid and a random tail (pids repeat in pods)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class GatewayCore:
    def __init__(
        self,
        config: SwitchyardConfig,
        config_path: Path | None,
        metrics: ServerMetrics,
        repository: ModelRepository,
    ) -> None:
        self.config = config
        self.metrics = metrics
        # Client messages name files relative to these (server/client_paths.py).
        if config.model_repository.path is not None:
            name_folder(config.model_repository.path, "model repository")
        if config_path is not None:
            name_folder(config_base_dir(config_path), "config folder")
        self.repository = repository
        self.drift = (
            DriftService(config.drift, metrics.registry, lambda: repository.catalog)
            if config.drift.enabled
            else None
        )
        dataplane = DataPlane(repository, config.server.max_request_size_bytes, self.drift)
        router = Router(routing_table(config))
        audit_key = configured_audit_key(config.admin)
        self.control = ControlPlane(
            routing_table(config),
            router,
            create_control_store(config.control, audit_key),
            config.control,
            tick_s=config.routing.rollout_tick_s,
            metrics=metrics.routing,
            audit=AuditLog(config.admin.audit_log_path, audit_key),
            replica=replica_name(),
        )
        self.models = ModelControl(repository, config, self.control)
        # One for both APIs: a peer's failed authentications count across them.
        self.access = AccessControl(
            config.admin.access_settings(),
            lambda api, reason: metrics.auth_denied.labels(api, reason).inc(),
        )
        self._repository_api = RepositoryApi(self.models, self.access)
        self.routing = RoutingService(
            router,
            dataplane.infer_model,
            config.routing,
            metrics.routing,
            self.control.record,
            self.drift,
        )
        self.inference = InferenceService(dataplane, self.routing)
        definitions = FeatureDefinitions.from_config(config.features)
        self.feature_store = create_store(config.features, definitions)
        self.feedback = FeedbackLog(
            config.feedback,
            FeedbackMetrics(metrics.registry),
            self.control.record_quality,
            store=create_prediction_store(config.feedback, config.control),
        )
        self.recommender = Recommender(
            self.inference, definitions, self.feature_store, config.recommend, self.feedback
        )
        self._reloader = (
            ConfigReloader(
                config_path,
                config,
                self.control,
                self.models,
                metrics.routing,
                config.routing.config_reload_s,
                config.routing.config_settle_s,
            )
            if config_path is not None and config.routing.config_reload_s > 0
            else None
        )
        self._reload_task: asyncio.Task[None] | None = None

    def rest_app(self) -> RestApp:
        admin = AdminApi(self.control, self.access)
        return RestApp(
            self.inference,
            self.metrics,
            admin,
            self.recommender,
            self._repository_api,
            self.feedback,
        )

    def oip_servicer(self) -> InferenceServicer:
        return InferenceServicer(self.inference, self.metrics, self._repository_api)

    def recommend_servicer(self) -> RecommendServicer:
        return RecommendServicer(
            self.recommender, self.metrics, self.inference.model_label, self.feedback
        )

    async def start(self) -> None:
        """Set up tracing, load every model version and start the background work; then
        ready."""
        configure_tracing(self.config.tracing)
        await self.repository.start()
        await self.control.start()  # first: the store says which models were (un)loaded
        await self.models.start()
        if self.drift is not None:
            await self.drift.start()
        await self.feedback.start()
        if self._reloader is not None:
            self._reload_task = asyncio.create_task(self._reloader.run_forever(), name="reload")
        self.inference.set_ready(True)

    async def stop(self) -> None:
        """Not ready any more; finish what the batchers hold, then release everything."""
        self.inference.set_ready(False)
        if self._reload_task is not None:
            self._reload_task.cancel()
            await asyncio.gather(self._reload_task, return_exceptions=True)
        await self.routing.close()
        if self.drift is not None:
            await self.drift.close()
        await self.feedback.close()  # after the drain: writes what Recommend queued
        await self.models.close()
        await self.control.close()
        await self.repository.close(drain=True)
        await self.feature_store.close()
        shutdown_tracing()  # last: flushes the spans of the requests drained above

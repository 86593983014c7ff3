"""The one inference entry point: a name is a model version or an endpoint.

The gRPC, REST and Recommend ingresses and the Recommend pipeline call only this. A model
name reaches its version directly through the data plane; an endpoint name goes through the
routing service, which picks the variant (and mirrors shadows, drives rollouts) and was given
the data plane's direct path when built. Nothing holds a reference back up.

An endpoint answers like a model:
- ModelReady: true when every variant that currently takes primary traffic (weight > 0) is
  ready. Shadow-only variants (weight 0) do not count: no caller waits for them.
- ModelMetadata / ModelConfig: those of the primary variant with the highest weight (ties:
  the first by variant name), named by the endpoint and with no versions. Primary variants
  with different signatures are answered with that one rather than refused: it is what
  most requests meet, and clients that read metadata first keep working mid-migration.
- A version given with an endpoint's name is NOT_FOUND / 404 on every call, inference
  included: an endpoint has no versions (its router picks the variant; its metadata lists
  none), just as an unknown version of a model is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from switchyard import __version__
from switchyard.protos import open_inference_pb2 as pb
from switchyard.router.endpoint import EndpointSpec, VariantTarget
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import NotFound
from switchyard.server.dataplane import DataPlane
from switchyard.server.routing import RoutingService
from switchyard.server.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
)

SERVER_NAME = "switchyard"
# Protocol extensions implemented: Triton's binary tensor data over REST.
SERVER_EXTENSIONS = ("binary_tensor_data",)
UNKNOWN_MODEL_LABEL = "_unknown"  # metrics label for names we do not serve (bounded cardinality)


@dataclass(frozen=True, slots=True)
class ModelVersionTarget:
    """A model's version (empty: its default), served directly."""

    model: str
    version: str

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model,)


@dataclass(frozen=True, slots=True)
class EndpointTarget:
    """An endpoint, as its routing table snapshot holds it when resolved."""

    spec: EndpointSpec

    @property
    def models(self) -> tuple[str, ...]:
        """Every model a request may reach, shadows included, in name order."""
        return tuple(sorted({variant.model for variant in self.spec.variants.values()}))

    def primaries(self) -> list[VariantTarget]:
        """The variants that take primary traffic now, highest weight first (ties by name)."""
        weights = self.spec.weights
        names = sorted((name for name in weights if weights[name] > 0), key=lambda n: -weights[n])
        return [self.spec.variants[name] for name in names]


Target = ModelVersionTarget | EndpointTarget


class InferenceService:
    def __init__(self, models: DataPlane, routing: RoutingService) -> None:
        self._models = models
        self._routing = routing
        self._ready = False
        self.max_request_size_bytes = models.max_request_size_bytes

    # Server -----------------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._ready

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, SERVER_EXTENSIONS)

    # Names ------------------------------------------------------------------------------

    def resolve(self, name: str, version: str = "") -> Target:
        """The model version or endpoint `name` (and `version`) means; NotFound otherwise."""
        spec = self._routing.table.endpoints.get(name)
        if spec is not None:
            if version:
                raise NotFound(
                    f"'{client_text(name)}' is an endpoint and has no version "
                    f"'{client_text(version)}': its router "
                    "picks the variant; name a model to ask for a version"
                )
            return EndpointTarget(spec)
        if not self._models.has_model(name):
            models = ", ".join(self._models.model_names()) or "none"
            endpoints = ", ".join(sorted(self._routing.table.endpoints)) or "none"
            raise NotFound(
                f"no model or endpoint named '{client_text(name)}' (models: {models}; "
                f"endpoints: {endpoints})"
            )
        self._models.check(name, version)  # NotFound naming the versions there are
        return ModelVersionTarget(name, version)

    def model_label(self, name: str) -> str:
        """The model or endpoint name for metrics labels: only names we serve, to bound
        cardinality."""
        known = self._models.has_model(name) or name in self._routing.table.endpoints
        return name if known else UNKNOWN_MODEL_LABEL

    # Per model or endpoint --------------------------------------------------------------

    async def model_ready(self, name: str, version: str = "") -> bool:
        target = self.resolve(name, version)  # unknown names are NOT_FOUND even when not ready
        if not self._ready:
            return False
        if isinstance(target, ModelVersionTarget):
            return await self._models.model_ready(target.model, target.version)
        answers = await asyncio.gather(
            *(self._models.model_ready(v.model, v.version or "") for v in target.primaries())
        )
        return all(answers)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        target = self.resolve(name, version)
        metadata = self._models.model_metadata(*_signature_version(target))
        if isinstance(target, ModelVersionTarget):
            return metadata
        return dataclasses.replace(metadata, name=name, versions=())

    def model_config(self, name: str, version: str = "") -> pb.ModelConfig:
        target = self.resolve(name, version)
        config = self._models.model_config(*_signature_version(target))
        config.name = name  # an endpoint answers with its own name
        return config

    async def infer(self, request: InferRequest, routing_key: str | None = None) -> InferResponse:
        """Serve a request naming an endpoint (routed; `routing_key`, when given, is the
        endpoint's sticky key) or a model version (direct; the key means nothing there)."""
        target = self.resolve(request.model_name, request.model_version)
        if isinstance(target, EndpointTarget):
            return await self._routing.infer(request, routing_key)
        return await self._models.infer_model(request)


def _signature_version(target: Target) -> tuple[str, str]:
    """The model version whose signature `target` answers with: its own, or an endpoint's
    heaviest primary variant's."""
    if isinstance(target, ModelVersionTarget):
        return target.model, target.version
    variant = target.primaries()[0]
    return variant.model, variant.version or ""

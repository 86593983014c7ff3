"""The standard gRPC health service (grpc.health.v1.Health: Check and Watch) on the gateway's
gRPC port, for Kubernetes' `grpc:` probes, load balancers and `grpc_health_probe`.

Every service the port serves reports one status, the gateway's readiness (and so does the
overall service, ""): they share one process, one model repository and one drain. SERVING
once the gateway is ready; NOT_SERVING for good from the moment the shutdown starts, so that
balancers take the replica out while it still finishes what it holds. A Watch then ends (its
last message NOT_SERVING): an open stream would otherwise hold the server's stop until the
end of the grace. Per the protocol, Check of a service not served is NOT_FOUND, and Watch of
one is SERVICE_UNKNOWN with the stream left open (until the drain).

The statuses change where the gateway's readiness does (server/app.py: `set_ready` once the
core is ready, `start_drain` first thing in the stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HEALTH_PROTO_FILE = health_pb2.DESCRIPTOR
HEALTH_SERVICE = HEALTH_PROTO_FILE.services_by_name["Health"].full_name
OVERALL = ""  # the server as a whole, what a probe without a service name asks
# HealthCheckResponse.ServingStatus: a protobuf enum, whose values are ints.
ServingStatus: TypeAlias = int
SERVING: ServingStatus = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: ServingStatus = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: ServingStatus = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class GatewayHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Health of the services named (full names, e.g. "inference.GRPCInferenceService")
    and of the server as a whole; NOT_SERVING until `set_ready(True)`."""

    def __init__(self, services: Iterable[str]) -> None:
        self._services = frozenset((OVERALL, *services))
        self._status: ServingStatus = NOT_SERVING
        self._draining = False
        # Set, and replaced by a fresh one, at each change: what a Watch waits on.
        self._changed = asyncio.Event()

    @property
    def services(self) -> frozenset[str]:
        return self._services

    def status(self, service: str) -> ServingStatus:
        return self._status if service in self._services else SERVICE_UNKNOWN

    def set_ready(self, ready: bool) -> None:
        """Follow the gateway's readiness; ignored once draining (it never comes back)."""
        if not self._draining:
            self._set(SERVING if ready else NOT_SERVING)

    def start_drain(self) -> None:
        """NOT_SERVING for good, and every Watch ends after saying so."""
        self._draining = True
        self._set(NOT_SERVING)

    def _set(self, status: ServingStatus) -> None:
        self._status = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._services:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_message(request.service))
        return health_pb2.HealthCheckResponse(status=self._status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: ServingStatus | None = None
        while True:
            changed = self._changed  # taken before reading, so no change is missed
            status = self.status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if self._draining:  # a Watch of an unknown service too: it would hold the stop
                return
            await changed.wait()

    def _unknown_message(self, service: str) -> str:
        served = ", ".join(repr(name) for name in sorted(self._services))
        return f"no health status for service {service!r}; this server reports {served}"


def add_health_to_server(health: GatewayHealth, server: grpc.aio.Server) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(health, server)

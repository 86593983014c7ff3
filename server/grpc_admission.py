"""Admission of gRPC calls: at most `max_concurrent_rpcs` run at once; one more is refused at
once with RESOURCE_EXHAUSTED and counted in switchyard_shed_requests_total{protocol="grpc",
reason="max_concurrent_rpcs"}. With `bound_pending_wait`, a call that waited longer than
`max_pending_wait_s` inside grpc-core before the server picked it up is refused the same way
(reason "pending_wait"): the case where the Python front end, not the model, is the
bottleneck, and calls queue inside grpc-core, unseen by any other bound
(server/grpc_pending.py). Such a call would be late anyway; refusing it drains that queue
faster than serving it would, so the accepted calls wait about that bound at most.

It replaces grpc.aio's own `maximum_concurrent_rpcs`, whose refusal ("Concurrent RPC limit
exceeded!") no metric sees. A refused call never reaches its servicer and its request
message is not even read. A refusal still costs grpc.aio's per-call work: for a model as
cheap as the demo ranker, about 55% of serving the call (175 vs 317 us of CPU here), so a
front end can refuse at most about 1.8x what it can serve; past that, only more processes
(`server.workers`) help. Liveness and readiness calls (OIP's and grpc.health.v1's) are
never refused: an overloaded server is alive, and a probe that fails under load would
restart it.

A call counts from its admission until grpc.aio's task for it ends, however it ends (a
request that does not parse, a client that goes away), so the count cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeAlias

import grpc

from switchyard.protos import open_inference_pb2 as pb
from switchyard.server.grpc_decoding import CleanDecoding
from switchyard.server.grpc_health import HEALTH_SERVICE
from switchyard.server.grpc_pending import PendingWaitEstimator
from switchyard.server.metrics import ServerMetrics

SHED_REASON = "max_concurrent_rpcs"
SHED_REASON_PENDING_WAIT = "pending_wait"
_OIP_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PROBE_RPCS = frozenset({"ServerLive", "ServerReady"})  # OIP's liveness and readiness
# Probes, OIP's and grpc.health.v1's (its Watch and reflection stream: never bounded).
NEVER_REFUSED_METHODS = frozenset(
    (
        *(f"/{_OIP_SERVICE}/{name}" for name in PROBE_RPCS),
        f"/{HEALTH_SERVICE}/Check",
    )
)

# grpc's classes are generic only in its stubs: the aliases stay strings at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class AdmissionGate(grpc.GenericRpcHandler):
    """Bounds the unary calls running at once on one grpc.aio server (see the module doc),
    and looks every call's handler up, decoding cleanly (server/grpc_decoding.py).

    A generic handler rather than a grpc.aio ServerInterceptor: grpc.aio runs each
    interceptor as a coroutine of its own on every call, where it calls a generic handler's
    `service` plainly, in the call's task. `install` makes it the server's only handler:
    the services added after it register through it (their registered-method handlers,
    which grpc.aio would otherwise look up before any generic handler, included)."""

    def __init__(
        self, max_concurrent_rpcs: int, metrics: ServerMetrics, decoding: CleanDecoding
    ) -> None:
        if max_concurrent_rpcs < 1:
            raise ValueError(f"max_concurrent_rpcs must be >= 1, got {max_concurrent_rpcs}")
        self._limit = max_concurrent_rpcs
        self._active = 0
        self._decoding = decoding
        self._methods: dict[str, Handler] = {}  # registered methods, already decoding cleanly
        self._generic: list[grpc.GenericRpcHandler] = []
        self._shed = metrics.shed.labels("grpc", SHED_REASON)
        self._refusal = _refusal_handler(
            f"the server is at capacity (server.max_concurrent_rpcs {max_concurrent_rpcs} "
            "calls running); retry later"
        )
        self._pending: PendingWaitEstimator | None = None
        self._max_pending_wait_s = 0.0
        self._shed_pending = metrics.shed.labels("grpc", SHED_REASON_PENDING_WAIT)
        self._pending_refusal = self._refusal

    def install(self, server: grpc.aio.Server) -> None:
        """Serve every call of `server` through this gate; before any service is added."""
        server.add_generic_rpc_handlers((self,))
        # Instance attributes shadow the methods: add_*_to_server register here instead.
        setattr(server, "add_generic_rpc_handlers", self._add_generic)  # noqa: B010
        setattr(server, "add_registered_method_handlers", self._add_registered)  # noqa: B010

    def _add_generic(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def _add_registered(self, service: str, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._methods[method] = self._decoding.handler(method, handler)

    def bound_pending_wait(
        self, estimator: PendingWaitEstimator, max_pending_wait_s: float
    ) -> None:
        """Refuse calls that `estimator` says waited longer than `max_pending_wait_s`
        inside grpc-core; set before the server starts."""
        if max_pending_wait_s <= 0:
            raise ValueError(f"max_pending_wait_s must be > 0, got {max_pending_wait_s}")
        self._pending = estimator
        self._max_pending_wait_s = max_pending_wait_s
        self._pending_refusal = _refusal_handler(
            "the server is overloaded (this call waited more than "
            f"server.grpc_max_pending_wait_s {max_pending_wait_s:g} s before the server "
            "could take it); retry later"
        )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        waited_s = 0.0
        if self._pending is not None:
            self._pending.start()  # in the serving loop, on its first call
            waited_s = self._pending.picked_up()  # every call, in order: it keeps the count
        method: str = handler_call_details.method
        handler = self._methods.get(method)
        if handler is None:
            handler = self._find_generic(handler_call_details)
            if handler is None:
                return None  # grpc answers UNIMPLEMENTED
        if (
            handler.request_streaming
            or handler.response_streaming  # no streaming method is served: not bounded
            or method in NEVER_REFUSED_METHODS
        ):
            return handler
        task = asyncio.current_task()
        if task is None:  # grpc.aio always looks handlers up in the call's task
            return handler
        if self._pending is not None and waited_s > self._max_pending_wait_s:
            self._shed_pending.inc()
            return self._pending_refusal
        if self._active >= self._limit:
            self._shed.inc()
            return self._refusal
        self._active += 1
        task.add_done_callback(self._release)
        return handler

    def _find_generic(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        for generic in self._generic:
            handler = generic.service(handler_call_details)
            if handler is not None:
                return self._decoding.handler(str(handler_call_details.method), handler)
        return None

    def _release(self, _task: asyncio.Task[Any]) -> None:
        self._active -= 1


def _refusal_handler(message: str) -> Handler:
    """A handler answering RESOURCE_EXHAUSTED with `message` without reading the request.

    Declared client-streaming, so grpc.aio calls it at once instead of first receiving the
    request message (a completion-queue round trip and a wake-up of the loop): about a fifth
    less CPU per refusal than a unary handler. The caller's unary call sees no difference."""

    async def refuse(_requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        raise AssertionError("abort returned")  # abort always raises

    return grpc.stream_unary_rpc_method_handler(refuse)

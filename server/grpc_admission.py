"""Admission of gRPC calls: at most `max_concurrent_rpcs` run at once; one more is refused at
once with RESOURCE_EXHAUSTED and counted in switchyard_shed_requests_total{protocol="grpc",
reason="max_concurrent_rpcs"}.

It replaces grpc.aio's own `maximum_concurrent_rpcs`, whose refusal ("Concurrent RPC limit
exceeded!") no metric sees. A refused call never reaches its servicer and its request
message is not parsed (the refusal handler takes the raw bytes), so refusing costs the event
loop far less than serving. Liveness and readiness calls are never refused: an overloaded
server is alive, and a probe that fails under load would restart it.

A call counts from its admission until grpc.aio's task for it ends, however it ends (a
request that does not parse, a client that goes away), so the count cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc

from switchyard.protos import open_inference_pb2 as pb
from switchyard.server.metrics import ServerMetrics

SHED_REASON = "max_concurrent_rpcs"
_OIP_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
NEVER_REFUSED_METHODS = frozenset(
    f"/{_OIP_SERVICE}/{name}" for name in ("ServerLive", "ServerReady")
)

# grpc's classes are generic only in its stubs: the aliases stay strings at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Bounds the unary calls running at once on one grpc.aio server (see the module doc)."""

    def __init__(self, max_concurrent_rpcs: int, metrics: ServerMetrics) -> None:
        if max_concurrent_rpcs < 1:
            raise ValueError(f"max_concurrent_rpcs must be >= 1, got {max_concurrent_rpcs}")
        self._limit = max_concurrent_rpcs
        self._active = 0
        self._shed = metrics.shed.labels("grpc", SHED_REASON)
        self._message = (
            f"the server is at capacity (server.max_concurrent_rpcs {max_concurrent_rpcs} "
            "calls running); retry later"
        )
        self._refusal: Handler = grpc.unary_unary_rpc_method_handler(self._refuse)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if (
            handler is None  # grpc answers UNIMPLEMENTED
            or handler.request_streaming
            or handler.response_streaming  # no streaming method is served: not bounded
            or handler_call_details.method in NEVER_REFUSED_METHODS
        ):
            return handler
        task = asyncio.current_task()
        if task is None:  # grpc.aio always runs interceptors in the call's task
            return handler
        if self._active >= self._limit:
            self._shed.inc()
            return self._refusal
        self._active += 1
        task.add_done_callback(self._release)
        return handler

    def _release(self, _task: asyncio.Task[Any]) -> None:
        self._active -= 1

    async def _refuse(
        self, _request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message)
        raise AssertionError("abort returned")  # abort always raises

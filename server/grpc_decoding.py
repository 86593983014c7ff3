"""gRPC requests that do not decode answered as the caller's fault.

grpc.aio runs a method's request deserializer itself, and when it raises (a protobuf that
does not parse: cut short, a bad wire type, a string that is not UTF-8) it logs a traceback
and answers UNKNOWN. CleanDecoding gives every method a deserializer that never
raises, and a behaviour that answers such a request INVALID_ARGUMENT before the servicer
sees it: one debug log line, and the request counted as shed ("undecodable_request").
Handlers are wrapped once per method, not per call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from switchyard.server.metrics import ServerMetrics

log = logging.getLogger(__name__)
PROTOCOL = "grpc"
SHED_REASON = "undecodable_request"


class UndecodableRequest:
    """Stands in for a request message that did not decode."""

    __slots__ = ("method", "problem")

    def __init__(self, method: str, problem: str) -> None:
        self.method = method
        self.problem = problem

    def message(self) -> str:
        return (
            f"the request is not a valid protobuf message for {self.method} ({self.problem}); "
            "send it as the service's .proto defines it"
        )


def safe_deserializer(method: str, deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserialize`, returning an UndecodableRequest where it would raise."""

    def deserialize_or_mark(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except (DecodeError, ValueError, TypeError, UnicodeDecodeError) as exc:
            log.debug("undecodable %s request of %d bytes: %s", method, len(raw), exc)
            return UndecodableRequest(method, type(exc).__name__)

    return deserialize_or_mark


class CleanDecoding:
    """Unary methods' handlers with a safe deserializer and an INVALID_ARGUMENT answer for
    what did not decode (the OIP and Recommend services are unary only). Applied by the
    gRPC gate (server/grpc_admission.py) as it looks a call's handler up: no interceptor,
    whose coroutine per call grpc.aio would run."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._shed = metrics.shed.labels(PROTOCOL, SHED_REASON)
        # Per method: the handler last wrapped and its wrapping, reused while the handler
        # looked up is the same object (a generic handler may vary it per call).
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def handler(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` (of `method`) decoding cleanly; streaming handlers as they are."""
        if handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # grpc.aio's behaviours are coroutine functions; the stubs type them as grpc's.
        behaviour: Any = handler.unary_unary
        deserialize = handler.request_deserializer
        assert behaviour is not None and deserialize is not None  # checked by the caller
        shed = self._shed

        async def refuse_undecodable(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            if isinstance(request, UndecodableRequest):
                shed.inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())
            return await behaviour(request, context)

        return handler._replace(  # type: ignore[attr-defined, no-any-return]
            request_deserializer=safe_deserializer(method, deserialize),
            unary_unary=refuse_undecodable,
        )

"""gRPC calls still running when the shutdown grace ends are answered UNAVAILABLE.

grpc.aio's `stop(grace)` cancels such calls inside grpc-core, and their clients see
CANCELLED, a status that does not say "retry elsewhere". `GrpcDrain.guard` wraps each
handler of a servicer so that, once `expire()` is called at the end of the grace (before
grpc-core's own deadline), every call still running is cancelled here and answered
UNAVAILABLE with a message, and counted as shed for reason `shutdown`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

Servicer = TypeVar("Servicer")
SHUTDOWN_MESSAGE = "the server is shutting down; retry (another replica may serve it)"


class GrpcDrain:
    def __init__(self, shed: Callable[[str], None] | None = None) -> None:
        self._shed = shed
        self._running: set[asyncio.Task[Any]] = set()
        self.grace_expired = False

    def guard(self, servicer: Servicer) -> Servicer:
        """`servicer` with each of its RPC handlers (the coroutine methods named as in the
        .proto, capitalised) wrapped; the same object, for add_*_to_server."""
        for name in dir(type(servicer)):
            method = getattr(servicer, name)
            if name[:1].isupper() and inspect.iscoroutinefunction(method):
                setattr(servicer, name, self._wrap(method))
        return servicer

    def _wrap(
        self, handler: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        @functools.wraps(handler)
        async def drained(request: Any, context: Any) -> Any:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                return await handler(request, context)
            except asyncio.CancelledError:
                if not self.grace_expired:
                    raise  # the client went away
                if self._shed is not None:
                    self._shed("shutdown")
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_MESSAGE)
            finally:
                if task is not None:
                    self._running.discard(task)

        return drained

    def expire(self) -> int:
        """The grace is over: cancel every call still running (each answers UNAVAILABLE);
        how many there were."""
        self.grace_expired = True
        running = list(self._running)
        for task in running:
            task.cancel()
        return len(running)

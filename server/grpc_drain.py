"""A gRPC shutdown that answers what it does not serve: UNAVAILABLE (retry elsewhere) with
a message, counted as shed for reason `shutdown`, where grpc.aio's `stop(grace)` would
answer CANCELLED, a status that does not say "retry elsewhere".

Two such cases: calls grpc-core has taken but the event loop has not picked up yet when the
server shuts down (a busy loop leaves a queue there; grpc-core cancels them at once), and
calls still running when the grace ends. So first `drain_queue()`: for a moment new calls
are refused as they are picked up, which empties grpc-core's queue while calls already
running go on; then `stop`; and `expire()` at the end of the grace cancels what still runs
here and answers it. (A call that reaches grpc-core in the very last instant before it
shuts down can still be cancelled there: nothing in grpc.aio reaches it.)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from switchyard.server.grpc_admission import PROBE_RPCS  # probes see the drain as it is

Servicer = TypeVar("Servicer")
SHUTDOWN_MESSAGE = "the server is shutting down; retry (another replica may serve it)"
QUEUE_QUIET_S = 0.05  # no call picked up for this long: grpc-core's queue is empty


class GrpcDrain:
    def __init__(self, shed: Callable[[str], None] | None = None) -> None:
        self._shed = shed
        self._running: set[asyncio.Task[Any]] = set()
        self.grace_expired = False
        self._refusing = False
        self._last_pickup_s = 0.0

    def guard(self, servicer: Servicer) -> Servicer:
        """`servicer` with each of its RPC handlers (the coroutine methods named as in the
        .proto, capitalised) wrapped; the same object, for add_*_to_server."""
        for name in dir(type(servicer)):
            method = getattr(servicer, name)
            if name[:1].isupper() and inspect.iscoroutinefunction(method):
                setattr(servicer, name, self._wrap(method, refusable=name not in PROBE_RPCS))
        return servicer

    def _wrap(
        self, handler: Callable[[Any, Any], Awaitable[Any]], *, refusable: bool
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        @functools.wraps(handler)
        async def drained(request: Any, context: Any) -> Any:
            self._last_pickup_s = time.monotonic()
            if self._refusing and refusable:
                if self._shed is not None:
                    self._shed("shutdown")
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_MESSAGE)
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

    async def drain_queue(self, limit_s: float) -> None:
        """Refuse every call picked up from now on, until none has been for QUEUE_QUIET_S
        (or `limit_s` passed): what grpc-core held is answered, not cancelled."""
        self._refusing = True
        started_s = time.monotonic()
        self._last_pickup_s = max(self._last_pickup_s, started_s)
        while time.monotonic() - started_s < limit_s:
            if time.monotonic() - self._last_pickup_s >= QUEUE_QUIET_S:
                return
            await asyncio.sleep(QUEUE_QUIET_S / 5)

    def expire(self) -> int:
        """The grace is over: cancel every call still running (each answers UNAVAILABLE);
        how many there were."""
        self.grace_expired = True
        running = list(self._running)
        for task in running:
            task.cancel()
        return len(running)

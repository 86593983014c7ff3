"""One guarded uvicorn server per HTTP port (REST, metrics): its limits from the `server:`
settings, its start, and its drain within the shutdown grace.

The connection rules themselves are server/http_connections.py. Here: the connection cap is
sized from the open-files limit (raised to its hard limit first), so that a flood of HTTP
connections leaves descriptors to the gRPC and metrics ports; and a drain that ends on time
— requests still running when the grace is over are answered 503 and their tasks
cancelled, instead of uvicorn's cancellation that answers 500 and logs a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from switchyard.server.config_sections import ServerSettings
from switchyard.server.http_connections import ConnectionGuard, GuardedConfig, HttpLimits

log = logging.getLogger(__name__)

# Descriptors kept out of the HTTP connection cap: gRPC connections, the metrics port, model
# files, Redis, logs.
OPEN_FILES_RESERVE = 512
MIN_HTTP_CONNECTIONS = 16
# A scraper or two: the metrics port needs few connections and must not eat descriptors.
METRICS_MAX_CONNECTIONS = 64
METRICS_MAX_CONCURRENT_REQUESTS = 16
# The soft limit is raised to the hard one, but not past this when the hard one is infinite.
UNLIMITED_OPEN_FILES_TARGET = 1 << 20
# After the grace: how long answered and cancelled requests get to finish their writes.
EXPIRED_STOP_S = 2.0

Asgi = Callable[..., Any]


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: signals are the host's to handle, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_OPEN_FILES_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else UNLIMITED_OPEN_FILES_TARGET


def _overflow(connections: int) -> int:
    # Connections past the cap still get their 503; past this many more, they are dropped.
    return max(MIN_HTTP_CONNECTIONS, connections // 8)


def rest_limits(settings: ServerSettings, open_files: int) -> HttpLimits:
    """The REST port's limits; `open_files`: the process's open-files limit."""
    available = max(0, open_files - OPEN_FILES_RESERVE)
    connections = settings.http_max_connections
    if connections is None:
        connections = max(MIN_HTTP_CONNECTIONS, available // 2)
    elif connections + _overflow(connections) > available:
        log.warning(
            "server.http_max_connections %d (and %d over it refused with 503) may use more "
            "file descriptors than the %d of the open-files limit %d left after a reserve "
            "of %d: a flood of HTTP connections could then starve the other ports",
            connections, _overflow(connections), available, open_files, OPEN_FILES_RESERVE,
        )  # fmt: skip
    return _limits(settings, connections, settings.http_max_concurrent_requests)


def metrics_limits(settings: ServerSettings) -> HttpLimits:
    return _limits(settings, METRICS_MAX_CONNECTIONS, METRICS_MAX_CONCURRENT_REQUESTS)


def _limits(settings: ServerSettings, connections: int, requests: int) -> HttpLimits:
    return HttpLimits(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        keep_alive_timeout_s=settings.http_keep_alive_timeout_s,
        max_header_bytes=settings.http_max_header_bytes,
        max_connections=connections,
        max_open_connections=connections + _overflow(connections),
        max_concurrent_requests=requests,
    )


class _EndsOnGraceExpiry:
    """The outermost ASGI app: a request cancelled because the grace is over (and already
    answered 503 by its connection) ends quietly instead of as uvicorn's 500 + traceback."""

    def __init__(self, app: Asgi, guard: ConnectionGuard) -> None:
        self._app = app
        self._guard = guard

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._app(scope, receive, send)
        except asyncio.CancelledError:
            if not self._guard.grace_expired:
                raise


class HttpServer:
    """One guarded uvicorn server on one listening socket."""

    def __init__(
        self,
        app: Asgi,
        sock: socket.socket,
        limits: HttpLimits,
        *,
        log_level: str,
        shed: Callable[[str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: serve HTTPS with it (server/tls.py: TlsFiles.ssl_context)."""
        self.guard = ConnectionGuard(limits, shed)
        self._sock = sock
        tls: dict[str, Any] = {}
        if ssl_context is not None:
            tls["ssl_context_factory"] = lambda _config, _default: ssl_context
        self._server = EmbeddedUvicorn(
            GuardedConfig(
                _EndsOnGraceExpiry(app, self.guard),
                self.guard,
                lifespan="off",
                access_log=False,
                # Not a proxy's backend: X-Forwarded-For is the client's own claim (uvicorn
                # believes it from 127.0.0.1); the audited peer and the auth throttle's key
                # must be the connection's address.
                proxy_headers=False,
                log_config=None,
                log_level=log_level,
                # Never uvicorn's: its cancellation answers 500 (the drain is stop()'s).
                timeout_graceful_shutdown=None,
                **tls,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    async def start(self) -> None:
        """Serve; returns once the server listens (raises what stopped it, if anything)."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
                raise RuntimeError("an HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self, grace_s: float) -> None:
        """Stop listening; let requests in progress finish within `grace_s`; answer the
        rest 503 and close every connection."""
        if self._task is None:
            return
        self._server.should_exit = True
        done, _ = await asyncio.wait({self._task}, timeout=grace_s)
        if not done:
            answered = self.guard.expire(self._server.server_state)
            if answered:
                log.warning(
                    "shutdown grace of %g s over: %d HTTP request(s) answered 503",
                    grace_s, answered,
                )  # fmt: skip
            self._server.force_exit = True
            done, _ = await asyncio.wait({self._task}, timeout=EXPIRED_STOP_S)
            if not done:
                self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

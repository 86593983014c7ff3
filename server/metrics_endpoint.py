"""The metrics port's one route: GET (or HEAD) /metrics, Prometheus's exposition.

Anything else is answered as the caller's mistake — 404 for another path, 405 with `Allow`
for another method — so that the port serves nothing but what a scraper asks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, make_asgi_app

from switchyard.runtimes.client_text import client_text

METRICS_PATH = "/metrics"
ALLOWED_METHODS = ("GET", "HEAD")
# What a path is cut to when an answer echoes it.
ECHO_MAX_CHARS = 80

Send = Callable[[dict[str, Any]], Awaitable[None]]


class MetricsEndpoint:
    """ASGI app of the metrics port."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._exposition = make_asgi_app(registry)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != METRICS_PATH:
            path = client_text(scope["path"], ECHO_MAX_CHARS)
            await _answer(send, 404, f"no route for {path}; the metrics are at {METRICS_PATH}")
        elif scope["method"] not in ALLOWED_METHODS:
            allowed = ", ".join(ALLOWED_METHODS)
            message = f"method {scope['method']} is not allowed here; use {allowed}"
            await _answer(send, 405, message, [(b"allow", allowed.encode())])
        else:
            await self._exposition(scope, receive, send)


async def _answer(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""HTTP connections that no client can hold or grow without bound (uvicorn + httptools).

uvicorn times out nothing but keep-alive after a response, reads headers of any size and
takes every connection the kernel hands it. `GuardedHttpProtocol` adds, per connection:

- an idle timeout from the moment it opens (not only after a first response);
- a header deadline: the whole header block must arrive within `header_timeout_s` of its
  first byte, however slowly it trickles in (slowloris) -> 408;
- a body stall timeout: no body byte for `body_timeout_s` while the app waits -> 408;
- a header size bound -> 431, checked while the bytes arrive (httptools buffers a header
  line internally until it ends, so counting only parsed headers would not bound memory);
- upgrade requests (WebSocket, h2c, CONNECT) -> 400 instead of uvicorn's 500;
- a connection cap: a connection beyond `max_connections` first makes room by closing the
  connection idle the longest, if idle for `EVICTABLE_IDLE_S` at least (as nginx reuses
  keep-alive connections; the minimum spares clients that have just connected); with none,
  its request gets 503 with Retry-After, and beyond `max_open_connections` it is dropped at
  once, so that the file descriptors of the process stay available to the other ports;
- a request cap: beyond `max_concurrent_requests` requests being served, 503 + Retry-After.

A refused connection is closed lingering: the answer is written, our side shut down, and
what the client still sends is read and dropped for a moment, so that the kernel does not
reset the connection (and discard the answer) because unread bytes were left behind.
Every refusal is counted by reason through `ConnectionGuard.shed`.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from switchyard.runtimes.client_text import client_text
from switchyard.server.tls import asgi_tls_extension

log = logging.getLogger(__name__)

# How long a refused connection is still read (and dropped) before it is closed.
LINGER_S = 2.0
# A connection idle this long may be closed to make room for a new one over the cap.
EVICTABLE_IDLE_S = 1.0
# What an echoed piece of the request (an Upgrade value) is cut to in a message.
ECHO_MAX_CHARS = 40


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds of one HTTP server's connections (server/http_serving.py fills them in
    from `server:` settings)."""

    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float
    max_header_bytes: int
    max_connections: int
    max_open_connections: int
    max_concurrent_requests: int
    retry_after_s: int = 1


class ConnectionGuard:
    """What every connection of one HTTP server shares: its limits, the count of what they
    refused, and whether the shutdown grace is over."""

    def __init__(self, limits: HttpLimits, shed: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self._shed = shed
        self.grace_expired = False
        self.open_connections = 0
        # Connections waiting for a request -> since when (loop time), longest idle first.
        self._idle: dict[GuardedHttpProtocol, float] = {}

    def shed(self, reason: str) -> None:
        if self._shed is not None:
            self._shed(reason)

    def mark_idle(self, connection: GuardedHttpProtocol, now_s: float) -> None:
        self._idle.pop(connection, None)
        self._idle[connection] = now_s

    def mark_busy(self, connection: GuardedHttpProtocol) -> None:
        self._idle.pop(connection, None)

    def evict_idle(self, now_s: float) -> bool:
        """Close the connection idle the longest, if for EVICTABLE_IDLE_S at least; whether
        there was one."""
        oldest = next(iter(self._idle.items()), None)
        if oldest is None or now_s - oldest[1] < EVICTABLE_IDLE_S:
            return False
        oldest[0].close_idle()
        return True

    def expire(self, server_state: ServerState) -> int:
        """The shutdown grace is over: every request still in progress is answered 503 (if
        it has no answer yet), its connection closed and its task cancelled. The number of
        requests answered so."""
        self.grace_expired = True
        answered = 0
        for connection in list(server_state.connections):
            if isinstance(connection, GuardedHttpProtocol):
                answered += connection.answer_shutdown()
        for task in list(server_state.tasks):
            task.cancel()
        return answered


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config carrying the guard its connections share."""

    def __init__(self, app: Any, guard: ConnectionGuard, **options: Any) -> None:
        super().__init__(app, http=GuardedHttpProtocol, ws="none", **options)
        self.guard = guard


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing and answer with an error."""

    def __init__(self, status: int, message: str, reason: str, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry = retry


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, GuardedConfig):
            raise TypeError("GuardedHttpProtocol is served through a GuardedConfig")
        self._guard = config.guard
        self._limits = config.guard.limits
        # uvicorn types its keep-alive as whole seconds; any number of seconds works.
        self.timeout_keep_alive = self._limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._deadline: TimerHandle | None = None  # the header, body or linger deadline
        self._reading_headers = False
        self._unparsed_header_bytes = 0  # bytes of reads that all belonged to the headers
        self._message_started_s = 0.0
        self._messages = 0  # requests begun on this connection
        self._body_seen_s = 0.0
        self._over_capacity = False
        self._closing = False  # answered and closing: what still arrives is dropped
        self._counted = False  # in the guard's open_connections
        self._tls: dict[str, Any] | None = None  # the ASGI TLS extension, on TLS connections

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio calls this once the TLS handshake is done: the peer certificate is known.
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls = asgi_tls_extension(ssl_object)
        guard = self._guard
        # Counted here, not from uvicorn's set: a closed connection leaves it only later.
        guard.open_connections += 1
        self._counted = True
        now_s = self.loop.time()
        while guard.open_connections > self._limits.max_connections and guard.evict_idle(now_s):
            pass
        if guard.open_connections > self._limits.max_open_connections:
            # Far over the cap: even an answer costs a descriptor held for a while.
            guard.shed("connection_limit")
            self._closing = True
            self._uncount()
            transport.abort()
            return
        self._over_capacity = guard.open_connections > self._limits.max_connections
        guard.mark_idle(self, now_s)
        # uvicorn arms the idle timeout only after a response; a silent connection too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._closing = True
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.open_connections -= 1
        self._guard.mark_busy(self)

    def close_idle(self) -> None:
        """Close this idle connection to make room for a new one."""
        log.debug("closed an idle HTTP connection to make room for a new one")
        self._closing = True
        self._uncount()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._guard.mark_busy(self)
        self._unset_keepalive_if_required()
        headers_of = self._messages if self._reading_headers else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.status, str(refusal), refusal.reason, retry=refusal.retry)
            else:
                log.error("HTTP parser callback failed", exc_info=refusal)
                self._refuse(400, "the HTTP request could not be parsed", "malformed")
            return
        except httptools.HttpParserUpgrade:  # on_headers_complete refuses these first
            self._refuse(400, "protocol upgrades are not supported here", "upgrade")
            return
        except httptools.HttpParserError as exc:
            message = f"malformed HTTP request: {client_text(exc, ECHO_MAX_CHARS)}"
            log.debug("%s", message)
            self._refuse(400, message, "malformed")
            return
        # Deadlines are armed only for a request still incomplete at the end of a read: a
        # request that arrives whole (the usual case) costs no timer.
        if self._reading_headers:
            if headers_of == self._messages:
                # The whole read is header bytes of one request, parsed or still buffered
                # inside httptools: a lower bound of its header size.
                self._unparsed_header_bytes += len(data)
                if self._unparsed_header_bytes > self._limits.max_header_bytes:
                    self._refuse(431, self._header_size_message(), "headers_too_large")
                    return
            if self._deadline is None:
                elapsed_s = self.loop.time() - self._message_started_s
                delay_s = self._limits.header_timeout_s - elapsed_s
                self._set_deadline(delay_s, self._header_deadline_passed)
        elif self._deadline is None and self._awaiting_body():
            self._set_deadline(self._limits.body_timeout_s, self._body_deadline_passed)

    def _awaiting_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            # uvicorn fills in no ASGI TLS extension; server/caller.py reads it. (uvicorn
            # types extension values as dict[object, object].)
            extensions = {**self.scope.get("extensions", {}), "tls": self._tls}
            self.scope["extensions"] = extensions  # type: ignore[typeddict-item]
        self._reading_headers = True
        self._messages += 1
        self._unparsed_header_bytes = 0
        self._message_started_s = self.loop.time()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._cancel_deadline()
        # Exact, once complete (": " and CRLF per header); memory was bounded meanwhile by
        # the count of data_received.
        header_bytes = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if header_bytes > self._limits.max_header_bytes:
            raise _Refusal(431, self._header_size_message(), "headers_too_large")
        if self.parser.should_upgrade():
            raise _Refusal(400, self._upgrade_message(), "upgrade")
        if self._over_capacity:
            raise _Refusal(
                503,
                f"the server has its maximum of {self._limits.max_connections} connections "
                "open; retry later, or reuse a connection",
                "connection_limit",
                retry=True,
            )
        if len(self.tasks) >= self._limits.max_concurrent_requests:
            raise _Refusal(
                503,
                f"the server is serving its maximum of {self._limits.max_concurrent_requests} "
                "requests at once; retry later",
                "concurrency_limit",
                retry=True,
            )
        super().on_headers_complete()
        self._body_seen_s = self.loop.time()

    def on_body(self, body: bytes) -> None:
        self._body_seen_s = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._closing and not self.transport.is_closing() and not self.pipeline:
            self._guard.mark_idle(self, self.loop.time())  # waiting for the next request

    # Deadlines

    def _header_deadline_passed(self) -> None:
        self._deadline = None
        seconds = self._limits.header_timeout_s
        self._refuse(408, f"request headers not complete within {seconds:g} s", "header_timeout")

    def _body_deadline_passed(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self._closing or cycle is None or not cycle.more_body or cycle.response_complete:
            return
        stalled_s = self.loop.time() - self._body_seen_s
        if self.flow.read_paused or stalled_s < self._limits.body_timeout_s:
            # The app has not taken what arrived yet, or bytes came meanwhile: not a stall.
            waited_s = 0.0 if self.flow.read_paused else stalled_s
            self._set_deadline(self._limits.body_timeout_s - waited_s, self._body_deadline_passed)
            return
        self._guard.shed("body_timeout")
        if not cycle.response_started:
            seconds = self._limits.body_timeout_s
            self._write_error(408, f"request body stalled: no bytes for {seconds:g} s")
        self._end_cycle()
        self._close_lingering()

    def _set_deadline(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(delay_s, callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # Answers

    def answer_shutdown(self) -> int:
        """The shutdown grace is over: answer this connection's request 503 if it has no
        answer yet, and close. 1 if it was answered so, else 0."""
        cycle = self.cycle
        answered = 0
        if not self._closing and cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                self._guard.shed("shutdown")
                self._write_error(
                    503, "the server is shutting down; retry (another replica may serve it)", True
                )
                answered = 1
            self._end_cycle()
        self._closing = True
        self._cancel_deadline()
        self.transport.close()
        return answered

    def _refuse(self, status: int, message: str, reason: str, *, retry: bool = False) -> None:
        """Answer `status` for the request being read (not yet given to the app) and close."""
        self._guard.shed(reason)
        log.debug("refused an HTTP request with %d: %s", status, message)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._write_error(status, message, retry)
        # else: an earlier (pipelined) response is still being written; an answer now
        # would land inside it, so the connection just closes.
        self._close_lingering()

    def _write_error(self, status: int, message: str, retry: bool = False) -> None:
        body = orjson.dumps({"error": message})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(b"content-type: application/json\r\n")
        content.append(b"content-length: %d\r\n" % len(body))
        if retry:
            content.append(b"retry-after: %d\r\n" % self._limits.retry_after_s)
        content.extend([b"connection: close\r\n\r\n", body])
        self.transport.write(b"".join(content))

    def _end_cycle(self) -> None:
        """The app's request is over for the client: its later sends are dropped and a
        pending receive() returns http.disconnect."""
        cycle = self.cycle
        cycle.disconnected = True
        cycle.keep_alive = False
        cycle.message_event.set()

    def _close_lingering(self) -> None:
        self._closing = True
        self._reading_headers = False
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # after the answer is flushed
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)

    # Messages

    def _header_size_message(self) -> str:
        return (
            f"request line and headers are over the maximum of {self._limits.max_header_bytes} "
            "bytes"
        )

    def _upgrade_message(self) -> str:
        upgrade = self._get_upgrade()
        if upgrade is None:  # CONNECT
            method = self.parser.get_method().decode("latin-1")
            return f"{method} is not supported here: send plain HTTP requests"
        wanted = client_text(upgrade.decode("latin-1"), ECHO_MAX_CHARS)
        return (
            f"upgrade to {wanted!r} is not supported: this port serves plain HTTP/1.1 "
            "requests only (no WebSocket)"
        )

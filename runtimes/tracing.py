"""OpenTelemetry spans for the serving path, behind one switch.

Every helper first checks whether a tracer is installed (server/tracing.py installs one when
the `tracing:` section enables it) and, when none is, returns at once: no OpenTelemetry call
is made per request, so tracing off costs one attribute read per helper. The SDK is never
imported here; only the API, and only for types and the W3C propagator.

Trace context travels the way OpenTelemetry carries it in asyncio: in the current context,
which every task copies when it is created. The ingresses start the request span from the
caller's `traceparent` / `tracestate`; spans below it nest on their own; the batcher, whose
batches run in tasks of its own, carries each request's span context explicitly.

Lives in runtimes/ (not server/) because the batcher and the Triton runtime use it, and
runtimes/ imports nothing of server/.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "BatchSpanTrace",
    "batch_compute_span",
    "current_span_context",
    "install_tracer",
    "outgoing_headers",
    "remote_parent",
    "request_span",
    "span",
    "start_queue_wait",
    "tracing_enabled",
]

# W3C Trace Context: https://www.w3.org/TR/trace-context/ (both headers, lower case).
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NO_SPAN: Final = contextlib.nullcontext(None)

_tracer: Tracer | None = None


def install_tracer(tracer: Tracer | None) -> None:
    """Make `tracer` the one every helper uses; None turns tracing off."""
    global _tracer
    _tracer = tracer


def tracing_enabled() -> bool:
    return _tracer is not None


def request_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, str] | None = None
) -> AbstractContextManager[Span | None]:
    """The span of one request, a child of the caller's span when `headers` (lower-case
    HTTP headers or gRPC metadata) carry a valid `traceparent`; a new trace otherwise."""
    if _tracer is None:
        return _NO_SPAN
    parent = _PROPAGATOR.extract(headers)  # an invalid traceparent is ignored, per the spec
    return _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
    )


def span(
    name: str, attributes: Mapping[str, str | int] | None = None
) -> AbstractContextManager[Span | None]:
    """A child of the current span for one step of the request (feature fetch, routing...)."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


def current_span_context() -> SpanContext | None:
    """The current span's context, for work that runs in another task (a batch); None when
    tracing is off or no span is recording."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def start_queue_wait(label: str) -> Span | None:
    """A span from now until the request leaves the batcher's queue (end it then)."""
    if _tracer is None:
        return None
    return _tracer.start_span("batcher.queue_wait", attributes={"switchyard.model": label})


class BatchSpanTrace:
    """What the batcher keeps of one request for tracing: its span context, and its queue
    wait span while it waits."""

    __slots__ = ("context", "queue_wait")

    def __init__(self, context: SpanContext, queue_wait: Span | None) -> None:
        self.context = context
        self.queue_wait = queue_wait

    def dequeued(self) -> None:
        if self.queue_wait is not None:
            self.queue_wait.end()
            self.queue_wait = None


def batch_compute_span(
    label: str, requests: Sequence[SpanContext], rows: int
) -> AbstractContextManager[Span | None]:
    """The span of one batch's runtime call, linked to every request in it. Its parent is
    the oldest request's span, so that the model server's own spans (Triton's) land in a
    caller's trace; the other requests reach it through their links."""
    if _tracer is None:
        return _NO_SPAN
    parent = trace.set_span_in_context(trace.NonRecordingSpan(requests[0])) if requests else None
    return _tracer.start_as_current_span(
        "batcher.compute",
        context=parent,
        links=[Link(context) for context in requests],
        attributes={
            "switchyard.model": label,
            "switchyard.batch.requests": len(requests),
            "switchyard.batch.rows": rows,
        },
    )


def outgoing_headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current span, for a call to another server;
    empty when tracing is off."""
    if _tracer is None:
        return {}
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers)
    return headers


@contextlib.contextmanager
def remote_parent(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Make the span that `headers` name the current parent (in a Ray deployment that was
    called with outgoing_headers()); nothing when tracing is off or there are none."""
    if _tracer is None or not headers:
        yield
        return
    token = otel_context.attach(_PROPAGATOR.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)

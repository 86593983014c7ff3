"""The `tracing:` config section and the OpenTelemetry SDK set-up it asks for.

Off by default. When on, spans are sampled parent-based (a caller's sampled flag is obeyed;
requests without a caller's trace are sampled at `sampling_ratio`) and exported in batches
over OTLP/HTTP to `otlp_endpoint`. The span helpers themselves are in runtimes/tracing.py;
this module only builds the provider and installs its tracer there.

The provider is this module's own, not OpenTelemetry's global one: the global can be set
only once per process, and tests (and a config reload) need to set it up and tear it down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from switchyard import __version__
from switchyard.runtimes import tracing
from switchyard.server.config_base import StrictModel

if TYPE_CHECKING:  # the SDK is imported only when tracing is turned on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

INSTRUMENTATION_NAME = "switchyard"
OTLP_EXTRA_HINT = (
    "tracing.otlp_endpoint needs the OTLP exporter: pip install 'switchyard[tracing]' "
    "(opentelemetry-exporter-otlp-proto-http)"
)


class TracingSettings(StrictModel):
    """OpenTelemetry tracing of requests (W3C traceparent in, spans out over OTLP)."""

    enabled: bool = Field(
        default=False,
        description="Record spans of requests. Off: no span is made and no trace context "
        "is passed on.",
    )
    sampling_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of requests that bring no sampled trace of their own to record "
        "(parent-based: a caller's traceparent decides for its requests).",
    )
    otlp_endpoint: str = Field(
        default="http://localhost:4318/v1/traces",
        min_length=1,
        description="OTLP/HTTP traces URL of the collector the spans are sent to.",
    )
    service_name: str = Field(
        default="switchyard",
        min_length=1,
        description="The service.name resource attribute of every span.",
    )


class TracingSetupError(RuntimeError):
    """Tracing is enabled but cannot be set up (the exporter package is missing)."""


_provider: TracerProvider | None = None


def configure_tracing(
    settings: TracingSettings, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Set up tracing as `settings` say, replacing any earlier set-up; returns the provider
    (None when tracing is off, and then no SDK module is even imported). `exporter` replaces
    the OTLP one (tests pass an in-memory exporter, which is exported to synchronously)."""
    shutdown_tracing()
    if not settings.enabled:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create(
            {SERVICE_NAME: settings.service_name, SERVICE_VERSION: __version__}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TracingSetupError(OTLP_EXTRA_HINT) from None
        # Batched off the serving path: a slow or absent collector never delays a request.
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    global _provider
    _provider = provider
    tracing.install_tracer(provider.get_tracer(INSTRUMENTATION_NAME, __version__))
    return provider


def shutdown_tracing() -> None:
    """Stop recording, and flush what the exporter still holds."""
    global _provider
    tracing.install_tracer(None)
    if _provider is not None:
        provider, _provider = _provider, None
        provider.shutdown()

"""Prometheus metrics of the serving path, on their own registry (one per server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtimes.errors import SwitchyardError

# From 100 us (an in-process hit) to 10 s (a request stuck behind an overloaded queue).
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


def status_code(error: BaseException | None) -> str:
    """The transport-neutral status label of a request's outcome."""
    if error is None:
        return "ok"
    if isinstance(error, SwitchyardError):
        return error.code
    return "cancelled" if isinstance(error, asyncio.CancelledError) else "internal"


@dataclass(slots=True)
class RequestLabels:
    """Filled in by the ingress as it learns them: the model as requested, the version as
    resolved (empty when the request failed before a version was chosen)."""

    model: str = ""
    version: str = ""


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "switchyard_requests",
            "Inference requests by model, version, protocol and outcome.",
            ["model", "version", "protocol", "status"],
            registry=self.registry,
        )
        self.latency_s = Histogram(
            "switchyard_request_latency_seconds",
            "Inference latency inside the server, from decoded request to encoded response.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "switchyard_requests_in_flight",
            "Inference requests being served now.",
            ["protocol"],
            registry=self.registry,
        )

    @contextmanager
    def track(self, protocol: str, model_label: Callable[[str], str]) -> Iterator[RequestLabels]:
        """Count, time and label one inference request; the body fills in the labels."""
        labels = RequestLabels()
        in_flight = self.in_flight.labels(protocol)
        in_flight.inc()
        started_s = time.perf_counter()
        error: BaseException | None = None
        try:
            yield labels
        except BaseException as exc:
            error = exc
            raise
        finally:
            in_flight.dec()
            model = model_label(labels.model)
            version = labels.version or "unresolved"
            self.requests.labels(model, version, protocol, status_code(error)).inc()
            self.latency_s.labels(model, version, protocol).observe(time.perf_counter() - started_s)

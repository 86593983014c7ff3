"""Prometheus metrics of the serving path, on their own registry (one per server).

With `server.workers` > 1 every worker writes its metrics to prometheus_client's multiprocess
files and the supervisor's metrics port adds them up (server/workers.py). Each gauge's
`multiprocess_mode` says how its workers' values combine (ignored with one process): live
counts add up (livesum); states show the worst worker (livemax; livemin for "up" and the
table version, so a lagging worker shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from switchyard.runtimes.batcher import BatchObserver
from switchyard.runtimes.errors import Overloaded, SwitchyardError
from switchyard.server.error_status import HttpError
from switchyard.server.features.store import FeatureStats

BATCH_SIZE_BUCKETS_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# From 100 us (an in-process hit) to 10 s (a request stuck behind an overloaded queue).
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


def status_code(error: BaseException | None) -> str:
    """The transport-neutral status label of a request's outcome."""
    if error is None:
        return "ok"
    if isinstance(error, SwitchyardError | HttpError):
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
        self.shed = Counter(
            "switchyard_shed_requests",
            "Requests refused at the door because the server is at capacity or the client "
            "misbehaves, before any model work, by protocol and reason.",
            ["protocol", "reason"],
            registry=self.registry,
        )
        self.auth_denied = Counter(
            "switchyard_auth_denied",
            "Admin and model repository calls refused by access control, by api (admin, "
            "repository) and reason (missing, invalid, forbidden, throttled).",
            ["api", "reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "switchyard_requests_in_flight",
            "Inference requests being served now.",
            ["protocol"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )

        model_labels = ["model", "version"]
        self.batch_size_rows = Histogram(
            "switchyard_batch_size_rows",
            "Rows in each batch run by a model.",
            model_labels,
            buckets=BATCH_SIZE_BUCKETS_ROWS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "switchyard_batch_requests",
            "Requests merged into each batch run by a model.",
            model_labels,
            buckets=BATCH_SIZE_BUCKETS_ROWS,
            registry=self.registry,
        )
        self.queue_time_s = Histogram(
            "switchyard_queue_time_seconds",
            "Time a request waited in the batcher's queue.",
            model_labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.compute_time_s = Histogram(
            "switchyard_compute_time_seconds",
            "Time the runtime took for one batch.",
            model_labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "switchyard_queue_depth",
            "Requests waiting in the batcher's queue.",
            model_labels,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.refused = Counter(
            "switchyard_refused_requests",
            "Requests refused or dropped by the batcher before running, by reason.",
            [*model_labels, "reason"],
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            "switchyard_circuit_state",
            "Circuit breaker of a remote runtime: 0 closed, 1 half-open, 2 open.",
            model_labels,
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.models = ModelMetrics(self.registry)
        self.routing = RoutingMetrics(self.registry)
        # labels() hashes and locks on every call: the serving path looks children up here.
        self._request_children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self._in_flight_children: dict[str, Gauge] = {}

    def batch_observer(self, model: str, version: str) -> BatchObserver:
        return _PrometheusBatchObserver(self, model, version)

    @contextmanager
    def track(self, protocol: str, model_label: Callable[[str], str]) -> Iterator[RequestLabels]:
        """Count, time and label one inference request; the body fills in the labels."""
        labels = RequestLabels()
        in_flight = self._in_flight_children.get(protocol)
        if in_flight is None:
            in_flight = self._in_flight_children[protocol] = self.in_flight.labels(protocol)
        in_flight.inc()
        started_s = time.perf_counter()
        error: BaseException | None = None
        try:
            yield labels
        except BaseException as exc:
            error = exc
            if isinstance(exc, Overloaded):  # a bound refused it before any model work
                self.shed.labels(protocol, exc.reason).inc()
            raise
        finally:
            in_flight.dec()
            key = (model_label(labels.model), labels.version or "unresolved", protocol)
            children = self._request_children.get((*key, status_code(error)))
            if children is None:
                children = self._request_children[(*key, status_code(error))] = (
                    self.requests.labels(*key, status_code(error)),
                    self.latency_s.labels(*key),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started_s)


class _PrometheusBatchObserver(BatchObserver):
    """One model version's batcher events as Prometheus metrics (label children bound once)."""

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        self._batch_rows = metrics.batch_size_rows.labels(model, version)
        self._batch_requests = metrics.batch_requests.labels(model, version)
        self._queue_time = metrics.queue_time_s.labels(model, version)
        self._compute_time = metrics.compute_time_s.labels(model, version)
        self._queue_depth = metrics.queue_depth.labels(model, version)
        self._refused = metrics.refused
        self._labels = (model, version)

    def batch_executed(self, rows: int, requests: int, compute_s: float) -> None:
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)
        self._compute_time.observe(compute_s)

    def request_dequeued(self, queue_s: float) -> None:
        self._queue_time.observe(queue_s)

    def request_refused(self, reason: str) -> None:
        self._refused.labels(*self._labels, reason).inc()

    def queue_depth_changed(self, depth: int) -> None:
        self._queue_depth.set(depth)


class ModelMetrics:
    """Model versions loaded and unloaded while serving, and what they hold."""

    def __init__(self, registry: CollectorRegistry) -> None:
        model_labels = ["model", "version"]
        self.loads = Counter(
            "switchyard_model_loads",
            "Model loads and unloads by model and result: loaded, failed, refused (over "
            "the memory budget), unloaded.",
            ["model", "result"],
            registry=registry,
        )
        self.load_duration_s = Gauge(
            "switchyard_model_load_duration_seconds",
            "Seconds the last load of a model version took, warm-up included.",
            model_labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.loaded_bytes = Gauge(
            "switchyard_model_loaded_bytes",
            "Bytes of model files a loaded version holds (what the memory budget counts).",
            model_labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "switchyard_model_ready",
            "1 while a model version is served; the series goes when it is unloaded.",
            model_labels,
            registry=registry,
            multiprocess_mode="livemin",
        )

    def version_loaded(self, model: str, version: str, duration_s: float, size_bytes: int) -> None:
        self.load_duration_s.labels(model, version).set(duration_s)
        self.loaded_bytes.labels(model, version).set(size_bytes)
        self.ready.labels(model, version).set(1)

    def version_unloaded(self, model: str, version: str) -> None:
        for gauge in (self.load_duration_s, self.loaded_bytes, self.ready):
            with contextlib.suppress(KeyError):
                gauge.remove(model, version)


# Shadow-versus-primary differences span exact agreement (0) to unrelated outputs (>= 1).
ABS_DIFF_BUCKETS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
FRACTION_BUCKETS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
LATENCY_DELTA_BUCKETS_S = (-0.1, -0.01, -0.001, -0.0001, 0.0, 0.0001, 0.001, 0.01, 0.1, 1.0)


class RoutingMetrics:
    """Routing decisions, shadow comparisons and rollouts, on the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        variant_labels = ["endpoint", "variant"]
        self.routed = Counter(
            "switchyard_routed_requests",
            "Requests to an endpoint by the variant chosen, why it was chosen, and how it "
            "answered (status: ok, or the error's code).",
            [*variant_labels, "reason", "status"],
            registry=registry,
        )
        self.shadow_requests = Counter(
            "switchyard_shadow_requests",
            "Mirrored requests by outcome: ok, error, timed_out (past "
            "routing.shadow_timeout_s), cancelled (at shutdown), dropped_at_capacity, "
            "dropped_closed.",
            [*variant_labels, "outcome"],
            registry=registry,
        )
        self.shadow_max_abs_diff = Histogram(
            "switchyard_shadow_max_abs_diff",
            "Largest absolute difference between shadow and primary outputs, per request.",
            variant_labels,
            buckets=ABS_DIFF_BUCKETS,
            registry=registry,
        )
        self.shadow_argmax_agreement = Histogram(
            "switchyard_shadow_argmax_agreement",
            "Share of rows whose argmax (top item) agrees between shadow and primary.",
            variant_labels,
            buckets=FRACTION_BUCKETS,
            registry=registry,
        )
        self.shadow_top_k_overlap = Histogram(
            "switchyard_shadow_top_k_overlap",
            "Overlap of the top-k items ranked by shadow and by primary.",
            variant_labels,
            buckets=FRACTION_BUCKETS,
            registry=registry,
        )
        self.shadow_latency_delta_s = Histogram(
            "switchyard_shadow_latency_delta_seconds",
            "Shadow latency minus primary latency, per request.",
            variant_labels,
            buckets=LATENCY_DELTA_BUCKETS_S,
            registry=registry,
        )
        self.rollout_events = Counter(
            "switchyard_rollout_events",
            "Rollout transitions by the state they lead to.",
            ["endpoint", "to_state"],
            registry=registry,
        )
        self.rollout_canary_percent = Gauge(
            "switchyard_rollout_canary_percent",
            "The canary's share of an endpoint's traffic under its rollout, in percent.",
            ["endpoint"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.table_changes = Counter(
            "switchyard_routing_table_changes",
            "Routing changes this replica made (committed, or read from its file), by actor.",
            ["actor"],
            registry=registry,
        )
        self.table_version = Gauge(
            "switchyard_routing_table_version",
            "The control store's version this replica's routing table is at.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.override_in_force = Gauge(
            "switchyard_routing_override_in_force",
            "1 where weights set while serving (admin, rollout) replace the file's.",
            ["endpoint"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.store_up = Gauge(
            "switchyard_control_store_up",
            "1 while the control store answers; 0: serving the last state read from it.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.store_errors = Counter(
            "switchyard_control_store_errors",
            "Control store calls that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        self.lease_held = Gauge(
            "switchyard_control_lease_held",
            "1 on the replica holding the lease to judge rollouts.",
            ["replica"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.config_reloads = Counter(
            "switchyard_config_reloads",
            "Config file changes seen, by result (applied, unchanged, invalid, refused).",
            ["result"],
            registry=registry,
        )


class FeatureStatsCollector(Collector):
    """Exports the online store's running counters (server/features/store.FeatureStats)
    at scrape time, so the store's hot path only adds to plain integers."""

    def __init__(self, stats: FeatureStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        for item in dataclasses.fields(self._stats):
            yield CounterMetricFamily(
                f"switchyard_features_{item.name}",
                f"Online feature store: {item.name.replace('_', ' ')}.",
                value=getattr(self._stats, item.name),
            )


class FeatureStatsCounters:
    """FeatureStatsCollector's counters as plain Counters, for worker processes: a collector
    runs in the process scraped, and a worker is never scraped (its supervisor reads the
    multiprocess files), so a worker adds what its store counted since the last `sync`."""

    def __init__(self, stats: FeatureStats, registry: CollectorRegistry) -> None:
        self._stats = stats
        self._exported = FeatureStats()
        self._counters = {
            item.name: Counter(
                f"switchyard_features_{item.name}",
                f"Online feature store: {item.name.replace('_', ' ')}.",
                registry=registry,
            )
            for item in dataclasses.fields(stats)
        }

    def sync(self) -> None:
        for name, counter in self._counters.items():
            value = getattr(self._stats, name)
            counter.inc(value - getattr(self._exported, name))
            setattr(self._exported, name, value)

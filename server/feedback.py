"""Feedback: Recommend predictions kept for a while and joined with the clicks callers report.

A Recommend response is recorded under its request id (endpoint, variant, version, the items
shown with their scores, time) in the prediction log (server/predictions.py: in memory, or
in the control store's Redis, shared by every replica). Feedback names the request id and
the clicked items (every other shown item is a negative) or explicit 0/1 labels. A joined
request adds to the quality counts (router/quality.py) of its (endpoint, variant, version),
exported as metrics, and to the running rollout's counts of its variant, which the control
plane merges across replicas and judges.

Unknown and late request ids are answered 200 with `joined: false` and counted: a caller's
feedback pipeline should not retry them, and a flood of them must not look like an outage.
A second feedback for a request already joined, on any replica, is not counted again
(reason "duplicate"). A prediction store that cannot be read (Redis down) is an outage:
503 / UNAVAILABLE, counted as "store_unavailable", so the caller retries later.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from switchyard.router.quality import QualityCounts
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.config_sections import FeedbackSettings
from switchyard.server.json_body import field, parse_object
from switchyard.server.predictions import (
    MemoryPredictionStore,
    Prediction,
    PredictionStats,
    PredictionStore,
    PredictionStoreUnavailable,
    ScoredItem,
)

REST_PATH = "/v1/feedback"
REQUEST_ID_HEADER = "x-request-id"
RESULTS = ("joined", "unknown_request", "late", "duplicate", "invalid", "store_unavailable")
MAX_REQUEST_ID_CHARS = 128
# Items one feedback names, at most: far above any response's (recommend.max_candidates).
MAX_FEEDBACK_ITEMS = 10_000
DROP_REASONS = ("capacity", "ttl", "queue_full", "write_failed")


def request_id_problem(request_id: str) -> str | None:
    """Why `request_id` cannot be used, or None. It is echoed in the x-request-id header and
    gRPC trailer and is the prediction log's key: a newline there broke the response (the
    connection dropped), and a long one was kept but could never be joined."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return f"is {len(request_id)} characters, over the maximum of {MAX_REQUEST_ID_CHARS}"
    if not (request_id.isascii() and request_id.isprintable()) or " " in request_id:
        return "must be printable ASCII without spaces or control characters"
    return None


def check_request_id(request_id: str) -> None:
    """InvalidArgument (400) for a request id that cannot be echoed nor joined."""
    problem = request_id_problem(request_id)
    if problem is not None:
        raise InvalidArgument(f"'request_id' {client_text(repr(request_id))} {problem}")


def new_request_id() -> str:
    """16 hex digits (64 random bits): short, and unguessable enough that nobody posts
    feedback for another caller's request by guessing."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class FeedbackRequest:
    request_id: str
    clicked_item_ids: tuple[str, ...] | None = None
    labels: Mapping[str, int] | None = None
    timestamp_s: float | None = None  # when the outcome happened (epoch seconds)


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    joined: bool
    reason: str  # one of RESULTS
    labelled: int = 0
    ignored: int = 0  # labels naming items the response did not show

    def as_json(self) -> dict[str, Any]:
        return {
            "joined": self.joined,
            "reason": self.reason,
            "labelled_items": self.labelled,
            "ignored_items": self.ignored,
        }


PREDICTIONS_HELP = "Recommend predictions kept for joining (memory prediction log)."
PENDING_HELP = "Recommend predictions queued for writing to the Redis prediction log."
DROPPED_HELP = (
    "Predictions dropped before any feedback came: capacity, expired (ttl), write queue "
    "full (queue_full) or Redis write failed (write_failed)."
)


class FeedbackMetrics:
    """Counted on feedback (off the Recommend path). The prediction log's own counts are
    plain integers (PredictionStats) exported at scrape time by FeedbackStatsCollector, or,
    in a worker process, by FeedbackStatsExport."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.feedback = Counter(
            "switchyard_feedback",
            "Feedback posts by result: joined, unknown_request, late, duplicate, invalid, "
            "store_unavailable.",
            ["result"],
            registry=registry,
        )
        self.ignored_labels = Counter(
            "switchyard_feedback_ignored_labels",
            "Feedback labels naming items the response did not show (ignored).",
            registry=registry,
        )
        labels = ["endpoint", "variant", "version"]
        self.ctr = Gauge(
            "switchyard_quality_ctr_at_k",
            "CTR@k of joined Recommend feedback: clicks in the first k shown over slots.",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.auc = Gauge(
            "switchyard_quality_auc",
            "AUC (binned ROC) of joined Recommend feedback.",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.logloss = Gauge(
            "switchyard_quality_logloss",
            "Mean log-loss of joined Recommend feedback, per labelled item.",
            labels,
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.samples = Gauge(
            "switchyard_quality_samples",
            "Joined Recommend requests the quality gauges are computed over.",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        for result in RESULTS:
            self.feedback.labels(result)


def _dropped(stats: PredictionStats) -> dict[str, int]:
    return {reason: getattr(stats, f"dropped_{reason}") for reason in DROP_REASONS}


class FeedbackStatsCollector(Collector):
    """The prediction log's counts at scrape time: the Recommend path only adds to ints."""

    def __init__(self, stats: PredictionStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield GaugeMetricFamily("switchyard_feedback_predictions", PREDICTIONS_HELP, stats.kept)
        yield GaugeMetricFamily(
            "switchyard_feedback_predictions_pending", PENDING_HELP, stats.pending
        )
        dropped = CounterMetricFamily(
            "switchyard_feedback_predictions_dropped", DROPPED_HELP, labels=["reason"]
        )
        for reason, count in _dropped(stats).items():
            dropped.add_metric([reason], count)
        yield dropped


class FeedbackStatsExport:
    """FeedbackStatsCollector's numbers as plain metrics, for worker processes (a worker is
    never scraped: its supervisor reads the multiprocess files); `sync` once a second."""

    def __init__(self, stats: PredictionStats, registry: CollectorRegistry) -> None:
        self._stats = stats
        self._exported = PredictionStats()
        self._kept = Gauge(
            "switchyard_feedback_predictions",
            PREDICTIONS_HELP,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._pending = Gauge(
            "switchyard_feedback_predictions_pending",
            PENDING_HELP,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._dropped = Counter(
            "switchyard_feedback_predictions_dropped", DROPPED_HELP, ["reason"], registry=registry
        )
        for reason in DROP_REASONS:
            self._dropped.labels(reason)

    def sync(self) -> None:
        stats, exported = self._stats, self._exported
        self._kept.set(stats.kept)
        self._pending.set(stats.pending)
        for reason, count in _dropped(stats).items():
            self._dropped.labels(reason).inc(count - getattr(exported, f"dropped_{reason}"))
        for item in fields(stats):
            setattr(exported, item.name, getattr(stats, item.name))


# (endpoint, variant, version, quality of one joined request): the control plane's
# record_quality.
QualitySink = Callable[[str, str, str, QualityCounts], None]


class FeedbackLog:
    """The prediction log (a PredictionStore) and the join."""

    def __init__(
        self,
        settings: FeedbackSettings,
        metrics: FeedbackMetrics,
        sink: QualitySink | None = None,
        clock: Callable[[], float] = time.time,
        store: PredictionStore | None = None,
    ) -> None:
        self.settings = settings
        self.store: PredictionStore = store or MemoryPredictionStore(settings)
        self._metrics = metrics
        self._sink = sink
        self._clock = clock
        self._quality: dict[tuple[str, str, str], QualityCounts] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def stats(self) -> PredictionStats:
        return self.store.stats

    async def start(self) -> None:
        if self.enabled:
            await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    def record(
        self,
        request_id: str,
        endpoint: str,
        variant: str,
        version: str,
        items: Sequence[ScoredItem],
        k: int = 0,
    ) -> None:
        """Keep one Recommend response for joining: O(1), no I/O (on the request path).
        `items` is the response's own list, kept as it is: the caller must not change it."""
        self.store.put(request_id, Prediction(endpoint, variant, version, items, k, self._clock()))

    async def join(self, feedback: FeedbackRequest) -> FeedbackResult:
        """PredictionStoreUnavailable (503) when the shared prediction store is down."""
        now_s = self._clock()
        try:
            prediction = await self.store.get(feedback.request_id)
        except PredictionStoreUnavailable:
            self._count(FeedbackResult(False, "store_unavailable"))
            raise
        if prediction is None:
            return self._count(FeedbackResult(False, "unknown_request"))
        too_old_s = prediction.time_s + self.settings.ttl_s
        if now_s > too_old_s or (
            feedback.timestamp_s is not None and feedback.timestamp_s > too_old_s
        ):
            return self._count(FeedbackResult(False, "late"))
        if prediction.joined:
            return self._count(FeedbackResult(False, "duplicate"))
        shown_items = prediction.items
        shown = {item.item_id for item in shown_items}
        if feedback.labels is not None:
            named = dict(feedback.labels)
            positives = {item for item, label in named.items() if label == 1 and item in shown}
        else:
            named = dict.fromkeys(feedback.clicked_item_ids or (), 1)
            positives = {item for item in named if item in shown}
        ignored = sum(1 for item in named if item not in shown)
        if feedback.labels is not None and ignored == len(named):
            self._metrics.ignored_labels.inc(ignored)
            self._count(FeedbackResult(False, "invalid"))
            raise InvalidArgument(
                f"none of the {len(named)} labelled items was shown in response "
                f"'{client_text(feedback.request_id)}'; label the items it returned"
            )
        # Marked before counting: of two replicas joining the same request, one counts it.
        try:
            first = await self.store.mark_joined(feedback.request_id, prediction)
        except PredictionStoreUnavailable:
            self._count(FeedbackResult(False, "store_unavailable"))
            raise
        if not first:
            return self._count(FeedbackResult(False, "duplicate"))
        if ignored:
            self._metrics.ignored_labels.inc(ignored)
        if feedback.labels is not None:
            # Explicit labels judge only the items they name.
            scored = [
                (item.score, int(item.item_id in positives))
                for item in shown_items
                if item.item_id in named
            ]
        else:
            scored = [(item.score, int(item.item_id in positives)) for item in shown_items]
        one = QualityCounts()
        one.add_request(scored, self.settings.ctr_k)
        key = (prediction.endpoint, prediction.variant, prediction.version)
        total = self._quality.get(key)
        if total is None:
            total = self._quality[key] = QualityCounts()
        total.merge(one)
        self._export(key, total)
        if self._sink is not None and prediction.variant:
            self._sink(prediction.endpoint, prediction.variant, prediction.version, one)
        return self._count(FeedbackResult(True, "joined", len(scored), ignored))

    def count_invalid(self) -> None:
        """A feedback body refused before any join (400)."""
        self._metrics.feedback.labels("invalid").inc()

    def quality(self, endpoint: str, variant: str, version: str) -> QualityCounts:
        """This replica's joins (the rollout judges every replica's, merged in the store)."""
        return self._quality.get((endpoint, variant, version), QualityCounts())

    def _export(self, key: tuple[str, str, str], total: QualityCounts) -> None:
        metrics = self._metrics
        metrics.samples.labels(*key).set(total.requests)
        if (ctr := total.ctr_at_k) is not None:
            metrics.ctr.labels(*key).set(ctr)
        if (auc := total.auc) is not None:
            metrics.auc.labels(*key).set(auc)
        if (logloss := total.logloss) is not None:
            metrics.logloss.labels(*key).set(logloss)

    def _count(self, result: FeedbackResult) -> FeedbackResult:
        self._metrics.feedback.labels(result.reason).inc()
        return result


def parse_feedback_json(body: bytes) -> FeedbackRequest:
    """{"request_id", "clicked_item_ids"? | "labels"?, "timestamp"?}."""
    document = parse_object(body)
    known = {"request_id", "clicked_item_ids", "labels", "timestamp"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidArgument(f"unknown fields {client_text(unknown)}; known: {sorted(known)}")
    clicked = document.get("clicked_item_ids")
    labels = document.get("labels")
    if clicked is not None and not (
        isinstance(clicked, list) and all(isinstance(item, str) for item in clicked)
    ):
        raise InvalidArgument("'clicked_item_ids' must be a list of item id strings")
    if labels is not None and not isinstance(labels, dict):
        raise InvalidArgument("'labels' must be an object of item id to 0 or 1")
    timestamp = document.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, int | float)
    ):
        raise InvalidArgument("'timestamp' must be a number: epoch seconds of the outcome")
    return check_feedback(
        FeedbackRequest(
            request_id=field(document, "request_id", str, "request", ""),
            clicked_item_ids=None if clicked is None else tuple(clicked),
            labels=labels,
            timestamp_s=None if timestamp is None else float(timestamp),
        )
    )


def check_feedback(feedback: FeedbackRequest) -> FeedbackRequest:
    """The checks REST and gRPC share; InvalidArgument (400) with what to fix."""
    if not feedback.request_id:
        raise InvalidArgument("'request_id' is required: the id the Recommend response carried")
    check_request_id(feedback.request_id)
    if (feedback.clicked_item_ids is None) == (feedback.labels is None):
        raise InvalidArgument("give exactly one of 'clicked_item_ids' or 'labels'")
    named = feedback.labels if feedback.labels is not None else feedback.clicked_item_ids
    if named is not None and len(named) > MAX_FEEDBACK_ITEMS:
        raise InvalidArgument(
            f"{len(named)} items is over the maximum of {MAX_FEEDBACK_ITEMS} per feedback; "
            "name the items the response showed"
        )
    if feedback.labels is not None:
        bad = [
            item
            for item, label in feedback.labels.items()
            if isinstance(label, bool) or label not in (0, 1)
        ]
        if bad:
            raise InvalidArgument(f"labels must be 0 or 1; not for {client_text(sorted(bad)[:10])}")
        if not feedback.labels:
            raise InvalidArgument("'labels' is empty: label at least one shown item")
    return feedback

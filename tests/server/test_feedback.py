"""The prediction log and the join: known labels give the offline numbers; edge cases count."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from switchyard.router.quality import QualityCounts
from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.config_sections import FeedbackSettings
from switchyard.server.feedback import (
    FeedbackLog,
    FeedbackMetrics,
    FeedbackRequest,
    FeedbackResult,
    FeedbackStatsCollector,
    FeedbackStatsExport,
    new_request_id,
    parse_feedback_json,
)
from switchyard.server.predictions import PredictionStats, ScoredItem


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def make_log(
    **settings: float,
) -> tuple[FeedbackLog, Clock, CollectorRegistry, list[tuple[str, str, str, QualityCounts]]]:
    registry, clock = CollectorRegistry(), Clock()
    sunk: list[tuple[str, str, str, QualityCounts]] = []
    log = FeedbackLog(
        FeedbackSettings(**settings),  # type: ignore[arg-type]
        FeedbackMetrics(registry),
        lambda endpoint, variant, version, quality: sunk.append(
            (endpoint, variant, version, quality)
        ),
        clock,
    )
    registry.register(FeedbackStatsCollector(log.stats))
    return log, clock, registry, sunk


def join(log: FeedbackLog, feedback: FeedbackRequest) -> FeedbackResult:
    return asyncio.run(log.join(feedback))


def result_count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("switchyard_feedback_total", {"result": result})
    return value or 0.0


ITEMS = [
    ScoredItem(item, score)
    for item, score in zip(["a", "b", "c", "d"], [0.9, 0.7, 0.4, 0.2], strict=True)
]


def test_clicks_join_into_exact_ctr_and_auc_and_metrics() -> None:
    log, _, registry, sunk = make_log(ctr_k=2)
    log.record("r1", "recs", "stable", "1", ITEMS)
    log.record("r2", "recs", "stable", "1", ITEMS)
    result = join(log, FeedbackRequest("r1", clicked_item_ids=("b", "d")))
    assert result.joined and result.labelled == 4
    join(log, FeedbackRequest("r2", labels={"a": 1, "c": 0}))
    quality = log.quality("recs", "stable", "1")
    # Offline: slots at k=2: r1 a,b (b clicked), r2 a,c: only its labelled items, a clicked.
    assert (quality.slots_at_k, quality.clicks_at_k) == (4, 2)
    # Positives b .7, d .2, a .9 over negatives a .9, c .4, c .4: b wins 2, d 0, a 2.5 (a tie)
    expected = QualityCounts()
    expected.add_request([(0.9, 0), (0.7, 1), (0.4, 0), (0.2, 1)], 2)
    expected.add_request([(0.9, 1), (0.4, 0)], 2)
    assert quality.auc == expected.auc == pytest.approx(4.5 / 9)
    labels = {"endpoint": "recs", "variant": "stable", "version": "1"}
    assert registry.get_sample_value("switchyard_quality_auc", labels) == quality.auc
    assert registry.get_sample_value("switchyard_quality_ctr_at_k", labels) == 0.5
    assert registry.get_sample_value("switchyard_quality_samples", labels) == 2
    assert [(e, v, n) for e, v, n, _ in sunk] == [("recs", "stable", "1"), ("recs", "stable", "1")]
    assert result_count(registry, "joined") == 2


def test_unknown_late_and_duplicate_are_counted_not_joined() -> None:
    log, clock, registry, _ = make_log(ttl_s=60)
    log.record("r1", "recs", "canary", "2", ITEMS)
    assert join(log, FeedbackRequest("nope", clicked_item_ids=())).reason == "unknown_request"
    assert join(log, FeedbackRequest("r1", clicked_item_ids=("a",))).joined
    duplicate = join(log, FeedbackRequest("r1", clicked_item_ids=("b",)))
    assert (duplicate.joined, duplicate.reason) == (False, "duplicate")
    assert log.quality("recs", "canary", "2").requests == 1  # counted once
    log.record("r2", "recs", "canary", "2", ITEMS)
    clock.now_s += 61
    assert join(log, FeedbackRequest("r2", clicked_item_ids=("a",))).reason == "late"
    log.record("r3", "recs", "canary", "2", ITEMS)
    late = FeedbackRequest("r3", clicked_item_ids=("a",), timestamp_s=clock.now_s + 120)
    assert join(log, late).reason == "late"
    for result, count in (("unknown_request", 1), ("duplicate", 1), ("late", 2)):
        assert result_count(registry, result) == count


def test_items_not_shown_are_ignored_and_all_unknown_labels_refused() -> None:
    log, _, registry, _ = make_log()
    log.record("r1", "recs", "stable", "1", ITEMS)
    result = join(log, FeedbackRequest("r1", clicked_item_ids=("a", "zzz")))
    assert (result.joined, result.ignored) == (True, 1)
    log.record("r2", "recs", "stable", "1", ITEMS)
    with pytest.raises(InvalidArgument, match="none of the 1 labelled items was shown"):
        join(log, FeedbackRequest("r2", labels={"zzz": 1}))
    assert registry.get_sample_value("switchyard_feedback_ignored_labels_total") == 2
    assert result_count(registry, "invalid") == 1


def test_the_log_is_bounded_oldest_dropped_and_counted() -> None:
    log, _, registry, _ = make_log(max_predictions=2)
    for name in ("r1", "r2", "r3"):
        log.record(name, "recs", "stable", "1", ITEMS)
    assert join(log, FeedbackRequest("r1", clicked_item_ids=())).reason == "unknown_request"
    assert join(log, FeedbackRequest("r3", clicked_item_ids=())).joined
    dropped = {"reason": "capacity"}
    assert registry.get_sample_value("switchyard_feedback_predictions_dropped_total", dropped) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"clicked_item_ids": []}', "'request_id' is required"),
        (b'{"request_id": "x"}', "exactly one of"),
        (b'{"request_id": "x", "clicked_item_ids": [], "labels": {"a": 1}}', "exactly one of"),
        (b'{"request_id": "x", "labels": {"a": 2}}', "0 or 1"),
        (b'{"request_id": "x", "labels": {"a": true}}', "0 or 1"),
        (b'{"request_id": "x", "clicked_item_ids": [1]}', "list of item id strings"),
        (b'{"request_id": "x", "clicked": []}', "unknown fields"),
        (b'{"request_id": "x", "clicked_item_ids": [], "timestamp": "now"}', "timestamp"),
        (b"[1]", "object"),
        # Bounded: no response shows this many, and each costs a look-up in the join.
        (b'{"request_id": "x", "clicked_item_ids": [%s]}' % b",".join([b'"i"'] * 10_001), "10000"),
        (
            b'{"request_id": "x", "labels": {%s}}'
            % b",".join(b'"i%d": 0' % n for n in range(10_001)),
            "10000",
        ),
        (b'{"request_id": "a\\nb", "clicked_item_ids": []}', "control characters"),
    ],
)
def test_bad_bodies_are_refused_with_what_to_fix(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_feedback_json(body)


def test_generated_ids_are_short_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 16 for i in ids)


def test_worker_export_adds_what_was_counted_since_the_last_sync() -> None:
    registry = CollectorRegistry()
    stats = PredictionStats(kept=3, dropped_ttl=2)
    export = FeedbackStatsExport(stats, registry)
    export.sync()
    stats.dropped_ttl, stats.dropped_queue_full, stats.kept = 5, 1, 4
    export.sync()
    dropped = "switchyard_feedback_predictions_dropped_total"
    assert registry.get_sample_value(dropped, {"reason": "ttl"}) == 5
    assert registry.get_sample_value(dropped, {"reason": "queue_full"}) == 1
    assert registry.get_sample_value("switchyard_feedback_predictions") == 4

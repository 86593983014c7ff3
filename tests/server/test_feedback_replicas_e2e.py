"""The shared prediction log: real gateway processes on one real Redis control store.

A Recommend answered by one gateway is joined when its feedback reaches another, once
across the replicas; the rollout's quality counts in the store add up every replica's
joins; a prediction past its ttl is late, then gone; with Redis stopped Recommend still
answers and feedback is refused 503 (retry later), counted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.redis_process import RedisServer
from tests.polling import wait_for
from tests.server.quality_demo import call as admin_call
from tests.server.quality_demo import quality_demo_config

T = TypeVar("T")
SHORT_TTL_S = 2.0  # kept 2 x this: ttl_s, then as long again to answer "late"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("feedback-redis"))
    server.start()
    yield server
    server.stop()


def pair_config(redis_url: str, prefix: str, ttl_s: float) -> dict[str, Any]:
    config = quality_demo_config()
    config["admin"]["audit_log_path"] = "audit.jsonl"
    config["routing"] = {"rollout_tick_s": 0.1}
    config["feedback"] = {"ttl_s": ttl_s, "ctr_k": 5}
    config["control"] = {
        "store": "redis",
        "url": redis_url,
        "prefix": prefix,
        "resync_s": 1.0,
        "lease_ttl_s": 1.0,
        "timeout_s": 0.5,
    }
    for endpoint in config["endpoints"]:
        # A step that outlasts the test, and never enough samples to judge: the counts
        # only add up.
        endpoint["rollout"].update(
            steps_percent=[50, 100], step_interval_s=600, min_feedback_samples=1_000_000
        )
    return config


def start_pair(config: dict[str, Any], root: Path) -> list[Gateway]:
    workdirs = [root / name for name in ("a", "b")]
    for workdir in workdirs:
        workdir.mkdir()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start_gateway, config, w) for w in workdirs]
    gateways = [f.result() for f in futures if f.exception() is None]
    if len(gateways) < 2:
        for gateway in gateways:
            gateway.stop()
        for future in futures:
            if (error := future.exception()) is not None:
                raise error
    return gateways


@pytest.fixture(scope="module")
def shared(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Gateway], str]]:
    prefix = f"switchyard-fb-{uuid.uuid4().hex[:12]}:"
    config = pair_config(redis_server.url, prefix, ttl_s=600)
    gateways = start_pair(config, tmp_path_factory.mktemp("feedback-shared"))
    yield gateways, prefix
    for gateway in gateways:
        gateway.stop()


@pytest.fixture(scope="module")
def short_ttl(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Gateway], str]]:
    prefix = f"switchyard-fb-{uuid.uuid4().hex[:12]}:"
    config = pair_config(redis_server.url, prefix, ttl_s=SHORT_TTL_S)
    gateways = start_pair(config, tmp_path_factory.mktemp("feedback-ttl"))
    yield gateways, prefix
    for gateway in gateways:
        gateway.stop()


def call(gateway: Gateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, answer = admin_call(gateway, method, path, body)
    return status, answer


def recommend(gateway: Gateway, user: str, endpoint: str = "recs") -> dict[str, Any]:
    body = {"endpoint": endpoint, "user_id": user, "candidate_ids": ["i1", "i2", "i3", "i4"]}
    status, answer = call(gateway, "POST", "/v1/recommend", body)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def feedback(gateway: Gateway, answer: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    clicked = [answer["items"][0]["item_id"]]
    body = {"request_id": answer["request_id"], "clicked_item_ids": clicked}
    return call(gateway, "POST", "/v1/feedback", body)


def stored(client: redis.Redis, prefix: str, request_id: str) -> bool | None:
    """True once the writer flushed the prediction (it is written off the request path)."""
    return True if client.exists(f"{prefix}pred:{request_id}") else None


def quality_requests(client: redis.Redis, prefix: str, endpoint: str) -> int:
    """Joined requests in the store's rollout quality counts, canary and stable together."""
    keys = client.keys(f"{prefix}stats:{endpoint}:*:quality")
    return sum(int(client.hget(key, "requests") or 0) for key in keys)


def feedback_count(gateway: Gateway, result: str) -> float:
    return metric_sum(scrape_metrics(gateway), "switchyard_feedback_total", result=result)


def test_feedback_joins_once_on_any_replica_and_the_rollout_counts_add_up(
    shared: tuple[list[Gateway], str], redis_server: RedisServer
) -> None:
    (a, b), prefix = shared
    client = redis.Redis.from_url(redis_server.url)
    status, answer = call(a, "POST", "/admin/v1/endpoints/recs/rollout/start")
    assert status == 200, answer

    def running_on_b() -> bool | None:
        _, listing = call(b, "GET", "/admin/v1/endpoints")
        return True if listing["rollouts"]["recs"]["state"] == "running" else None

    wait_for("the rollout running on b", running_on_b)
    count = 20
    for n in range(count):
        answer = recommend(a, f"u{n}")
        assert answer["variant"] in ("stable", "canary")
        request_id = answer["request_id"]
        wait_for("the prediction in Redis", lambda: stored(client, prefix, request_id))  # noqa: B023
        # Even requests joined on b, odd ones on a; each duplicate posted to the other.
        first, second = (b, a) if n % 2 == 0 else (a, b)
        status, joined = feedback(first, answer)
        assert (status, joined["joined"], joined["reason"]) == (200, True, "joined"), joined
        status, again = feedback(second, answer)
        assert (status, again["joined"], again["reason"]) == (200, False, "duplicate"), again
    for gateway in (a, b):
        assert feedback_count(gateway, "joined") == count // 2
        assert feedback_count(gateway, "duplicate") == count // 2
        samples = metric_sum(scrape_metrics(gateway), "switchyard_quality_samples", endpoint="recs")
        assert samples == count // 2
    # Both replicas' joins reach the counts the lease holder judges, each request once.
    wait_for(
        "every join in the store's rollout counts",
        lambda: True if quality_requests(client, prefix, "recs") == count else None,
    )
    assert quality_requests(client, prefix, "recs") == count


def test_a_prediction_past_its_ttl_is_late_then_gone(
    short_ttl: tuple[list[Gateway], str], redis_server: RedisServer
) -> None:
    (a, b), prefix = short_ttl
    client = redis.Redis.from_url(redis_server.url)
    answer = recommend(a, "u1")
    shown_s = time.time()
    key = f"{prefix}pred:{answer['request_id']}"
    wait_for("the prediction in Redis", lambda: stored(client, prefix, answer["request_id"]))
    assert 0 < client.pttl(key) <= 2 * SHORT_TTL_S * 1000  # Redis expires it on its own
    time.sleep(max(0.0, shown_s + SHORT_TTL_S + 0.2 - time.time()))
    status, late = feedback(b, answer)
    assert (status, late["joined"], late["reason"]) == (200, False, "late"), late
    wait_for("the prediction expired", lambda: None if client.exists(key) else True)
    status, gone = feedback(b, answer)
    assert (status, gone["reason"]) == (200, "unknown_request"), gone
    assert feedback_count(b, "late") == 1


def test_with_redis_stopped_recommend_answers_and_feedback_is_refused_503(
    short_ttl: tuple[list[Gateway], str], redis_server: RedisServer
) -> None:
    (a, b), _ = short_ttl
    redis_server.stop()
    try:
        answer = recommend(a, "u2")  # the prediction's write fails off the request path
        status, refused = feedback(b, answer)
        assert status == 503, refused
        assert "prediction store" in refused["error"] and "retry" in refused["error"]
        assert feedback_count(b, "store_unavailable") == 1

        def write_failed() -> float | None:
            text = scrape_metrics(a)
            dropped = metric_sum(
                text, "switchyard_feedback_predictions_dropped_total", reason="write_failed"
            )
            return dropped if dropped >= 1 else None

        wait_for("the failed write counted", write_failed)
        for n in range(5):
            recommend(b, f"u{n}")
    finally:
        redis_server.start()

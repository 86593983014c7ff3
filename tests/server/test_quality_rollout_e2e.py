"""Rollouts judged on quality, through a real gateway and the demo's hidden tastes.

The demo config's worse version 2 is as fast and error-free as version 1, so only the
quality checks can roll it back; the retrained version 3 completes. Clicks come from
loadtests/replay_clicks.py, which draws them from the generative model the demo trains on.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loadtests.gateway_process import Gateway, start_gateway
from loadtests.replay_clicks import replay
from switchyard.protos import recommend_pb2 as pb
from switchyard.protos import recommend_pb2_grpc as pb_grpc
from tests.server.quality_demo import call, quality_demo_config


@pytest.fixture(scope="module")
def quality_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("quality")
    config = quality_demo_config()
    config["admin"]["audit_log_path"] = str(workdir / "audit.jsonl")
    config["routing"] = {"rollout_tick_s": 0.1}
    for endpoint in config["endpoints"]:
        # Short steps, small samples: the same checks, judged in seconds.
        endpoint["rollout"].update(
            steps_percent=[50, 100], step_interval_s=1, min_requests=20, min_feedback_samples=150
        )
        endpoint["rollout"]["max_p95_latency_s"] = 2.0
    gateway = start_gateway(config, workdir)
    AUDIT_PATHS[gateway.http_port] = workdir / "audit.jsonl"
    yield gateway
    gateway.stop()


def roll_out(gateway: Gateway, endpoint: str, timeout_s: float = 120) -> dict[str, Any]:
    """Start the rollout and replay users with clicks until it ends."""
    status, _, body = call(gateway, "POST", f"/admin/v1/endpoints/{endpoint}/rollout/start")
    assert status == 200, body
    done = threading.Event()
    state: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _, _, endpoints = call(gateway, "GET", "/admin/v1/endpoints")
            state.update(endpoints["rollouts"][endpoint])
            if state["state"] in ("completed", "rolled_back"):
                break
            time.sleep(0.2)
        done.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    url = f"http://127.0.0.1:{gateway.http_port}"
    result = replay(url, 20_000, endpoint=endpoint, workers=4, stop=done.is_set)
    watcher.join()
    assert result.errors == 0
    return state


AUDIT_PATHS: dict[int, Path] = {}  # by the gateway's REST port


def audit_text(gateway: Gateway) -> str:
    return AUDIT_PATHS[gateway.http_port].read_text()


def test_worse_canary_is_rolled_back_on_quality(quality_gateway: Gateway) -> None:
    state = roll_out(quality_gateway, "recs")
    assert state["state"] == "rolled_back", state
    audit = [json.loads(line) for line in audit_text(quality_gateway).splitlines()]
    rolled_back = [e for e in audit if str(e.get("action", "")).startswith("rollout rolled_back")]
    assert rolled_back and "quality: canary" in rolled_back[-1]["action"], rolled_back
    # Latency and errors were healthy: replay saw no error, and no other check failed.
    assert "error rate" not in rolled_back[-1]["action"] and "p95" not in rolled_back[-1]["action"]


def test_retrained_canary_completes(quality_gateway: Gateway) -> None:
    state = roll_out(quality_gateway, "recs_v3")
    assert state["state"] == "completed", state


def test_request_ids_are_echoed_or_made_and_feedback_answers(quality_gateway: Gateway) -> None:
    body = {"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1", "i2", "i3"], "k": 2}
    status, headers, answer = call(quality_gateway, "POST", "/v1/recommend", body)
    assert status == 200 and len(answer["request_id"]) == 16
    assert headers["x-request-id"] == answer["request_id"]
    status, _, answer2 = call(
        quality_gateway, "POST", "/v1/recommend", {**body, "request_id": "mine-1"}
    )
    assert answer2["request_id"] == "mine-1"
    shown = [item["item_id"] for item in answer["items"]]
    status, _, joined = call(
        quality_gateway, "POST", "/v1/feedback",
        {"request_id": answer["request_id"], "clicked_item_ids": shown[:1]},
    )  # fmt: skip
    assert status == 200 and joined == {
        "joined": True, "reason": "joined", "labelled_items": 2, "ignored_items": 0,
    }  # fmt: skip
    status, _, unknown = call(
        quality_gateway, "POST", "/v1/feedback", {"request_id": "nobody", "clicked_item_ids": []}
    )
    assert status == 200 and unknown["reason"] == "unknown_request"
    status, _, bad = call(quality_gateway, "POST", "/v1/feedback", {"request_id": "x"})
    assert status == 400 and "exactly one of" in bad["error"]
    # gRPC: the same, through Recommender.Feedback; the id comes back in trailing metadata.
    with grpc.insecure_channel(quality_gateway.grpc_url) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        response, call_info = stub.Recommend.with_call(
            pb.RecommendRequest(endpoint="recs", user_id="u2", candidate_ids=["i1", "i2"]),
            timeout=30,
        )
        trailing = dict(call_info.trailing_metadata())
        assert trailing["x-request-id"] == response.request_id != ""
        answer_pb = stub.Feedback(
            pb.FeedbackRequest(
                request_id=response.request_id,
                labels=pb.ItemLabels(labels={response.items[0].item_id: 1}),
            ),
            timeout=30,
        )
        assert (answer_pb.joined, answer_pb.labelled_items) == (True, 1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Feedback(pb.FeedbackRequest(request_id=response.request_id), timeout=30)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    metrics = http.client.HTTPConnection("127.0.0.1", quality_gateway.metrics_port, timeout=30)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    assert 'switchyard_feedback_total{result="unknown_request"}' in text
    assert "switchyard_quality_auc{" in text

"""The Recommend API through the real gateway, reading features from a real Redis."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import redis
import yaml

from loadtests.gateway_process import Gateway, start_gateway
from loadtests.recommend_setup import SHARED_REDIS_URL, demo_features, gateway_config, load_features
from loadtests.redis_process import RedisServer
from switchyard.demo.paths import DEMO_CONFIG_PATH
from switchyard.protos import recommend_pb2 as pb
from switchyard.protos import recommend_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def redis_gateway(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, str]]:
    prefix = f"switchyard-e2e:{uuid.uuid4().hex[:8]}:"
    workdir = tmp_path_factory.mktemp("recommend")
    features = demo_features(prefix, {"kind": "redis", "url": SHARED_REDIS_URL})
    config_path = workdir / "features.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(demo_model_path, features)))
    load_features(config_path)
    gateway = start_gateway(gateway_config(demo_model_path, features), workdir)
    yield gateway, prefix
    gateway.stop()
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


def expected_scores(
    session: ort.InferenceSession,
    prefix: str,
    user: str,
    items: list[str],
    redis_url: str = SHARED_REDIS_URL,
) -> np.ndarray:
    """ONNX Runtime run directly on the features read back from Redis (defaults if absent)."""
    features = yaml.safe_load(DEMO_CONFIG_PATH.read_text())["features"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def values(entity: str, entity_id: str) -> list[float]:
        fields = features["entities"][entity]["fields"]
        key = prefix + features["entities"][entity]["key"].replace("{id}", entity_id)
        stored = client.hmget(key, [f["name"] for f in fields])
        return [
            float(v) if v is not None else float(f.get("default", 0.0))
            for v, f in zip(stored, fields, strict=True)
        ]

    rows = np.array([values("user", user) + values("item", item) for item in items], np.float32)
    (scores,) = session.run(["score"], {"features": rows})
    return np.asarray(scores).reshape(-1)


def rest_recommend(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    connection.request("POST", "/v1/recommend", body=json.dumps(body))
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def grpc_recommend(gateway: Gateway, **fields: Any) -> pb.RecommendResponse:
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        response: pb.RecommendResponse = pb_grpc.RecommenderStub(channel).Recommend(
            pb.RecommendRequest(**fields), timeout=30
        )
        return response


ITEMS = [f"i{n}" for n in range(0, 400, 13)]  # 31 items


def test_scores_equal_onnxruntime_on_the_features_in_redis(
    redis_gateway: tuple[Gateway, str], direct_session: ort.InferenceSession
) -> None:
    gateway, prefix = redis_gateway
    scores = expected_scores(direct_session, prefix, "u42", ITEMS)
    order = np.argsort(-scores, kind="stable")
    status, body = rest_recommend(
        gateway, {"endpoint": "recs", "user_id": "u42", "candidate_ids": ITEMS, "k": 5}
    )
    assert status == 200, body
    assert [i["item_id"] for i in body["items"]] == [ITEMS[i] for i in order[:5]]
    np.testing.assert_array_equal(
        np.array([i["score"] for i in body["items"]], np.float32), scores[order[:5]]
    )
    assert (body["variant"], body["model_name"], body["model_version"]) == ("stable", "ranker", "1")
    assert body["features_degraded"] is False
    response = grpc_recommend(gateway, endpoint="recs", user_id="u42", candidate_ids=ITEMS)
    assert [item.item_id for item in response.items] == [ITEMS[i] for i in order]
    np.testing.assert_array_equal(
        np.array([i.score for i in response.items], np.float32), scores[order]
    )
    # The model can be named directly, too.
    response = grpc_recommend(gateway, endpoint="ranker", user_id="u42", candidate_ids=ITEMS, k=3)
    assert [item.item_id for item in response.items] == [ITEMS[i] for i in order[:3]]
    assert response.variant == ""


def test_missing_user_and_items_get_defaults(
    redis_gateway: tuple[Gateway, str], direct_session: ort.InferenceSession
) -> None:
    gateway, prefix = redis_gateway
    items = ["i5", "no-such-item", "i7"]
    scores = expected_scores(direct_session, prefix, "no-such-user", items)
    status, body = rest_recommend(
        gateway, {"endpoint": "recs", "user_id": "no-such-user", "candidate_ids": items}
    )
    assert status == 200, body
    got = {i["item_id"]: i["score"] for i in body["items"]}
    np.testing.assert_array_equal(np.array([got[i] for i in items], np.float32), scores)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.metrics_port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    missing = next(
        line
        for line in text.splitlines()
        if line.startswith("switchyard_features_missing_entities_total")
    )
    assert float(missing.split()[-1]) >= 2  # the user and the item


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"endpoint": "recs", "user_id": "u1", "candidate_ids": []}, 400, "empty"),
        (
            {"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1", "i2", "i1"]},
            400,
            "repeat: ['i1']",
        ),
        (
            {"endpoint": "recs", "user_id": "u1", "candidate_ids": [f"i{n}" for n in range(51)]},
            400,
            "maximum of 50",
        ),
        ({"endpoint": "recs", "user_id": "", "candidate_ids": ["i1"]}, 400, "user_id"),
        ({"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1"], "k": -1}, 400, "k must be"),
        ({"endpoint": "recs", "user_id": "u1", "candidate_ids": [1, 2]}, 400, "list of strings"),
        ({"endpoint": "recs", "user_id": "u1", "items": ["i1"]}, 400, "unknown fields ['items']"),
        ({"endpoint": "nope", "user_id": "u1", "candidate_ids": ["i1"]}, 404, "'nope'"),
        # A request id is echoed in x-request-id and is the feedback join key: bounded,
        # printable ASCII (was a 500 from the header, or a prediction never joinable).
        (
            {"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1"], "request_id": "a\r\nb"},
            400,
            "request_id",
        ),
        (
            {"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1"], "request_id": "r" * 129},
            400,
            "128",
        ),
    ],
)
def test_bad_requests_get_clear_errors(
    redis_gateway: tuple[Gateway, str], body: dict[str, Any], status: int, fragment: str
) -> None:
    got_status, got = rest_recommend(redis_gateway[0], body)
    assert got_status == status, got
    assert fragment in got["error"]


def test_grpc_bad_request_is_invalid_argument(redis_gateway: tuple[Gateway, str]) -> None:
    with pytest.raises(grpc.RpcError) as error:
        grpc_recommend(redis_gateway[0], endpoint="recs", user_id="u1", candidate_ids=[])
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in (error.value.details() or "")
    with pytest.raises(grpc.RpcError) as error:
        grpc_recommend(
            redis_gateway[0], endpoint="recs", user_id="u1", candidate_ids=["i1"], request_id="a\nb"
        )
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (error.value.details() or "")


def test_redis_down_fails_fast_or_degrades_then_recovers(
    demo_model_path: Path, direct_session: ort.InferenceSession, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    prefix = "e2e:"
    gateways = {}
    try:
        for mode in ("fail", "degrade"):
            store = {"kind": "redis", "url": server.url, "timeout_s": 0.1, "on_unavailable": mode,
                     "breaker": {"after_failures": 2, "open_s": 0.2}}  # fmt: skip
            config = gateway_config(demo_model_path, demo_features(prefix, store))
            workdir = tmp_path / mode
            workdir.mkdir()
            (workdir / "features.yaml").write_text(yaml.safe_dump(config))
            if mode == "fail":
                load_features(workdir / "features.yaml")
            gateways[mode] = start_gateway(config, workdir)
        request = {"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1", "i2"]}
        for gateway in gateways.values():
            status, body = rest_recommend(gateway, request)
            assert status == 200 and body["features_degraded"] is False, body

        server.stop()
        for _ in range(3):
            status, body = rest_recommend(gateways["fail"], request)
            assert status == 503, body
            assert "Redis" in body["error"] or "feature" in body["error"]
        with pytest.raises(grpc.RpcError) as error:
            grpc_recommend(gateways["fail"], **request)
        assert error.value.code() is grpc.StatusCode.UNAVAILABLE
        status, body = rest_recommend(gateways["degrade"], request)
        assert status == 200 and body["features_degraded"] is True, body
        assert len(body["items"]) == 2

        server.start()  # the same port; no persistence, so load the features again
        load_features(tmp_path / "fail" / "features.yaml")
        for gateway in gateways.values():
            deadline = time.monotonic() + 15
            while True:
                status, body = rest_recommend(gateway, request)
                if status == 200 and not body["features_degraded"]:
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.1)
        scores = expected_scores(direct_session, prefix, "u1", ["i1", "i2"], server.url)
        got = {i["item_id"]: i["score"] for i in body["items"]}
        np.testing.assert_array_equal(np.array([got["i1"], got["i2"]], np.float32), scores)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        server.stop()

"""Roles through a real gateway process: every admin route and model load / unload (REST and
gRPC through tritonclient) called by each identity of a tokens file, the legacy token, no
token and a wrong one, with the exact status and the denial counted; then a brute force of
wrong tokens, throttled with 429 and Retry-After until the failures refill."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from switchyard.demo.build_model import build
from switchyard.server.access import token_digest
from tests.server.model_repository_support import place_version

LEGACY_TOKEN = "legacy-admin-token-0123456789"
TOKENS = {
    "viewer": "viewer-token-0123456789",
    "operator": "operator-token-0123456789",
    "admin": "admin-token-0123456789ab",
}
CALLERS = ("none", "wrong", "viewer", "operator", "admin", "legacy")
RANK = {"viewer": 1, "operator": 2, "admin": 3, "legacy": 3}
DENIED = "switchyard_auth_denied_total"


def token_of(who: str) -> str | None:
    return {"none": None, "wrong": "wrong-token-0123456789", "legacy": LEGACY_TOKEN}.get(
        who, TOKENS.get(who)
    )


def write_tokens_file(path: Path) -> Path:
    path.write_text(
        "".join(
            f"- {{name: {role}-bot, role: {role}, token_sha256: '{token_digest(token)}'}}\n"
            for role, token in TOKENS.items()
        )
    )
    return path


def gateway_config(ranker_v1: Path, ranker_v2: Path, workdir: Path, **admin: Any) -> dict[str, Any]:
    repository = workdir / "repository"
    place_version(repository, "spare", 1, ranker_v2)
    versions = [{"version": "1", "path": str(ranker_v1)}, {"version": "2", "path": str(ranker_v2)}]
    return {
        "models": [{"name": "ranker", "versions": versions, "default_version": "1"}],
        "model_repository": {"path": str(repository), "load": []},  # spare starts unloaded
        "endpoints": [
            {
                "name": "recs",
                "variants": {
                    "stable": {"model": "ranker", "version": "1"},
                    "canary": {"model": "ranker", "version": "2"},
                },
                "weights": {"stable": 1},
                # No traffic reaches it: a started rollout stays running at its first step.
                "rollout": {"stable": "stable", "canary": "canary", "steps_percent": [50, 100]},
            }
        ],
        "admin": {
            "token": LEGACY_TOKEN,
            "tokens_file": str(write_tokens_file(workdir / "tokens.yaml")),
            **admin,
        },
    }


@pytest.fixture(scope="module")
def ranker_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("ranker") / "v2", seed=8)


@pytest.fixture(scope="module")
def gateway(
    demo_model_path: Path, ranker_v2: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("access")
    # Far more failures allowed than the matrix makes: its wrong tokens are not throttled.
    config = gateway_config(demo_model_path, ranker_v2, workdir, auth_failure_burst=1000)
    running = start_gateway(config, workdir)
    yield running
    assert running.stop() == 0, running.log()


def call(
    gateway: Gateway, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    host, port = gateway.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection.request(method, path, None if body is None else json.dumps(body), headers)
    response = connection.getresponse()
    text = response.read()
    connection.close()
    answer = json.loads(text) if text else {}
    return response.status, {k.lower(): v for k, v in response.getheaders()}, answer


def as_admin(gateway: Gateway, method: str, path: str, body: Any = None) -> int:
    return call(gateway, method, path, LEGACY_TOKEN, body)[0]


def start_rollout(gateway: Gateway) -> None:
    assert as_admin(gateway, "POST", "/admin/v1/endpoints/recs/rollout/start") == 200


def load_spare(gateway: Gateway) -> None:
    assert as_admin(gateway, "POST", "/v2/repository/models/spare/load") == 200


# route -> (method, path, body, least role, setup run as admin before the call)
ROUTES: dict[str, tuple[str, str, Any, str, Any]] = {
    "list endpoints": ("GET", "/admin/v1/endpoints", None, "viewer", None),
    "audit": ("GET", "/admin/v1/audit?limit=5", None, "viewer", None),
    "lease": ("GET", "/admin/v1/lease", None, "viewer", None),
    "set weights": (
        "PUT",
        "/admin/v1/endpoints/recs/weights",
        {"weights": {"stable": 1, "canary": 1}},
        "operator",
        None,
    ),
    "reset override": ("DELETE", "/admin/v1/endpoints/recs/override", None, "operator", None),
    "rollout start": ("POST", "/admin/v1/endpoints/recs/rollout/start", None, "operator", None),
    "rollout abort": (
        "POST",
        "/admin/v1/endpoints/recs/rollout/abort",
        None,
        "operator",
        start_rollout,
    ),
    "rollout promote": (
        "POST",
        "/admin/v1/endpoints/recs/rollout/promote",
        None,
        "operator",
        start_rollout,
    ),
    "load": ("POST", "/v2/repository/models/spare/load", None, "admin", None),
    "unload": ("POST", "/v2/repository/models/spare/unload", None, "admin", load_spare),
}


def expected(who: str, needs: str) -> tuple[int, str | None]:
    """(HTTP status, the denial reason counted) for `who` calling a route that `needs`."""
    if who == "none":
        return 401, "missing"
    if who == "wrong":
        return 401, "invalid"
    if RANK[who] < RANK[needs]:
        return 403, "forbidden"
    return 200, None


def denials(gateway: Gateway) -> dict[tuple[str, str], float]:
    text = scrape_metrics(gateway)
    return {
        (api, reason): metric_sum(text, DENIED, api=api, reason=reason)
        for api in ("admin", "repository")
        for reason in ("missing", "invalid", "forbidden", "throttled")
    }


@pytest.fixture
def clean(gateway: Gateway) -> Iterator[Gateway]:
    """Each case starts from the config file's state: no rollout, no override, spare out."""
    yield gateway
    as_admin(gateway, "POST", "/admin/v1/endpoints/recs/rollout/abort")
    assert as_admin(gateway, "DELETE", "/admin/v1/endpoints/recs/override") == 200
    as_admin(gateway, "POST", "/v2/repository/models/spare/unload")


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("route", list(ROUTES))
def test_each_role_is_allowed_and_denied_exactly_its_routes_over_rest(
    clean: Gateway, route: str, who: str
) -> None:
    method, path, body, needs, setup = ROUTES[route]
    if setup is not None:
        setup(clean)
    api = "repository" if path.startswith("/v2/") else "admin"
    before = denials(clean)
    status, _, answer = call(clean, method, path, token_of(who), body)
    want_status, reason = expected(who, needs)
    assert status == want_status, answer
    after = denials(clean)
    counted = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert counted == ({(api, reason): 1} if reason else {})
    if reason == "missing":
        assert "needs 'Authorization: Bearer <token>' or a client certificate" in answer["error"]
    elif reason == "invalid":
        assert "bearer token is not valid" in answer["error"]
    elif reason == "forbidden":
        assert answer["error"] == (
            f"'{who}-bot' has the role {who}; this call needs {needs} or above"
        )


def test_the_repository_index_stays_open(gateway: Gateway) -> None:
    status, _, answer = call(gateway, "POST", "/v2/repository/index", None, {})
    assert status == 200 and {m["name"] for m in answer} == {"ranker", "spare"}


GRPC_STATUS = {
    401: "StatusCode.UNAUTHENTICATED",
    403: "StatusCode.PERMISSION_DENIED",
}


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("action", ["load", "unload"])
def test_each_role_loads_and_unloads_over_grpc_exactly_as_allowed(
    clean: Gateway, action: str, who: str
) -> None:
    if action == "unload":
        load_spare(clean)
    client = triton_grpc.InferenceServerClient(clean.grpc_url)
    token = token_of(who)
    headers = {"authorization": f"Bearer {token}"} if token is not None else None
    before = denials(clean)
    want_status, reason = expected(who, "admin")
    run = client.load_model if action == "load" else client.unload_model
    if want_status == 200:
        run("spare", headers=headers)
        models = client.get_model_repository_index(as_json=True)["models"]
        state = next(m["state"] for m in models if m["name"] == "spare")
        assert state == ("READY" if action == "load" else "UNAVAILABLE")
    else:
        with pytest.raises(InferenceServerException) as refused:
            run("spare", headers=headers)
        assert refused.value.status() == GRPC_STATUS[want_status], refused.value.message()
    after = denials(clean)
    counted = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert counted == ({("repository", reason): 1} if reason else {})
    client.close()


def test_changes_are_audited_with_the_identity(clean: Gateway) -> None:
    status, _, _ = call(
        clean,
        "PUT",
        "/admin/v1/endpoints/recs/weights",
        TOKENS["operator"],
        {"weights": {"stable": 3, "canary": 1}},
    )
    assert status == 200
    _, _, trail = call(clean, "GET", "/admin/v1/audit?limit=1", TOKENS["viewer"])
    entry = trail["entries"][-1]
    assert (entry["identity"], entry["role"]) == ("operator-bot", "operator")
    assert entry["peer"].startswith("127.0.0.1:")


def test_a_brute_force_of_wrong_tokens_is_throttled_and_counted(
    demo_model_path: Path, ranker_v2: Path, tmp_path: Path
) -> None:
    # 3 failures at once, then one more every 10 s: the loop below outpaces the refill.
    config = gateway_config(
        demo_model_path, ranker_v2, tmp_path, auth_failure_burst=3, auth_failures_per_minute=6
    )
    gateway = start_gateway(config, tmp_path)
    try:
        answers = [
            call(gateway, "GET", "/admin/v1/endpoints", f"guess-{n:04d}-0123456789")
            for n in range(30)
        ]
        statuses = [status for status, _, _ in answers]
        assert statuses[:4] == [401, 401, 401, 429], statuses
        assert set(statuses) <= {401, 429}, statuses
        for status, headers, answer in answers:
            if status == 429:
                assert 1 <= int(headers["retry-after"]) <= 10
                assert "too many failed authentications from 127.0.0.1" in answer["error"]
        # While throttled, a correct token is refused too, unchecked; on gRPC as well.
        status, headers, _ = call(gateway, "GET", "/admin/v1/endpoints", TOKENS["viewer"])
        assert status == 429
        retry_after_s = int(headers["retry-after"])
        client = triton_grpc.InferenceServerClient(gateway.grpc_url)
        with pytest.raises(InferenceServerException, match="too many failed") as refused:
            client.load_model("spare", headers={"authorization": f"Bearer {LEGACY_TOKEN}"})
        assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        client.close()
        channel = grpc.insecure_channel(gateway.grpc_url)
        load = channel.unary_unary(
            "/inference.GRPCInferenceService/RepositoryModelLoad",
            request_serializer=service_pb2.RepositoryModelLoadRequest.SerializeToString,
            response_deserializer=service_pb2.RepositoryModelLoadResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raw:
            load(service_pb2.RepositoryModelLoadRequest(model_name="spare"), timeout=10)
        error: Any = raw.value  # a grpc.Call too; typed as RpcError alone
        trailing = {key: value for key, value in error.trailing_metadata()}
        assert 1 <= int(trailing["retry-after"]) <= 10
        channel.close()

        counted = denials(gateway)
        assert counted[("admin", "invalid")] == statuses.count(401)
        assert counted[("admin", "throttled")] == statuses.count(429) + 1
        assert counted[("repository", "throttled")] == 2

        time.sleep(retry_after_s)  # the bucket earns one try back
        status, _, answer = call(gateway, "GET", "/admin/v1/endpoints", TOKENS["viewer"])
        assert status == 200, answer
        log = gateway.log()
        assert "throttled after repeated failures" in log
        assert "guess-0000" not in log and token_digest("guess-0000-0123456789") not in log
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_forwarded_headers_neither_escape_the_throttle_nor_forge_the_audited_peer(
    demo_model_path: Path, ranker_v2: Path, tmp_path: Path
) -> None:
    # The gateway is no proxy's backend: X-Forwarded-For is the client's own say, also from
    # 127.0.0.1 (uvicorn trusts it from there by default).
    config = gateway_config(
        demo_model_path, ranker_v2, tmp_path, auth_failure_burst=2, auth_failures_per_minute=1
    )
    gateway = start_gateway(config, tmp_path)
    host, port = gateway.http_url.rsplit(":", 1)

    def forwarded_call(method: str, path: str, token: str, forwarded_for: str) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Forwarded-For": forwarded_for,
            "Content-Type": "application/json",
        }
        body = json.dumps({"weights": {"stable": 2, "canary": 1}}) if method == "PUT" else None
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
        connection.close()
        return response.status, answer

    try:
        status, _ = forwarded_call(
            "PUT", "/admin/v1/endpoints/recs/weights", TOKENS["operator"], "203.0.113.7"
        )
        assert status == 200
        _, _, trail = call(gateway, "GET", "/admin/v1/audit?limit=1", TOKENS["viewer"])
        assert trail["entries"][-1]["peer"].startswith("127.0.0.1:"), trail
        statuses = [
            forwarded_call("GET", "/admin/v1/endpoints", f"guess-{n:04d}-0123", f"198.51.100.{n}")[
                0
            ]
            for n in range(4)
        ]
        assert statuses == [401, 401, 429, 429], statuses
    finally:
        assert gateway.stop() == 0, gateway.log()

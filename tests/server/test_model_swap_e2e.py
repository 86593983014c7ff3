"""Versions swapped under steady traffic with no failed request: the ML engineer's path
through config reloads (load v2, shadow it, roll it out, unload v1), the same through the
repository API, and the changes that must be refused whole."""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as triton_grpc
import yaml
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics, start_gateway
from loadtests.slow_model import build_slow_model
from switchyard.demo.build_model import build
from tests.server.model_repository_support import (
    AUTH,
    TOKEN,
    SteadyTraffic,
    place_version,
    repository_config,
)


@pytest.fixture(scope="module")
def rankers(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    workdir = tmp_path_factory.mktemp("rankers")
    return {"v1": demo_model_path, "v2": build(workdir / "v2", seed=8)}


def ranker(*versions: tuple[str, Path]) -> dict[str, Any]:
    return {
        "name": "ranker",
        "versions": [{"version": v, "path": str(path)} for v, path in versions],
        "runtime_options": {"intra_op_threads": 1},
    }


def wait_for_reloads(gateway: Gateway, result: str, count: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = scrape_metrics(gateway)
        if metric_sum(text, "switchyard_config_reloads_total", result=result) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {result} reload #{count}:\n{gateway.log()[-3000:]}")


def admin(gateway: Gateway, method: str, path: str) -> None:
    request = urllib.request.Request(
        f"http://{gateway.http_url}/admin/v1{path}",
        method=method,
        data=b"{}" if method != "GET" else None,
        headers={"Authorization": f"Bearer {TOKEN}", "X-Switchyard-Actor": "mlengineer"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


def test_ml_engineer_path_by_config_reloads_fails_no_request(
    rankers: dict[str, Path], tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "admin": {"token": TOKEN},
        "routing": {"config_reload_s": 0.1},
        "models": [ranker(("1", rankers["v1"]))],
        "endpoints": [
            {
                "name": "recs",
                "variants": {"stable": {"model": "ranker", "version": "1"}},
                "weights": {"stable": 1},
            }
        ],
    }
    gateway = start_gateway(config, tmp_path)
    path = tmp_path / "switchyard.yaml"
    written = yaml.safe_load(path.read_text())

    def edit(change: Callable[[dict[str, Any]], None]) -> None:
        change(written)
        path.write_text(yaml.safe_dump(written))

    def add_v2(w: dict[str, Any]) -> None:
        w["models"] = [ranker(("1", rankers["v1"]), ("2", rankers["v2"]))]
        recs = w["endpoints"][0]
        recs["variants"]["canary"] = {"model": "ranker", "version": "2"}
        recs["weights"] = {"stable": 1, "canary": 0}
        recs["shadow"] = {"variants": ["canary"], "fraction": 1.0}
        recs["rollout"] = {"stable": "stable", "canary": "canary", "steps_percent": [50, 100]}

    def drop_v1(w: dict[str, Any]) -> None:
        w["models"] = [ranker(("2", rankers["v2"]))]
        w["endpoints"][0] = {
            "name": "recs",
            "variants": {"stable": {"model": "ranker", "version": "2"}},
            "weights": {"stable": 1},
        }

    try:
        with SteadyTraffic(gateway.grpc_url, "recs") as traffic:
            traffic.wait_for(200)
            edit(add_v2)  # load v2 beside v1 and mirror every request to it
            wait_for_reloads(gateway, "applied", 1)
            traffic.wait_for(200)
            text = scrape_metrics(gateway)
            shadowed = {"endpoint": "recs", "variant": "canary", "outcome": "ok"}
            assert metric_sum(text, "switchyard_shadow_requests_total", **shadowed) > 0
            admin(gateway, "POST", "/endpoints/recs/rollout/promote")  # all traffic to v2
            traffic.wait_for(200)
            edit(drop_v1)  # v1 leaves models: and the endpoint in one change
            wait_for_reloads(gateway, "applied", 2)
            traffic.wait_for(200)
        answers = traffic.answers
        assert answers.failures == [], answers.failures[:5]
        assert answers.served[("1", "stable")] > 0 and answers.served[("2", "canary")] > 0
        assert answers.served[("2", "stable")] > 0  # after v1 left
        text = scrape_metrics(gateway)
        assert metric_sum(text, "switchyard_model_loads_total", result="unloaded") == 1
        assert metric_sum(text, "switchyard_model_ready", model="ranker", version="1") == 0
        print(f"ML engineer path: {answers.ok} answers at {answers.rate_per_s:.0f} req/s")
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_a_repository_swap_under_traffic_fails_no_request(
    rankers: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "repository"
    place_version(root, "ranker", 1, rankers["v1"])
    gateway = start_gateway(repository_config(root), tmp_path)
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    try:
        with SteadyTraffic(gateway.grpc_url, "ranker") as traffic:
            traffic.wait_for(200)
            place_version(root, "ranker", 2, rankers["v2"])
            client.load_model("ranker", headers=AUTH)  # v2 in, v1 (latest 1) out
            traffic.wait_for(200)
            place_version(root, "ranker", 2, rankers["v1"])  # the same version, new files
            client.load_model("ranker", headers=AUTH)
            traffic.wait_for(200)
        answers = traffic.answers
        assert answers.failures == [], answers.failures[:5]
        assert answers.served[("1", "")] > 0 and answers.served[("2", "")] > 0
        text = scrape_metrics(gateway)
        assert metric_sum(text, "switchyard_model_loads_total", result="loaded") == 3
        assert metric_sum(text, "switchyard_model_loads_total", result="unloaded") == 2
        print(f"repository swap: {answers.ok} answers at {answers.rate_per_s:.0f} req/s")
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_unloading_a_routed_model_and_loading_past_the_budget_are_refused(
    rankers: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "repository"
    place_version(root, "ranker", 1, rankers["v1"])
    place_version(root, "spare", 1, rankers["v2"])
    size = rankers["v1"].stat().st_size
    config = {
        **repository_config(root, load=["ranker"]),
        "server": {"model_memory_budget_bytes": size + size // 2},
        "endpoints": [{"name": "recs", "variants": {"only": {"model": "ranker"}}}],
    }
    gateway = start_gateway(config, tmp_path)
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="still routed to by") as routed:
            client.unload_model("ranker", headers=AUTH)
        assert routed.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "endpoints.recs.variants.only" in routed.value.message()
        # A version 2 taking other inputs would break what recs's callers send.
        (root / "ranker" / "2").mkdir()
        build_slow_model(root / "ranker" / "2" / "model.onnx", work_dim=8)
        with pytest.raises(InferenceServerException, match="whose inputs differ") as changed:
            client.load_model("ranker", headers=AUTH)
        assert "endpoints.recs.variants.only would reach ranker:2" in changed.value.message()
        assert client.get_model_metadata("ranker").versions == ["1"]
        shutil.rmtree(root / "ranker" / "2")
        with pytest.raises(InferenceServerException, match="model_memory_budget_bytes") as full:
            client.load_model("spare", headers=AUTH)
        assert full.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.is_model_ready("recs")
        served = client.get_model_repository_index(as_json=True)["models"]
        assert [(m["name"], m["state"]) for m in served] == [
            ("ranker", "READY"),
            ("spare", "UNAVAILABLE"),
        ]
        text = scrape_metrics(gateway)
        assert (
            metric_sum(text, "switchyard_model_loads_total", model="spare", result="refused") == 1
        )
    finally:
        assert gateway.stop() == 0, gateway.log()


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_the_api_refuses_outside_explicit_mode(
    rankers: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "repository"
    place_version(root, "ranker", 1, rankers["v1"])
    gateway = start_gateway(repository_config(root, control_mode=mode), tmp_path)
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match=f"control mode is '{mode}'") as off:
            client.load_model("ranker", headers=AUTH)
        assert off.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert client.is_model_ready("ranker")
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_poll_mode_follows_the_folder(rankers: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "repository"
    place_version(root, "ranker", 1, rankers["v1"])
    settings = {"control_mode": "poll", "poll_s": 0.2}
    gateway = start_gateway(repository_config(root, **settings), tmp_path)
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)

    def ready(model: str, version: str = "") -> bool:
        try:
            return bool(client.is_model_ready(model, version))
        except InferenceServerException:
            return False

    def eventually(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 15
        while not check():
            assert time.monotonic() < deadline, gateway.log()[-2000:]
            time.sleep(0.1)

    try:
        place_version(root, "spare", 1, rankers["v2"])
        eventually(lambda: ready("spare"))
        place_version(root, "ranker", 2, rankers["v2"])
        eventually(lambda: ready("ranker", "2") and not ready("ranker", "1"))
        broken = root / "ranker" / "3" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"not a model")
        eventually(lambda: "model ranker in" in gateway.log() and "not loaded" in gateway.log())
        assert ready("ranker", "2")  # what served stays
        shutil.rmtree(root / "spare")
        eventually(lambda: not ready("spare"))
    finally:
        assert gateway.stop() == 0, gateway.log()

"""Models loaded and unloaded through one replica are loaded and unloaded on every replica,
and a replica that starts later serves what is current (one Redis control store)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from loadtests.gateway_process import Gateway, start_gateway
from switchyard.demo.build_model import build
from tests.features.support import SHARED_REDIS_URL
from tests.server.model_repository_support import AUTH, place_version, repository_config


def served(gateway: Gateway) -> dict[str, str]:
    """model -> version for every model the gateway's index says is ready."""
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    listed = client.get_model_repository_index(as_json=True).get("models", [])
    return {m["name"]: m["version"] for m in listed if m["state"] == "READY"}


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_load_on_one_replica_appears_on_every_replica(
    demo_model_path: Path, tmp_path: Path, redis_prefix: str
) -> None:
    root = tmp_path / "repository"
    place_version(root, "ranker", 1, demo_model_path)
    place_version(root, "spare", 1, build(tmp_path / "v2", seed=8))
    config = {
        **repository_config(root, load=["ranker"]),
        "control": {"store": "redis", "url": SHARED_REDIS_URL, "prefix": redis_prefix},
    }
    gateways: list[Gateway] = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            gateways.append(start_gateway(config, workdir))
        a, b = gateways
        assert served(a) == served(b) == {"ranker": "1"}

        triton_grpc.InferenceServerClient(a.grpc_url).load_model("spare", headers=AUTH)
        assert served(a) == {"ranker": "1", "spare": "1"}  # done when the call returns
        eventually(lambda: served(b) == {"ranker": "1", "spare": "1"})
        assert triton_http.InferenceServerClient(b.http_url).is_model_ready("spare")

        place_version(root, "ranker", 2, demo_model_path)  # a new version, loaded through b
        triton_http.InferenceServerClient(b.http_url).load_model("ranker", headers=AUTH)
        eventually(lambda: served(a) == {"ranker": "2", "spare": "1"})

        triton_grpc.InferenceServerClient(b.grpc_url).unload_model("spare", headers=AUTH)
        eventually(lambda: served(a) == {"ranker": "2"})

        # A replica started now serves what is current, not what its start set says.
        late_dir = tmp_path / "late"
        late_dir.mkdir()
        gateways.append(start_gateway(config, late_dir))
        assert served(gateways[2]) == {"ranker": "2"}
        assert "another replica's" not in a.log() + b.log() + gateways[2].log()
    finally:
        for gateway in gateways:
            assert gateway.stop() == 0, gateway.log()


def test_a_load_that_fails_on_another_replica_is_shown_there(
    demo_model_path: Path, tmp_path: Path, redis_prefix: str
) -> None:
    """Replicas with different files (a misconfigured pod): the replica that cannot load
    logs it and shows it in its index; the others serve the model."""
    roots = {name: tmp_path / name / "repository" for name in ("a", "b")}
    for root in roots.values():
        place_version(root, "ranker", 1, demo_model_path)
    missing = "spare"
    place_version(roots["a"], missing, 1, demo_model_path)  # b lacks it
    gateways = []
    try:
        for root in roots.values():
            config = {
                **repository_config(root),
                "control": {"store": "redis", "url": SHARED_REDIS_URL, "prefix": redis_prefix},
            }
            gateways.append(start_gateway(config, root.parent))
        a, b = gateways
        triton_grpc.InferenceServerClient(a.grpc_url).load_model(missing, headers=AUTH)
        eventually(lambda: "another replica's load failed here" in b.log())
        listed = triton_http.InferenceServerClient(b.http_url).get_model_repository_index()
        assert listed[0] == {"name": "ranker", "version": "1", "state": "READY"}
        assert listed[1]["name"] == missing and listed[1]["state"] == "UNAVAILABLE"
        assert "no model directory" in listed[1]["reason"]
        assert served(a) == {"ranker": "1", missing: "1"} and served(b) == {"ranker": "1"}
    finally:
        for gateway in gateways:
            assert gateway.stop() == 0, gateway.log()

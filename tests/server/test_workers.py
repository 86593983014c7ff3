"""`server.workers: 2`: one supervisor and two real worker processes on the same ports.

Each request goes on a fresh connection (a kept-alive one stays with one worker), and the
REST header x-switchyard-worker names the worker that answered. The routing state is on the
shared local Redis, under a fresh prefix per test.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtests.gateway_process import (
    Gateway,
    demo_model_config,
    free_port,
    metric_sum,
    scrape_metrics,
    start_gateway,
)
from loadtests.recommend_setup import demo_features, gateway_config
from switchyard.demo.paths import artifacts_dir
from switchyard.server.config import ConfigError, parse_config
from tests.server.model_repository_support import AUTH, place_version, repository_config
from tests.server.test_cli import run_cli, serve_on_a_taken_port
from tests.server.test_routing_e2e import ROW, infer, request

REDIS_URL = "redis://127.0.0.1:6379/0"
WORKER_HEADER = "x-switchyard-worker"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A control store prefix of this test's own, its keys deleted afterwards."""
    prefix = f"switchyard-workers:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def workers_config(model_path: Path, prefix: str, **server: Any) -> dict[str, Any]:
    config = demo_model_config(model_path, workers=2, **server)
    config["control"] = {"store": "redis", "url": REDIS_URL, "prefix": prefix}
    return config


def wait_until_all_ready(gateway: Gateway) -> None:
    # The first ready worker answers the health check; the supervisor says when both are.
    wait_for(lambda: "switchyard ready: 2 workers" in gateway.log(), what="both workers ready")


def wait_for(condition: Any, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)


def worker_pids(gateway: Gateway) -> list[int]:
    """The supervisor's child processes (its workers), from /proc."""
    pid = gateway.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture
def workers(demo_model_path: Path, tmp_path: Path, prefix: str) -> Iterator[Gateway]:
    gateway = start_gateway(workers_config(demo_model_path, prefix), tmp_path)
    wait_until_all_ready(gateway)
    yield gateway
    gateway.stop()


def unlabelled(text: str, name: str) -> float | None:
    """The value of the sample `name` without labels, None if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def answering_workers(gateway: Gateway, requests: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(requests):
        status, headers, _ = infer(gateway, "ranker")
        assert status == 200
        seen[headers[WORKER_HEADER]] += 1
    return seen


@pytest.mark.parametrize(
    ("workers", "expected"), [(1, 1), (3, 3), ("auto", len(os.sched_getaffinity(0)))]
)
def test_workers_setting(workers: int | str, expected: int) -> None:
    raw = {**demo_model_config(Path("m.onnx"), workers=workers), "control": {"store": "redis"}}
    assert parse_config(raw, Path("."), "x.yaml", env={}).server.worker_count() == expected


@pytest.mark.parametrize("workers", [0, -1, "2", "all", True, 1.5, None])
def test_invalid_workers_name_the_key(workers: Any) -> None:
    raw = {**demo_model_config(Path("m.onnx"), workers=workers), "control": {"store": "redis"}}
    with pytest.raises(ConfigError) as error:
        parse_config(raw, Path("."), "x.yaml", env={})
    assert error.value.errors == ("server.workers: must be an integer >= 1 or auto",)


def test_workers_from_the_environment() -> None:
    raw = {**demo_model_config(Path("m.onnx")), "control": {"store": "redis"}}
    config = parse_config(raw, Path("."), "x.yaml", env={"SWITCHYARD_WORKERS": "auto"})
    assert config.server.workers == "auto"


@pytest.mark.parametrize("workers", [2, "auto"])
def test_workers_with_the_memory_store_are_refused(
    workers: int | str, demo_model_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    raw = demo_model_config(demo_model_path, workers=workers, http_port=free_port())
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"control.store: server.workers: {workers} needs `control.store: redis`" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_taken_port_exits_1(tmp_path: Path, demo_model_path: Path, prefix: str) -> None:
    for port, result in serve_on_a_taken_port(
        tmp_path, lambda server: workers_config(demo_model_path, prefix, **server)
    ):
        assert result.returncode == 1, result.stderr
        assert f"cannot bind 127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr


def grpc_infer_on_a_new_channel(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        message = service_pb2.ModelInferRequest(model_name="ranker")
        tensor = message.inputs.add(name="features", datatype="FP32", shape=[1, 16])
        tensor.contents.fp32_contents.extend(ROW)
        assert stub.ModelInfer(message, timeout=10).model_version == "1"


def test_both_workers_answer_and_metrics_add_up(workers: Gateway) -> None:
    seen = answering_workers(workers, 50)
    assert set(seen) == {"0", "1"}, seen
    for _ in range(20):
        grpc_infer_on_a_new_channel(workers)
    text = scrape_metrics(workers)
    ok = {"model": "ranker", "status": "ok"}
    assert metric_sum(text, "switchyard_requests_total", protocol="rest", **ok) == 50
    assert metric_sum(text, "switchyard_requests_total", protocol="grpc", **ok) == 20
    assert metric_sum(text, "switchyard_requests_in_flight") == 0


def test_a_killed_worker_is_replaced(workers: Gateway) -> None:
    victim = worker_pids(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in worker_pids(workers), what="the worker gone")
    # The other worker takes every new connection meanwhile.
    assert sum(answering_workers(workers, 20).values()) == 20
    wait_for(lambda: "ready again" in workers.log(), what="a new worker ready")
    pids = worker_pids(workers)
    assert len(pids) == 2 and victim not in pids
    assert set(answering_workers(workers, 50)) == {"0", "1"}
    assert metric_sum(scrape_metrics(workers), "switchyard_worker_restarts_total") == 1


def test_sigterm_under_load_drains_every_worker(workers: Gateway) -> None:
    outcomes: list[tuple[float, int | str]] = []  # (start time, status or error)
    stop = threading.Event()

    def send_forever() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _, _ = infer(workers, "ranker")
                outcomes.append((started, status))
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                outcomes.append((started, type(exc).__name__))
                time.sleep(0.01)

    senders = [threading.Thread(target=send_forever) for _ in range(4)]
    for sender in senders:
        sender.start()
    try:
        time.sleep(1.0)
        signalled = time.monotonic()
        workers.process.send_signal(signal.SIGTERM)
        assert workers.process.wait(30) == 0
        time.sleep(0.2)  # requests after the exit: refused
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    before = [outcome for started, outcome in outcomes if started < signalled]
    after = Counter(outcome for started, outcome in outcomes if started >= signalled)
    print(f"before SIGTERM: {len(before)} requests; after: {dict(after)}")
    assert before and all(outcome == 200 for outcome in before)
    # Every request that got an answer got a 200; the rest found the sockets closed (a
    # reset: a connection still in the accept queue of a worker that closed its socket).
    no_answer = {"ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected",
                 "BrokenPipeError"}  # fmt: skip
    assert set(after) <= {200, *no_answer}, after
    assert after["ConnectionRefusedError"] > 0
    log = workers.log()
    assert log.count("switchyard.server.app: switchyard stopped") == 2
    assert log.rstrip().endswith("switchyard.server.workers: switchyard stopped")


def test_a_worker_that_cannot_start_fails_the_start(tmp_path: Path, prefix: str) -> None:
    config = tmp_path / "c.yaml"
    raw = workers_config(tmp_path / "absent.onnx", prefix, http_port=free_port())
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 1
    assert "absent.onnx" in result.stderr and "during start-up" in result.stderr


def test_a_crash_looping_worker_stops_the_supervisor(
    demo_model_path: Path, tmp_path: Path, prefix: str
) -> None:
    model = tmp_path / "ranker.onnx"
    shutil.copy(demo_model_path, model)
    gateway = start_gateway(workers_config(model, prefix), tmp_path)
    try:
        wait_until_all_ready(gateway)
        model.unlink()  # every new worker now fails to load its model
        os.kill(worker_pids(gateway)[0], signal.SIGKILL)
        assert gateway.process.wait(90) == 1
    finally:
        gateway.stop()
    log = gateway.log()
    assert "exited 5 times in a row before it was ready; stopping" in log
    # The other worker was told to drain (the failing ones never got that far).
    assert "switchyard.server.app: signal received, shutting down" in log


def test_workers_are_for_the_standalone_engine(
    demo_model_path: Path, tmp_path: Path, prefix: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(workers_config(demo_model_path, prefix)))
    result = run_cli("serve", "--config", str(config), "--engine", "ray")
    assert result.returncode == 2
    assert "server.workers is for the standalone engine" in result.stderr


def test_feature_store_counters_add_up(demo_model_path: Path, tmp_path: Path, prefix: str) -> None:
    """A worker's feature counters reach the metrics port too (synced once a second)."""
    seeds = {entity: str(artifacts_dir() / f"{entity}s.csv") for entity in ("user", "item")}
    config = gateway_config(
        demo_model_path, demo_features("", {"kind": "memory", "seed_files": seeds})
    )
    config = {**config, **workers_config(demo_model_path, prefix)}
    gateway = start_gateway(config, tmp_path)
    try:
        wait_until_all_ready(gateway)
        seen: Counter[str] = Counter()
        body = json.dumps({"endpoint": "recs", "user_id": "u1", "candidate_ids": ["i1", "i2"]})
        for _ in range(20):
            connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
            connection.request("POST", "/v1/recommend", body=body)
            response = connection.getresponse()
            assert response.status == 200, response.read()
            seen[response.getheader(WORKER_HEADER) or ""] += 1
            connection.close()
        assert set(seen) == {"0", "1"}, seen

        def counted() -> bool:
            text = scrape_metrics(gateway)
            return (
                unlabelled(text, "switchyard_features_fetches_total") == 20
                and unlabelled(text, "switchyard_features_entities_requested_total") == 60
            )

        wait_for(counted, timeout_s=5, what="20 fetches of 3 entities counted")
    finally:
        gateway.stop()


def test_a_model_loaded_through_one_worker_is_served_by_both(
    demo_model_path: Path, tmp_path: Path, prefix: str
) -> None:
    root = tmp_path / "repository"
    place_version(root, "spare", 1, demo_model_path)
    config = {
        **workers_config(demo_model_path, prefix),
        **repository_config(root, load=[]),  # spare starts unloaded
    }
    gateway = start_gateway(config, tmp_path)
    try:
        wait_until_all_ready(gateway)
        path = "/v2/repository/models/spare/load"
        status, _, body = request(gateway, "POST", path, {}, AUTH)
        assert status == 200, body

        def spare_answers_from_both() -> bool:
            seen = set()
            for _ in range(40):
                status, headers, _ = infer(gateway, "spare")
                if status != 200:
                    return False
                seen.add(headers[WORKER_HEADER])
            return seen == {"0", "1"}

        wait_for(spare_answers_from_both, timeout_s=20, what="spare served by both workers")
    finally:
        gateway.stop()

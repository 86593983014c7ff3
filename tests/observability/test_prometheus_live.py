"""Every dashboard panel and every rule, run by a real Prometheus that scrapes a real
gateway under a little load, with the faults the alerts are about brought about for real:
a slow model (latency SLO), a full queue (shedding), a queue that expires requests
(deadlines), a killed Triton (breaker open), a failing canary (rollback), an unreachable
Redis (feature store degraded), a model at its max replicas, a config change with a broken
model file (load failure)."""

from __future__ import annotations

import copy
import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, free_port, start_gateway
from loadtests.prometheus_process import PrometheusServer
from loadtests.triton_process import TritonProcess, start_triton
from switchyard.demo.build_model import build
from switchyard.demo.paths import DEMO_CONFIG_PATH
from tests.observability.dashboard_queries import (
    RULES_PATH,
    NamedQuery,
    annotation_queries,
    dashboard_queries,
    load_dashboard,
    load_rules,
    rule_queries,
    substitute_variables,
    variable_queries,
)

ADMIN_TOKEN = "observability-test-token-0123"
ROW = [0.5] * 16
CANDIDATE_ROWS = np.random.default_rng(3).normal(size=(20, 16)).round(3).tolist()

# Alert expressions with no data unless their fault happens, and faults this test does not
# bring about: for these the metric the alert reads must exist instead.
#   control store down: the memory control store cannot fail (Redis's is tested elsewhere);
#   target down: the gateway answers every scrape here.
UNDERLYING_METRIC = {
    "alert SwitchyardControlStoreDown": "switchyard_control_store_up",
    "alert SwitchyardTargetDown": 'up{job=~".*switchyard.*"}',
}


@dataclass
class Observed:
    gateway: Gateway
    prometheus: PrometheusServer


def gateway_config(model_path: Path, workdir: Path, triton_url: str) -> dict[str, Any]:
    features = copy.deepcopy(yaml.safe_load(DEMO_CONFIG_PATH.read_text())["features"])
    # Nothing listens there: every fetch fails and is served the defaults (degrade).
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    features["store"] = {
        "kind": "redis",
        "url": dead_redis,
        "timeout_s": 0.05,
        "on_unavailable": "degrade",
    }
    v1 = str(model_path)
    v2 = str(build(workdir / "v2", seed=8))  # another seed: the shadow disagrees
    triton = {"url": triton_url, "model_name": "ranker", "timeout_s": 1.0, "max_attempts": 1,
              "breaker_failures": 2, "breaker_open_s": 60.0}  # fmt: skip
    return {
        "server": {"autoscaling_signal_interval_s": 0.2},
        "models": [
            {
                "name": "ranker",
                "versions": [{"version": "1", "path": v1}, {"version": "2", "path": v2}],
                "default_version": "1",
                # One replica at most: any traffic needs all of it (replicas at max).
                "autoscaling": {"target_latency_s": 0.05, "max_replicas": 1},
            },
            # Every request waits 0.5 s (over the SLO's 250 ms); four queue, the rest shed.
            {
                "name": "ranker_slow",
                "versions": [{"version": "1", "path": v1}],
                "batching": {"max_batch_size": 64, "max_queue_delay_s": 0.5, "max_queue_size": 4},
            },
            # A 1 us timeout behind a 10 ms delay: every request expires in the queue.
            {
                "name": "ranker_expiring",
                "versions": [{"version": "1", "path": v1}],
                "batching": {"timeout_s": 0.000001, "max_queue_delay_s": 0.01},
            },
            {
                "name": "ranker_triton",
                "runtime": "triton",
                "versions": [{"version": "1"}],
                "triton": triton,
            },
        ],
        "routing": {"rollout_tick_s": 0.1, "config_reload_s": 0.2, "config_settle_s": 0.2},
        # Wrong tokens are sent on purpose (the auth alert's data): never throttle the
        # test's own admin calls from the same address.
        "admin": {"token": ADMIN_TOKEN, "auth_failure_burst": 10_000},
        "endpoints": [
            {
                "name": "recs",
                "variants": {
                    "stable": {"model": "ranker", "version": "1"},
                    "canary": {"model": "ranker", "version": "2"},
                },
                "weights": {"stable": 1},
                "routing_key": {"parameter": "user_id", "header": "x-user-id"},
                "shadow": {"variants": ["canary"], "fraction": 1.0, "max_concurrency": 32},
            },
            {
                "name": "rollout_failing",
                "variants": {
                    "stable": {"model": "ranker", "version": "1"},
                    "canary": {"model": "ranker_expiring"},
                },
                "weights": {"stable": 1},
                "rollout": {
                    "stable": "stable",
                    "canary": "canary",
                    "steps_percent": [50, 100],
                    "step_interval_s": 0.3,
                    "min_requests": 5,
                    "max_error_rate": 0.05,
                },
            },
        ],
        "features": features,
        "recommend": {"max_candidates": 50},
        # The test's rows are not the training rows: ranker drifts, and the drift series
        # (judged from 50 rows here) have data.
        "drift": {"min_samples": 50, "export_interval_s": 0.5},
    }


def post(gateway: Gateway, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.request("POST", path, body=json.dumps(body), headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, answer


def infer(gateway: Gateway, model: str, rows: list[list[float]] | None = None) -> int:
    rows = rows or [ROW]
    tensor = {"name": "features", "datatype": "FP32", "shape": [len(rows), 16], "data": rows}
    status, _ = post(gateway, f"/v2/models/{model}/infer", {"inputs": [tensor]})
    return status


def grpc_infer(gateway: Gateway, model: str) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc_url)
    tensor = triton_grpc.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32))
    try:
        client.infer(model, [tensor])
    finally:
        client.close()


def wrong_token_calls(gateway: Gateway, count: int) -> None:
    for _ in range(count):
        status, _ = post(gateway, "/admin/v1/endpoints/recs/rollout/start", {}, "not-the-token")
        assert status == 401


def rollout_state(gateway: Gateway, endpoint: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    connection.request(
        "GET", "/admin/v1/endpoints", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    body = json.loads(connection.getresponse().read())
    connection.close()
    state: str = body["rollouts"][endpoint]["state"]
    return state


def traffic_round(gateway: Gateway, users: range) -> None:
    """A little of every kind of request: plain, routed with a shadow, Recommend, expiring,
    slow and shed, over HTTP and gRPC."""
    for user in users:
        assert infer(gateway, "ranker") == 200
        grpc_infer(gateway, "ranker")
        grpc_infer(gateway, "ranker_triton")
        status, body = post(
            gateway,
            "/v2/models/recs/infer",
            {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [20, 16],
                        "data": CANDIDATE_ROWS,
                    }
                ],
                "parameters": {"user_id": f"u{user}"},
            },
        )
        assert status == 200, body
        status, body = post(
            gateway,
            "/v1/recommend",
            {"endpoint": "recs", "user_id": f"u{user}", "candidate_ids": ["i1", "i2", "i3"]},
        )
        assert status == 200, body  # served from defaults: the store is down
        assert infer(gateway, "ranker_expiring") == 504
    with ThreadPoolExecutor(12) as pool:  # 4 queue for 0.5 s, the rest are shed (503)
        statuses = list(pool.map(lambda _: infer(gateway, "ranker_slow"), range(12)))
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses


def put_load_and_faults(
    gateway: Gateway, prometheus: PrometheusServer, triton: TritonProcess, workdir: Path
) -> None:
    # A counter's label child is born on its first use, at that value: rate() sees the
    # increments after a scrape of it, so one round makes every series and the next counts.
    traffic_round(gateway, range(5))
    wrong_token_calls(gateway, 5)
    prometheus.wait_for('switchyard_shed_requests_total{reason="queue_full"}')
    prometheus.wait_for('switchyard_auth_denied_total{reason="invalid"}')
    prometheus.wait_for("switchyard_features_degraded_responses_total > 0")
    traffic_round(gateway, range(5, 25))
    wrong_token_calls(gateway, 50)
    status, body = post(
        gateway, "/admin/v1/endpoints/rollout_failing/rollout/start", {}, ADMIN_TOKEN
    )
    assert status == 200, body
    deadline = time.monotonic() + 20
    while rollout_state(gateway, "rollout_failing") != "rolled_back":
        assert time.monotonic() < deadline, "the failing canary did not roll back"
        for _ in range(5):
            infer(gateway, "rollout_failing")
    triton.kill()
    for _ in range(3):  # two failures open the breaker; the third is refused by it
        with pytest.raises(InferenceServerException, match="UNAVAILABLE|navailable"):
            grpc_infer(gateway, "ranker_triton")
    # A config change adding a model whose file is no ONNX model: its load fails.
    broken = workdir / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")
    config_path = gateway.log_path.parent / "switchyard.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["models"].append({"name": "broken", "versions": [{"version": "1", "path": str(broken)}]})
    config_path.write_text(yaml.safe_dump(config))


class SteadyLoad:
    """A request to ranker every 20 ms in a thread, while the test runs: the autoscaling
    signal and the rates describe a model being served now."""

    def __init__(self, gateway: Gateway) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gateway,), daemon=True)
        self._thread.start()

    def _run(self, gateway: Gateway) -> None:
        while not self._stop.wait(0.02):
            infer(gateway, "ranker")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def observed(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("observability")
    triton = start_triton(demo_model_path, workdir / "triton")
    try:
        config = gateway_config(demo_model_path, workdir, triton.grpc_url)
        gateway = start_gateway(config, workdir)
        try:
            prometheus = PrometheusServer(
                [f"127.0.0.1:{gateway.metrics_port}"],
                workdir / "prometheus",
                scrape_interval_s=1.0,
                rule_files=[RULES_PATH],
            )
            prometheus.start()
            steady = SteadyLoad(gateway)
            try:
                put_load_and_faults(gateway, prometheus, triton, workdir)
                # The faults reach Prometheus, and rules have run on two scrapes after them.
                prometheus.wait_for("switchyard_circuit_state == 2")
                prometheus.wait_for('switchyard_model_loads_total{result="failed"}')
                prometheus.wait_for('switchyard_config_reloads_total{result="refused"}')
                time.sleep(3.0)
                yield Observed(gateway, prometheus)
            finally:
                steady.stop()
                prometheus.stop()
        finally:
            gateway.stop()
    finally:
        triton.stop()


def run_all(prometheus: PrometheusServer, queries: list[NamedQuery]) -> list[str]:
    """What went wrong, one line per query that failed or came back empty."""
    problems = []
    for query in queries:
        expr = substitute_variables(query.expr)
        try:
            result = prometheus.query(expr)
            if not result and query.source in UNDERLYING_METRIC:
                result = prometheus.query(UNDERLYING_METRIC[query.source])
        except RuntimeError as error:
            problems.append(f"{query.source}: {error}\n    {expr}")
            continue
        if not result:
            problems.append(f"{query.source}: no data\n    {expr}")
    return problems


def test_every_dashboard_query_returns_data(observed: Observed) -> None:
    dashboard = load_dashboard()
    queries = [
        *dashboard_queries(dashboard),
        *annotation_queries(dashboard),
        *variable_queries(dashboard),
    ]
    assert len(queries) > 40
    problems = run_all(observed.prometheus, queries)
    assert not problems, "\n".join(problems)


def test_every_rule_expression_returns_data(observed: Observed) -> None:
    queries = rule_queries(load_rules())
    problems = run_all(observed.prometheus, queries)
    assert not problems, "\n".join(problems)


def test_recorded_series_and_alerts_come_from_the_faults(observed: Observed) -> None:
    prometheus = observed.prometheus
    slow = prometheus.query(
        'job_model_version:switchyard_slo_latency_slow:ratio_rate5m{model="ranker_slow"}'
    )
    assert float(slow[0]["value"][1]) > 0.144  # over the fast-burn threshold
    healthy = prometheus.query(
        'job_model_version:switchyard_slo_latency_slow:ratio_rate5m{model="ranker",version="1"}'
    )
    assert float(healthy[0]["value"][1]) == 0.0
    # Alerts with a `for` are pending now; those without one fire at once.
    states = {
        (r["metric"]["alertname"], r["metric"]["alertstate"]) for r in prometheus.query("ALERTS")
    }
    for alert in ("SwitchyardRolloutRolledBack", "SwitchyardModelLoadFailed",
                  "SwitchyardConfigReloadRejected"):  # fmt: skip
        assert (alert, "firing") in states, states
    for alert in ("SwitchyardLatencySLOFastBurn", "SwitchyardRequestsShed",
                  "SwitchyardDeadlinesExceeded", "SwitchyardCircuitBreakerOpen",
                  "SwitchyardFeatureStoreDegraded", "SwitchyardReplicasAtMax"):  # fmt: skip
        assert (alert, "pending") in states, states
    assert not {alert for alert, _ in states} & {
        "SwitchyardControlStoreDown",
        "SwitchyardTargetDown",
    }


def test_the_check_reports_bad_and_empty_expressions(observed: Observed) -> None:
    problems = run_all(
        observed.prometheus,
        [
            NamedQuery("panel typo", "sum by (model (switchyard_requests_total)"),
            NamedQuery("panel no such metric", 'switchyard_no_such_metric{model=~"$model"}'),
            NamedQuery("panel fine", 'switchyard_requests_total{model=~"$model"}'),
        ],
    )
    assert len(problems) == 2
    assert problems[0].startswith("panel typo: bad_data:")
    assert problems[1].startswith("panel no such metric: no data")
    with pytest.raises(ValueError, match=r"\$__unknown"):
        substitute_variables("rate(x[$__unknown])")

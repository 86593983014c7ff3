"""`switchyard render ray` and the config sections of the Ray host, without starting Ray."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtests.gateway_process import REPO_ROOT
from loadtests.slow_model import build_slow_model
from switchyard.server.autoscaling.ray_adapter import RayLatencyPolicy
from switchyard.server.config import ConfigError, SwitchyardConfig, load_config
from tests.ray_host.support import (
    INGRESS_REPLICAS,
    LOCAL_SLOW_AUTOSCALING,
    SLOW_AUTOSCALING,
    SLOW_MODEL,
    SLOW_RAY,
    app_config,
)

pytest.importorskip("ray.serve")
from ray.serve.deployment import Application
from ray.serve.schema import ServeDeploySchema

from switchyard.server.autoscaling.latency_policy import ReplicaStats
from switchyard.server.ray_host.app import app_builder, render_serve_config, serve_config
from switchyard.server.ray_host.deployments import (
    deployed_models,
    fast_path_env,
    ingress_options,
    ingress_policy_model,
)
from switchyard.server.ray_host.ingress import merged_stats

# Our config sets metrics_interval_s, which Ray 2.60 still reads but has deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s`:DeprecationWarning")


@pytest.fixture(scope="module")
def config_path(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("render")
    config = app_config(demo_model_path, build_slow_model(workdir / "slow.onnx"), workdir)
    path = workdir / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def imported(path: str) -> object:
    """What Serve's controller imports for a `module:Name` path."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rendered_serve_config_deploys_the_app_with_the_latency_policy(config_path: Path) -> None:
    document = yaml.safe_load(render_serve_config(load_config(config_path), config_path))
    ServeDeploySchema.model_validate(document)  # what `serve deploy` checks first
    (app,) = document["applications"]
    assert app["import_path"] == "switchyard.server.ray_host.app:app_builder"
    assert app["args"] == {"config_path": str(config_path.resolve())}
    # Serve's fast path for the replicas; no local draining override on a cluster.
    assert app["runtime_env"] == {"env_vars": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}}
    assert (
        "switchyard.protos.open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
        in (document["grpc_options"]["grpc_servicer_functions"])
    )
    deployments = {d["name"]: d for d in app["deployments"]}
    # ranker, slow_local and pair_local are co-located in the ingress: no deployments.
    assert set(deployments) == {"ingress", f"{SLOW_MODEL}:1", "pair:1"}
    ingress = deployments["ingress"]
    assert ingress["ray_actor_options"] == {"num_cpus": 0.5}
    # slow_local autoscales: its policy scales the ingress, from INGRESS_REPLICAS.
    assert "num_replicas" not in ingress
    ingress_kwargs = ingress["autoscaling_config"]["policy"]["policy_kwargs"]
    assert {key: ingress_kwargs[key] for key in LOCAL_SLOW_AUTOSCALING} == LOCAL_SLOW_AUTOSCALING
    assert ingress["autoscaling_config"]["min_replicas"] == INGRESS_REPLICAS
    slow = deployments[f"{SLOW_MODEL}:1"]
    autoscaling = slow["autoscaling_config"]
    assert imported(autoscaling["policy"]["policy_function"]) is RayLatencyPolicy
    kwargs = autoscaling["policy"]["policy_kwargs"]
    assert {key: kwargs[key] for key in SLOW_AUTOSCALING} == SLOW_AUTOSCALING
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (1, 3)
    # The policy's windows are the only ones: Serve's own delays would stack on top of them.
    assert autoscaling["upscale_delay_s"] == autoscaling["downscale_delay_s"] == 0
    assert autoscaling["look_back_period_s"] == SLOW_RAY["look_back_period_s"]
    # The policy measures utilisation against the replicas' own concurrency limit.
    assert slow["max_ongoing_requests"] == SLOW_AUTOSCALING["max_ongoing_requests"]
    assert slow["ray_actor_options"] == {"num_cpus": SLOW_RAY["num_cpus"]}


def model_config(**fields: Any) -> dict[str, Any]:
    return {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}], **fields}


def parsed(tmp_path: Path, document: dict[str, Any]) -> SwitchyardConfig:
    path = tmp_path / "switchyard.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


def test_placement_defaults_to_ingress_for_cpu_models_and_deployment_for_gpu_ones(
    tmp_path: Path,
) -> None:
    gpu = {"execution_providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]}
    models = [
        model_config(name="cpu"),
        model_config(name="auto", runtime_options={"execution_providers": ["auto"]}),
        model_config(
            name="cuda", runtime_options={"execution_providers": ["CUDAExecutionProvider"]}
        ),
        model_config(name="trt", runtime_options=gpu),
        model_config(name="pinned_gpu", runtime_options=gpu, ray={"placement": "ingress"}),
        model_config(name="pinned_cpu", ray={"placement": "deployment"}),
    ]
    config = parsed(tmp_path, {"models": models})
    placements = {model.name: model.ray_placement for model in config.models}
    assert placements == {
        "cpu": "ingress",
        "auto": "ingress",
        "cuda": "deployment",
        "trt": "deployment",
        "pinned_gpu": "ingress",
        "pinned_cpu": "deployment",
    }
    assert [model.name for model in deployed_models(config)] == ["cuda", "trt", "pinned_cpu"]
    assert ingress_options(config)["num_replicas"] == 1  # the default: one ingress replica
    with pytest.raises(ConfigError) as error:
        parsed(tmp_path, {"models": [model_config(ray={"placement": "elsewhere"})]})
    assert "models.0.ray.placement: Input should be 'ingress' or 'deployment'" in str(error.value)


def test_a_colocated_autoscaled_model_scales_the_ingress_with_the_strictest_target(
    tmp_path: Path,
) -> None:
    loose = {"target_latency_s": 0.5, "max_replicas": 6}
    strict = {"target_latency_s": 0.05, "max_replicas": 4}
    models = [
        model_config(name="loose", autoscaling=loose),
        model_config(name="strict", autoscaling=strict, ray=SLOW_RAY | {"placement": "ingress"}),
        # Deployed: its policy stays on its own deployment.
        model_config(name="own", autoscaling={"target_latency_s": 0.01}, ray=SLOW_RAY),
    ]
    config = parsed(tmp_path, {"models": models, "ray": {"ingress_replicas": 3}})
    policy_model = ingress_policy_model(config)
    assert policy_model is not None and policy_model.name == "strict"
    options = ingress_options(config)
    assert "num_replicas" not in options  # the policy decides, not ray.ingress_replicas
    autoscaling = options["autoscaling_config"]
    assert imported(autoscaling["policy"]["policy_function"]) is RayLatencyPolicy
    assert autoscaling["policy"]["policy_kwargs"]["target_latency_s"] == 0.05
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (1, 4)
    assert autoscaling["look_back_period_s"] == SLOW_RAY["look_back_period_s"]
    # The policy measures its model's in-flight requests against its own
    # max_ongoing_requests; the ingress's limit stays what it is without a policy, far above
    # that one (the ingress also routes, and forwards to deployed models).
    fixed = ingress_options(parsed(tmp_path, {"models": [model_config(name="plain")]}))
    assert "autoscaling_config" not in fixed
    policy_limit = autoscaling["policy"]["policy_kwargs"]["max_ongoing_requests"]
    assert options["max_ongoing_requests"] == fixed["max_ongoing_requests"] > 10 * policy_limit
    document = serve_config(config, tmp_path / "switchyard.yaml")
    ServeDeploySchema.model_validate(document)
    (app,) = document["applications"]
    assert [d["name"] for d in app["deployments"]] == ["ingress", "own:1"]


def test_fast_path_off_renders_no_serve_flags(tmp_path: Path) -> None:
    config = parsed(tmp_path, {"models": [model_config()], "ray": {"fast_path": False}})
    assert fast_path_env(config, local=True) == {}
    (app,) = serve_config(config, tmp_path / "switchyard.yaml")["applications"]
    assert "runtime_env" not in app
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in render_serve_config(config, tmp_path / "c.yaml")
    on = parsed(tmp_path, {"models": [model_config()]})
    assert fast_path_env(on, local=True) == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


def test_the_ingress_reports_its_policy_models_versions_merged() -> None:
    idle = ReplicaStats(p95_latency_s=0.0, request_rate_per_s=0.0, in_flight=0.0)
    busy = ReplicaStats(
        p95_latency_s=0.08, request_rate_per_s=40.0, in_flight=3.0, p99_latency_s=0.1
    )
    other = ReplicaStats(p95_latency_s=0.02, request_rate_per_s=10.0, in_flight=1.0)
    # An idle version's zero latency hides nothing; the requests of every version add up.
    assert merged_stats([idle, busy, other]) == ReplicaStats(
        p95_latency_s=0.08, request_rate_per_s=50.0, in_flight=4.0, p99_latency_s=0.1
    )
    assert merged_stats([idle]) == idle


def test_the_ray_section_is_checked_by_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parsed(tmp_path, {"models": [model_config()], "ray": {"ingress_replicas": 0, "x": 1}})
    assert "ray.ingress_replicas: Input should be greater than or equal to 1" in str(error.value)
    assert "ray.x: Extra inputs are not permitted" in str(error.value)


def test_the_import_path_builds_the_app(config_path: Path) -> None:
    assert isinstance(app_builder({"config_path": str(config_path)}), Application)


def test_render_command_writes_the_file(config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "serve.yaml"
    result = run_cli("render", "ray", "--config", str(config_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == render_serve_config(load_config(config_path), config_path)


def test_invalid_autoscaling_is_named_by_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    model = {"name": "m", "versions": [{"version": "1", "path": "m.onnx"}]}
    path.write_text(yaml.safe_dump({"models": [{**model, "autoscaling": {"max_replicas": 0}}]}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "models.0.autoscaling.target_latency_s: Field required" in str(error.value)
    assert "models.0.autoscaling.max_replicas: Input should be greater than" in str(error.value)
    autoscaling = {"target_latency_s": 0.1, "max_replica": 3}
    path.write_text(yaml.safe_dump({"models": [{**model, "autoscaling": autoscaling}]}))
    result = run_cli("render", "ray", "--config", str(path))
    assert result.returncode == 2
    assert "models.0.autoscaling.max_replica: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr

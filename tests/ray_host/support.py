"""The config the Ray host tests serve: the demo (ranker, endpoint, features) co-located in
two ingress replicas, a slow model both in a deployment of its own and co-located, each
autoscaled on latency with windows of seconds, so that scaling shows within a test (the
co-located one scales the ingress), and a two-input model both co-located and deployed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import onnx
import yaml
from onnx import TensorProto, helper

from switchyard.demo.paths import DEMO_CONFIG_PATH, artifacts_dir

SLOW_MODEL = "slow"
PAIR_MODEL = "pair"  # placement deployment
LOCAL_PAIR_MODEL = "pair_local"  # the same model, co-located
INGRESS_REPLICAS = 2
ADMIN_TOKEN = "ray-test-admin-token-0123456789"
# Two variants of one model: which one serves shows whose weights a replica routes by.
FLIP_ENDPOINT = {
    "name": "flip",
    "variants": {
        "a": {"model": "ranker", "version": "1"},
        "b": {"model": "ranker", "version": "1"},
    },
    "weights": {"a": 1},
}
# Co-located and autoscaled: its policy scales the ingress deployment, from 2 replicas.
LOCAL_SLOW_MODEL = "slow_local"
LOCAL_SLOW_AUTOSCALING = {
    "target_latency_s": 0.03,
    "min_replicas": INGRESS_REPLICAS,
    "max_replicas": INGRESS_REPLICAS + 1,
    "max_ongoing_requests": 8,
    "upscale_stabilization_s": 1.0,
    "downscale_stabilization_s": 2.0,
    "scale_up_period_s": 1.0,
    "scale_down_period_s": 1.0,
}
# The slow model takes about 20 ms a call on one core; four closed-loop callers keep a single
# replica's p95 several times over the target, and without traffic the policy asks for 1.
SLOW_AUTOSCALING = {
    "target_latency_s": 0.04,
    "max_replicas": 3,
    "max_ongoing_requests": 8,
    "upscale_stabilization_s": 1.0,
    "downscale_stabilization_s": 2.0,
    "scale_up_period_s": 1.0,
    "scale_down_period_s": 1.0,
}
# A deployment of its own: the test scales the variant deployment.
SLOW_RAY = {
    "placement": "deployment",
    "look_back_period_s": 2.0,
    "metrics_interval_s": 0.5,
    "num_cpus": 0.5,
}


def build_pair_model(path: Path) -> Path:
    """`z = a + b` on two FP32 [-1, 4] inputs: a request can disagree on their batch sizes,
    which only the variant's batcher checks."""
    tensors = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4]) for name in "abz"
    ]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["z"])], "pair", tensors[:2], tensors[2:]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def app_config(demo_model_path: Path, slow_model_path: Path, workdir: Path) -> dict[str, Any]:
    pair_model_path = build_pair_model(workdir / "pair.onnx")
    demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    features = copy.deepcopy(demo["features"])
    seed_files = features["store"]["seed_files"]
    for entity, path in seed_files.items():
        seed_files[entity] = str(artifacts_dir() / path)
    return {
        "models": [
            {
                "name": "ranker",
                "versions": [{"version": "1", "path": str(demo_model_path)}],
                "runtime_options": {"intra_op_threads": 1},
            },
            {
                "name": SLOW_MODEL,
                "versions": [{"version": "1", "path": str(slow_model_path)}],
                "runtime_options": {"intra_op_threads": 1},
                "batching": {"max_batch_size": 0},  # one call at a time: latency grows with load
                "autoscaling": SLOW_AUTOSCALING,
                "ray": SLOW_RAY,
            },
            {
                "name": PAIR_MODEL,
                "versions": [{"version": "1", "path": str(pair_model_path)}],
                "ray": {"placement": "deployment", "num_cpus": 0.25},
            },
            {
                "name": LOCAL_SLOW_MODEL,
                "versions": [{"version": "1", "path": str(slow_model_path)}],
                "runtime_options": {"intra_op_threads": 1},
                "batching": {"max_batch_size": 0},
                "autoscaling": LOCAL_SLOW_AUTOSCALING,
                "ray": {**SLOW_RAY, "placement": "ingress"},
            },
            {
                "name": LOCAL_PAIR_MODEL,
                "versions": [{"version": "1", "path": str(pair_model_path)}],
            },
        ],
        "endpoints": [*demo["endpoints"], FLIP_ENDPOINT],
        "features": features,
        "admin": {"token": ADMIN_TOKEN},
        # 0.5 CPU each: the tests' Ray has 8 logical CPUs for every replica. LOCAL_SLOW_MODEL's
        # policy scales the ingress, from INGRESS_REPLICAS: ingress_replicas does not apply.
        "ray": {"ingress_replicas": INGRESS_REPLICAS, "ingress_num_cpus": 0.5},
    }

"""Names and options of the Serve application's deployments, from the config file alone.

app.py builds the application with them and writes them into the Serve config YAML, so that
`switchyard serve --engine ray` and `serve deploy` of the rendered file deploy the same thing.
"""

from __future__ import annotations

from typing import Any

from switchyard.server.autoscaling.latency_policy import LatencyPolicyConfig
from switchyard.server.autoscaling.ray_adapter import autoscaling_config
from switchyard.server.config import AUTO_MAX_BATCH_SIZE, ModelConfig, SwitchyardConfig

APP_NAME = "switchyard"
INGRESS_NAME = "ingress"
# The ingress decodes, routes and awaits variants: it holds many requests at once cheaply.
INGRESS_MAX_ONGOING_REQUESTS = 1024
# Registered on Serve's gRPC proxy; the proxy calls the ingress method named like each RPC.
GRPC_SERVICER_FUNCTIONS = (
    "switchyard.protos.open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server",
    "switchyard.protos.recommend_pb2_grpc.add_RecommenderServicer_to_server",
)
SERVE_DEFAULT_MAX_ONGOING_REQUESTS = 5
# Serve's fast path (Ray 2.60, serve/_private/constants.py): THROUGHPUT_OPTIMIZED turns on
# direct ingress (each ingress replica serves HTTP and gRPC on ports of its own, allocated by
# the controller per node from 30000-31000 and 40000-41000; the proxy runs on the head node
# only), gRPC between handles and replicas, and user code on the replica's own event loop.
# Read at import by every Ray process, the controller included: set before Ray starts.
FAST_PATH_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# Direct-ingress replicas stay up this long after being told to stop, for a load balancer
# to deregister them (Ray's default 30 s); a local run has none in front.
LOCAL_FAST_PATH_ENV = {**FAST_PATH_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}


def fast_path_env(config: SwitchyardConfig, local: bool) -> dict[str, str]:
    """The environment variables of Serve's fast path (none with `ray.fast_path: false`);
    `local`: for a Ray this process starts."""
    if not config.ray.fast_path:
        return {}
    return dict(LOCAL_FAST_PATH_ENV if local else FAST_PATH_ENV)


def variant_name(model: str, version: str) -> str:
    """The deployment of one model version (as the standalone log labels it); neither name may
    hold ':', so the names are unique."""
    return f"{model}:{version}"


def latency_policy(model: ModelConfig) -> LatencyPolicyConfig | None:
    if model.autoscaling is None:
        return None
    return model.autoscaling.to_policy_config()


def deployed_models(config: SwitchyardConfig) -> list[ModelConfig]:
    """The models whose versions get deployments of their own (placement deployment)."""
    return [model for model in config.models if model.ray_placement == "deployment"]


def ingress_policy_model(config: SwitchyardConfig) -> ModelConfig | None:
    """The co-located autoscaled model whose latency policy scales the ingress deployment:
    the one with the strictest target (one deployment has one policy)."""
    autoscaled = [
        model
        for model in config.models
        if model.ray_placement == "ingress" and model.autoscaling is not None
    ]
    return min(autoscaled, key=_target_latency_s, default=None)


def _target_latency_s(model: ModelConfig) -> float:
    assert model.autoscaling is not None
    return model.autoscaling.target_latency_s


def _autoscaling_options(model: ModelConfig, policy: LatencyPolicyConfig) -> dict[str, Any]:
    return {
        **autoscaling_config(policy),  # the latency policy as the custom policy
        "look_back_period_s": model.ray.look_back_period_s,
        "metrics_interval_s": model.ray.metrics_interval_s,
    }


def variant_max_ongoing_requests(model: ModelConfig) -> int:
    """Requests one replica takes at once, which bounds how many requests one batch merges.
    Autoscaled: the policy's max_ongoing_requests, which its utilisation is measured against.
    Otherwise: at least a batch of one-row requests, so that full batches can form."""
    policy = latency_policy(model)
    if policy is not None:
        return policy.max_ongoing_requests
    configured = model.batching.max_batch_size
    batch_rows = AUTO_MAX_BATCH_SIZE if configured is None else configured
    return max(SERVE_DEFAULT_MAX_ONGOING_REQUESTS, batch_rows)


def variant_options(model: ModelConfig) -> dict[str, Any]:
    """The serve.deployment options of each version of `model` (Serve config YAML keys too)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": variant_max_ongoing_requests(model),
        # Past this many requests waiting in a caller's handle for a replica, the caller is
        # refused at once (RESOURCE_EXHAUSTED / 503), like a full batcher queue standalone.
        "max_queued_requests": model.batching.max_queue_size,
        "ray_actor_options": {"num_cpus": model.ray.num_cpus},
    }
    if model.ray.num_gpus > 0:
        options["ray_actor_options"]["num_gpus"] = model.ray.num_gpus
    policy = latency_policy(model)
    if policy is None:
        options["num_replicas"] = model.ray.num_replicas
    else:
        options["autoscaling_config"] = _autoscaling_options(model, policy)
    return options


def ingress_options(config: SwitchyardConfig) -> dict[str, Any]:
    """The ingress deployment's options: `ray.ingress_replicas` fixed replicas, or the latency
    policy of ingress_policy_model. Its max_ongoing_requests stays the ingress's own (the
    ingress also routes, and forwards to deployed models), so the policy's utilisation is
    that model's in-flight requests against the policy's max_ongoing_requests."""
    options: dict[str, Any] = {
        "max_ongoing_requests": INGRESS_MAX_ONGOING_REQUESTS,
        "ray_actor_options": {"num_cpus": config.ray.ingress_num_cpus},
    }
    model = ingress_policy_model(config)
    policy = None if model is None else latency_policy(model)
    if model is None or policy is None:
        options["num_replicas"] = config.ray.ingress_replicas
    else:
        options["autoscaling_config"] = _autoscaling_options(model, policy)
    return options

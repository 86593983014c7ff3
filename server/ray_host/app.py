"""The Serve application of a config file: run on a local Ray, or rendered for `serve deploy`.

One application: the ingress deployment (`ingress`), which runs the co-located models
(`ray.placement: ingress`) itself, bound to one variant deployment per version of every
other model (`<model>:<version>`), whose handles it receives in its constructor.

Every Ray worker must import our packages (server, router, runtimes, protos) under their own
names: Serve's gRPC proxy pickles each request message to hand it to the ingress, the
controller unpickles the autoscaling policy, and replicas import their classes. A local Ray
started from this environment has them (switchyard installed, editable or not); a cluster
needs switchyard installed in its image, or a runtime_env that ships it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import serve
from ray.serve.deployment import Application

from switchyard.server.config import ServerSettings, SwitchyardConfig, load_config
from switchyard.server.ray_host.deployments import (
    APP_NAME,
    GRPC_SERVICER_FUNCTIONS,
    INGRESS_NAME,
    deployed_models,
    fast_path_env,
    ingress_options,
    variant_name,
    variant_options,
)
from switchyard.server.ray_host.ingress import IngressReplica
from switchyard.server.ray_host.variant import VariantReplica

log = logging.getLogger(__name__)

BUILDER_IMPORT_PATH = f"{__name__}:app_builder"
CONFIG_PATH_ARG = "config_path"
# The controller publishes the replicas' direct-ingress ports shortly after they run.
TARGETS_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class IngressEndpoint:
    """Where clients reach one ingress replica directly (Serve's direct ingress)."""

    protocol: str  # "HTTP" or "gRPC"
    host: str
    port: int
    replica: str

    def line(self) -> str:
        """How it is printed at start (loadtests.targets reads the ports back from it)."""
        return f"ingress replica {self.replica}: {self.protocol} on {self.host}:{self.port}"


def build_app(config: SwitchyardConfig, config_path: Path | None = None) -> Application:
    """The application; with `config_path`, the ingress reloads endpoint edits from it."""
    ingress_deployment_options = ingress_options(config)
    # Autoscaled (no num_replicas): it may run several.
    if config.control.store == "memory" and ingress_deployment_options.get("num_replicas", 2) > 1:
        log.warning(
            "more than one ingress replica on control.store memory: admin changes and "
            "rollouts stay in the replica that took them (use control.store redis)"
        )
    # serve.deployment() then the class: Ray types only this form (a class passed directly
    # works the same, but is typed as returning the decorator).
    variant = serve.deployment()(VariantReplica)
    variants = {}
    for model in deployed_models(config):
        options = variant_options(model)
        for version in model.versions:
            name = variant_name(model.name, version.version)
            variants[name] = variant.options(name=name, **options).bind(
                model, version.version, config.server.max_request_size_bytes, config.tracing
            )
    ingress = serve.deployment()(serve.ingress()(IngressReplica))
    return ingress.options(name=INGRESS_NAME, **ingress_deployment_options).bind(
        config, variants, None if config_path is None else str(config_path)
    )


def app_builder(args: dict[str, Any]) -> Application:
    """The import_path of the rendered Serve config: `args: {config_path: FILE}`, the config
    file as the cluster sees it (SWITCHYARD_* variables of the controller apply)."""
    if CONFIG_PATH_ARG not in args:
        raise ValueError(f"the application's args need '{CONFIG_PATH_ARG}': the config file")
    config_path = Path(args[CONFIG_PATH_ARG])
    return build_app(load_config(config_path), config_path)


def _http_options(settings: ServerSettings) -> dict[str, Any]:
    return {"host": settings.host, "port": settings.http_port}


def _grpc_options(settings: ServerSettings) -> dict[str, Any]:
    return {"port": settings.grpc_port, "grpc_servicer_functions": list(GRPC_SERVICER_FUNCTIONS)}


def _protocol_name(protocol: Any) -> str:
    # Serve's RequestProtocol is a str Enum ("HTTP", "gRPC"), or its value once serialised.
    return str(getattr(protocol, "value", protocol))


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def _reachable_host(protocol: str, node_ip: str, http_host: str) -> str:
    # A replica's HTTP server listens on the config's host (Serve's HTTPOptions.host), its
    # gRPC server on every interface; Serve lists the node's IP for both.
    if protocol == "HTTP" and http_host not in WILDCARD_HOSTS:
        return http_host
    return node_ip


def _direct_ingress_endpoints(http_host: str, app_name: str) -> list[IngressEndpoint]:
    # Serve's instance details list target groups: under direct ingress, an application's
    # are its ingress replicas' own ports; the proxies' (the config's ports) have no app_name.
    client = serve.context._get_global_client()
    if client is None:  # not connected to Serve: nothing to list
        return []
    details = client.get_serve_details()
    return sorted(
        (
            IngressEndpoint(
                protocol, _reachable_host(protocol, t["ip"], http_host), t["port"], t["name"]
            )
            for group in details.get("target_groups", [])
            if group.get("app_name") == app_name
            for protocol in [_protocol_name(group["protocol"])]
            for t in group["targets"]
        ),
        key=lambda e: (e.protocol, e.port),
    )


def ingress_endpoints(
    replicas: int,
    http_host: str,
    timeout_s: float = TARGETS_TIMEOUT_S,
    app_name: str = APP_NAME,
) -> list[IngressEndpoint]:
    """The ingress replicas' direct-ingress ports (empty without direct ingress), once the
    controller lists `replicas` of them per protocol, or what it lists after `timeout_s`."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        endpoints = _direct_ingress_endpoints(http_host, app_name)
        per_protocol = [sum(e.protocol == p for e in endpoints) for p in {"HTTP", "gRPC"}]
        if min(per_protocol) >= replicas or time.monotonic() > deadline_s:
            return endpoints
        time.sleep(0.2)


def start_on_local_ray(
    config: SwitchyardConfig, config_path: Path | None = None
) -> list[IngressEndpoint]:
    """Deploy on the Ray this process is connected to, or on a local one started here, with
    Serve's proxies on the config's HTTP and gRPC ports; returns once the app is running,
    with the ports of the ingress replicas themselves under Serve's direct ingress."""
    if not ray.is_initialized():
        ray.init()
    settings = config.server
    serve.start(http_options=_http_options(settings), grpc_options=_grpc_options(settings))
    serve.run(build_app(config, config_path), name=APP_NAME, route_prefix="/")
    endpoints: list[IngressEndpoint] = []
    if fast_path_env(config, local=True):
        options = ingress_options(config)
        replicas = options.get("num_replicas") or options["autoscaling_config"]["min_replicas"]
        endpoints = ingress_endpoints(replicas, settings.host)
        if not endpoints:  # e.g. a Ray started before, without the flag, or the flag set to 0
            log.info("Serve's direct ingress is off: clients reach the ingress through the proxies")
    if not endpoints:
        log.info(
            "switchyard on Ray Serve: REST on %s:%d, gRPC on port %d",
            settings.host, settings.http_port, settings.grpc_port,
        )  # fmt: skip
        return endpoints
    # Serve's proxies still listen on the config's ports, but under direct ingress they are
    # the slow path, REST above all: for each HTTP request the replica looks the proxy actor
    # up and calls back into it for the body (Serve's StreamingHTTPRequest), Ray round
    # trips that cost more CPU than the request itself (README.md, "Serve's fast path").
    log.info(
        "switchyard on Ray Serve: Serve's proxies (the slow path) on %s:%d (REST) and port %d "
        "(gRPC); clients reach the ingress replicas on their own ports:",
        settings.host, settings.http_port, settings.grpc_port,
    )  # fmt: skip
    for endpoint in endpoints:
        log.info("%s", endpoint.line())
    return endpoints


def run_on_local_ray(config: SwitchyardConfig, config_path: Path | None = None) -> None:
    """`switchyard serve --engine ray`: serve until SIGINT or SIGTERM, then shut Serve down
    (replicas drain their queues) and the local Ray with it."""
    if not ray.is_initialized():
        ray.init()
    # After ray.init, which installs a SIGTERM handler of its own (exit at once).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        start_on_local_ray(config, config_path)
        stop.wait()
        log.info("signal received, shutting down")
    finally:
        serve.shutdown()
        ray.shutdown()


def serve_config(
    config: SwitchyardConfig, config_path: Path, cluster_config_path: Path | None = None
) -> dict[str, Any]:
    """The Serve config (ServeDeploySchema) that deploys what build_app builds; its
    application reads the config file at `cluster_config_path` (a path on the cluster's
    nodes, e.g. a ConfigMap's mount), by default `config_path` resolved here."""
    app_config_path = config_path.resolve() if cluster_config_path is None else cluster_config_path
    deployments = [{"name": INGRESS_NAME, **ingress_options(config)}]
    for model in deployed_models(config):
        options = variant_options(model)
        for version in model.versions:
            deployments.append({"name": variant_name(model.name, version.version), **options})
    application: dict[str, Any] = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": BUILDER_IMPORT_PATH,
        "args": {CONFIG_PATH_ARG: str(app_config_path)},
    }
    env_vars = fast_path_env(config, local=False)
    if env_vars:
        # The replicas' side of the fast path; the controller's needs the same variables in
        # the cluster's own environment (render_serve_config's header says so).
        application["runtime_env"] = {"env_vars": env_vars}
    return {
        "http_options": _http_options(config.server),
        "grpc_options": _grpc_options(config.server),
        "applications": [{**application, "deployments": deployments}],
    }


def render_serve_config(
    config: SwitchyardConfig, config_path: Path, cluster_config_path: Path | None = None
) -> str:
    """`switchyard render ray`: the Serve config YAML for `serve deploy`; the application
    reads the config file at `cluster_config_path` (default: `config_path`, resolved)."""
    header = (
        f"# Ray Serve config of {config_path}, written by `switchyard render ray`.\n"
        "# Deploy with `serve deploy FILE`. The cluster needs switchyard installed and the\n"
        "# config file (and the model files it names) at the paths below; the options here\n"
        "# win over the config file's, so edit them here (ray_actor_options, num_replicas).\n"
    )
    if fast_path_env(config, local=False):
        header += (
            "# Serve's fast path (RAY_SERVE_THROUGHPUT_OPTIMIZED=1, direct ingress) is read by\n"
            "# every Ray process, the Serve controller included: set it in the environment of\n"
            "# every Ray container (KubeRay: the pods' env), not only in runtime_env below.\n"
            "# Clients then reach the ingress replicas on their own ports (HTTP 30000-31000,\n"
            "# gRPC 40000-41000): on Kubernetes through a Service over the ingress pods.\n"
        )
    rendered = serve_config(config, config_path, cluster_config_path)
    return header + yaml.safe_dump(rendered, sort_keys=False)

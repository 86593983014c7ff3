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
    ingress_options,
    variant_name,
    variant_options,
)
from switchyard.server.ray_host.ingress import IngressReplica
from switchyard.server.ray_host.variant import VariantReplica

log = logging.getLogger(__name__)

BUILDER_IMPORT_PATH = f"{__name__}:app_builder"
CONFIG_PATH_ARG = "config_path"


def build_app(config: SwitchyardConfig, config_path: Path | None = None) -> Application:
    """The application; with `config_path`, the ingress reloads endpoint edits from it."""
    # serve.deployment() then the class: Ray types only this form (a class passed directly
    # works the same, but is typed as returning the decorator).
    variant = serve.deployment()(VariantReplica)
    variants = {}
    for model in deployed_models(config):
        options = variant_options(model)
        for version in model.versions:
            name = variant_name(model.name, version.version)
            variants[name] = variant.options(name=name, **options).bind(model, version.version)
    ingress = serve.deployment()(serve.ingress()(IngressReplica))
    return ingress.options(name=INGRESS_NAME, **ingress_options(config)).bind(
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


def start_on_local_ray(config: SwitchyardConfig, config_path: Path | None = None) -> None:
    """Deploy on the Ray this process is connected to, or on a local one started here, with
    Serve's proxies on the config's HTTP and gRPC ports; returns once the app is running."""
    if not ray.is_initialized():
        ray.init()
    settings = config.server
    serve.start(http_options=_http_options(settings), grpc_options=_grpc_options(settings))
    serve.run(build_app(config, config_path), name=APP_NAME, route_prefix="/")
    log.info(
        "switchyard on Ray Serve: REST on %s:%d, gRPC on port %d",
        settings.host, settings.http_port, settings.grpc_port,
    )  # fmt: skip


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


def serve_config(config: SwitchyardConfig, config_path: Path) -> dict[str, Any]:
    """The Serve config (ServeDeploySchema) that deploys what build_app builds."""
    deployments = [{"name": INGRESS_NAME, **ingress_options(config)}]
    for model in deployed_models(config):
        options = variant_options(model)
        for version in model.versions:
            deployments.append({"name": variant_name(model.name, version.version), **options})
    return {
        "http_options": _http_options(config.server),
        "grpc_options": _grpc_options(config.server),
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": BUILDER_IMPORT_PATH,
                "args": {CONFIG_PATH_ARG: str(config_path.resolve())},
                "deployments": deployments,
            }
        ],
    }


def render_serve_config(config: SwitchyardConfig, config_path: Path) -> str:
    """`switchyard render ray`: the Serve config YAML for `serve deploy`."""
    header = (
        f"# Ray Serve config of {config_path}, written by `switchyard render ray`.\n"
        "# Deploy with `serve deploy FILE`. The cluster needs switchyard installed and the\n"
        "# config file (and the model files it names) at the paths below; the options here\n"
        "# win over the config file's, so edit them here (ray_actor_options, num_replicas).\n"
    )
    return header + yaml.safe_dump(serve_config(config, config_path), sort_keys=False)

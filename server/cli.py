"""The `switchyard` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from switchyard.runtimes.errors import SwitchyardError
from switchyard.server.access import add_admin_subcommand
from switchyard.server.audit_cli import add_audit_subcommand
from switchyard.server.autoscaling.cli import add_autoscale_subcommand
from switchyard.server.config import (
    DEFAULT_CONFIG_PATH,
    REPOSITORY_ENV,
    ConfigError,
    load_config,
    parse_config,
)
from switchyard.server.config_cli import add_config_subcommand
from switchyard.server.features.cli import add_features_subcommand
from switchyard.server.profile_cli import add_profile_subcommand
from switchyard.server.ray_host.cli import add_render_subcommand, serve_on_ray


def _serve(args: argparse.Namespace) -> int:
    _repository_flags_to_env(args)
    config_path: Path | None = args.config
    try:
        if config_path is not None:
            config = load_config(config_path)
        elif args.model_repository is not None:
            # Like tritonserver --model-repository: the repository's models, built-in defaults.
            config = parse_config({}, Path.cwd(), "(command line)")
        else:
            # The embedded default serves the demo ranker, built on first use (about a second).
            from switchyard.demo.build_model import ensure_built

            ensure_built()
            config_path = DEFAULT_CONFIG_PATH
            config = load_config(config_path)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    worker = os.environ.get("SWITCHYARD_WORKER_INDEX")  # set by the supervisor (workers.py)
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if worker is None
        else f"%(asctime)s %(levelname)s [worker {worker}] %(name)s: %(message)s",
    )
    if args.engine == "ray":
        if config.server.workers != 1:
            print("switchyard: server.workers is for the standalone engine", file=sys.stderr)
            return 2
        if config.server.tls is not None or config.server.metrics_tls is not None:
            # Serve's own proxies serve the ports there; plaintext would be a silent downgrade.
            print(
                "switchyard: server.tls and server.metrics_tls are for the standalone engine "
                "(on Ray, terminate TLS in front of Serve's proxies: see README, TLS)",
                file=sys.stderr,
            )
            return 2
        return serve_on_ray(config, config_path)
    from switchyard.server.app import run_standalone

    try:
        if worker is None and config.server.workers == 1:
            run_standalone(config, config_path)  # one process: no supervisor at all
            return 0
        from switchyard.server.workers import run_supervisor, run_worker

        if config_path is None:
            print("switchyard: server.workers > 1 needs a --config file", file=sys.stderr)
            return 2
        if worker is None:
            return run_supervisor(config, config_path)
        run_worker(config, config_path, int(worker))
    except (SwitchyardError, OSError) as exc:  # a model that cannot load, feature files
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1
    return 0


def _repository_flags_to_env(args: argparse.Namespace) -> None:
    """Triton's model repository flags, as the environment the config reads them from (so
    that worker processes and config reloads see them too: server/config.py)."""
    if args.model_repository is not None:
        os.environ[REPOSITORY_ENV["path"]] = str(args.model_repository.resolve())
    if args.model_control_mode is not None:
        os.environ[REPOSITORY_ENV["control_mode"]] = args.model_control_mode
        if args.model_control_mode == "explicit" and not args.load_model:
            os.environ[REPOSITORY_ENV["load"]] = ""  # Triton's explicit mode: none at start
    if args.load_model:
        os.environ[REPOSITORY_ENV["load"]] = ",".join(args.load_model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchyard", description="Switchyard model-serving gateway."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the models of a config file")
    serve.add_argument(
        "--config", type=Path, default=None, help="config file (default: the embedded demo)"
    )
    serve.add_argument(
        "--engine",
        choices=("standalone", "ray"),
        default="standalone",
        help="standalone: one process (default); ray: Ray Serve deployments on a local Ray",
    )
    serve.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        metavar="DIR",
        help="a Triton-layout model repository served beside the config's models",
    )
    serve.add_argument(
        "--model-control-mode",
        choices=("none", "poll", "explicit"),
        default=None,
        help="none: what loads at start stays; poll: follow the repository folder; explicit "
        "(default): load and unload through the repository API",
    )
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="a repository model to load at start in explicit mode (repeat; * for all)",
    )
    serve.set_defaults(handler=_serve)
    add_audit_subcommand(commands)
    add_admin_subcommand(commands)
    add_autoscale_subcommand(commands)
    add_config_subcommand(commands)
    add_features_subcommand(commands)
    add_profile_subcommand(commands)
    add_render_subcommand(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler  # set by each subcommand
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

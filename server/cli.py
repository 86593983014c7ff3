"""The `switchyard` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from switchyard.runtimes.errors import InvalidArgument, ModelLoadError
from switchyard.server.autoscaling.cli import add_autoscale_subcommand
from switchyard.server.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from switchyard.server.config_cli import add_config_subcommand
from switchyard.server.features.cli import add_features_subcommand
from switchyard.server.ray_host.cli import add_render_subcommand, serve_on_ray


def _serve(args: argparse.Namespace) -> int:
    if args.config is None:
        # The embedded default serves the demo ranker, built on first use (about a second).
        from switchyard.demo.build_model import ensure_built

        ensure_built()
    config_path = args.config or DEFAULT_CONFIG_PATH
    try:
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
        return serve_on_ray(config, config_path)
    from switchyard.server.app import run_standalone

    try:
        if worker is None and config.server.workers == 1:
            run_standalone(config, config_path)  # one process: no supervisor at all
            return 0
        from switchyard.server.workers import run_supervisor, run_worker

        if worker is None:
            return run_supervisor(config, config_path)
        run_worker(config, config_path, int(worker))
    except (ModelLoadError, InvalidArgument, OSError) as exc:  # InvalidArgument: feature files
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1
    return 0


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
    serve.set_defaults(handler=_serve)
    add_autoscale_subcommand(commands)
    add_config_subcommand(commands)
    add_features_subcommand(commands)
    add_render_subcommand(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler  # set by each subcommand
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

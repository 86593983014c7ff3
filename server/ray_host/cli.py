"""The Ray host's commands: `switchyard serve --engine ray` and `switchyard render ray`.

Ray is an optional extra (`pip install 'switchyard[ray]'`): it is imported only when one of
these runs, and its absence is a clear message with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from switchyard.server.config import ConfigError, SwitchyardConfig, load_config
from switchyard.server.k8s_render import add_k8s_target
from switchyard.server.ray_host.deployments import fast_path_env

RAY_MISSING = "the Ray host needs Ray Serve: pip install 'switchyard[ray]'"


def serve_on_ray(config: SwitchyardConfig, config_path: Path | None) -> int:
    """`switchyard serve --engine ray`: the exit code."""
    # Before Ray is imported and started: Serve reads its flags once per process, and the
    # local Ray's processes inherit this environment. A variable already set wins.
    for name, value in fast_path_env(config, local=True).items():
        os.environ.setdefault(name, value)
    try:
        from switchyard.server.ray_host.app import run_on_local_ray
    except ImportError as exc:
        print(f"switchyard: {RAY_MISSING} ({exc})", file=sys.stderr)
        return 2
    try:
        run_on_local_ray(config, config_path)
    except RuntimeError as exc:  # Serve's way of saying the application failed to deploy
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1
    return 0


def _render_ray(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    try:
        from switchyard.server.ray_host.app import render_serve_config
    except ImportError as exc:
        print(f"switchyard: {RAY_MISSING} ({exc})", file=sys.stderr)
        return 2
    cluster_path: Path | None = args.cluster_config_path
    if cluster_path is not None and not cluster_path.is_absolute():
        print(
            f"switchyard: --cluster-config-path must be absolute, not {cluster_path}: the "
            "Serve application reads it on the cluster's nodes",
            file=sys.stderr,
        )
        return 2
    text = render_serve_config(config, args.config, cluster_path)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text)
    except OSError as exc:
        print(f"switchyard: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def add_render_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = subparsers.add_parser("render", help="write the deployment config of another host")
    targets = render.add_subparsers(dest="render_target", required=True)
    ray = targets.add_parser(
        "ray",
        help="the Ray Serve config YAML for `serve deploy`",
        description="Writes the Serve config that deploys a config file's models on a Ray "
        "cluster with `serve deploy`: the same application as `serve --engine ray`.",
    )
    ray.add_argument("--config", type=Path, required=True, help="the Switchyard config file")
    ray.add_argument("--out", type=Path, default=None, help="output file (default: stdout)")
    ray.add_argument(
        "--cluster-config-path",
        type=Path,
        default=None,
        help="where the cluster's nodes read the config file (e.g. a ConfigMap's mount on "
        "KubeRay); default: the --config file's absolute path",
    )
    ray.set_defaults(handler=_render_ray)
    add_k8s_target(targets)

"""`switchyard render k8s`: keeps a kustomize overlay of k8s/ in step with a config file.

An overlay holds the Switchyard config as `switchyard.yaml`, which its configMapGenerator turns
into the ConfigMap the pods mount at /etc/switchyard. The Ray overlay also holds
`serve-config.yaml`, the Serve config that kustomize copies into the RayService's
serveConfigV2 (a `replacements:` entry): it is `switchyard render ray` of that config, with the
application reading the file where the pods mount it. This command writes both from one config
file, or with --check says which of them have drifted from it (for CI).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from switchyard.server.config import ConfigError, load_config

CONFIG_FILE_NAME = "switchyard.yaml"  # in an overlay, and the ConfigMap's key
SERVE_CONFIG_FILE_NAME = "serve-config.yaml"  # the Ray overlay's serveConfigV2
# Where every pod mounts the ConfigMap (k8s/base/deployment.yaml, k8s/overlays/ray).
CLUSTER_CONFIG_PATH = Path("/etc/switchyard") / CONFIG_FILE_NAME
RAY_MISSING = "rendering the Ray overlay needs Ray Serve: pip install 'switchyard[ray]'"


class RenderError(Exception):
    """The overlay cannot be rendered; the message says why."""


@dataclass(frozen=True)
class RenderedFile:
    path: Path
    text: str

    def is_current(self) -> bool:
        """Whether the file on disk already holds exactly this text."""
        try:
            return self.path.read_text() == self.text
        except OSError:
            return False


def render_overlay(config_path: Path, overlay_dir: Path) -> list[RenderedFile]:
    """The overlay's files that follow from the config file at `config_path`: its
    switchyard.yaml, and serve-config.yaml where the overlay has one (the Ray overlay)."""
    if not (overlay_dir / "kustomization.yaml").is_file():
        raise RenderError(f"{overlay_dir} is not a kustomize overlay: no kustomization.yaml")
    try:
        config_text = config_path.read_text()
    except OSError as exc:
        raise RenderError(f"cannot read {config_path}: {exc.strerror}") from None
    try:
        # As the pods read it: no SWITCHYARD_* variable of this shell applies.
        config = load_config(config_path, env={})
    except ConfigError as exc:
        raise RenderError(str(exc)) from None
    files = [RenderedFile(overlay_dir / CONFIG_FILE_NAME, config_text)]
    serve_config_path = overlay_dir / SERVE_CONFIG_FILE_NAME
    if serve_config_path.exists():
        try:
            from switchyard.server.ray_host.app import render_serve_config
        except ImportError as exc:
            raise RenderError(f"{RAY_MISSING} ({exc})") from None
        # Named as the overlay names it, so that `render ray --config switchyard.yaml` run in
        # the overlay writes the very same text.
        text = render_serve_config(config, Path(CONFIG_FILE_NAME), CLUSTER_CONFIG_PATH)
        files.append(RenderedFile(serve_config_path, text))
    return files


def _render_k8s(args: argparse.Namespace) -> int:
    try:
        files = render_overlay(args.config, args.overlay)
    except RenderError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    stale = [file for file in files if not file.is_current()]
    if args.check:
        for file in stale:
            print(
                f"switchyard: {file.path} is not in step with {args.config}: run "
                f"`switchyard render k8s --config {args.config} --overlay {args.overlay}`",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for file in stale:
        try:
            file.path.write_text(file.text)
        except OSError as exc:
            print(f"switchyard: cannot write {file.path}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {file.path}")
    return 0


def add_k8s_target(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k8s = targets.add_parser(
        "k8s",
        help="the config files of a k8s/ kustomize overlay",
        description="Writes a config file into a kustomize overlay of k8s/ (its switchyard.yaml, "
        "the ConfigMap's file) and, for the Ray overlay, the RayService's serveConfigV2 "
        "(serve-config.yaml, as `render ray` writes it). --check writes nothing and exits 1 "
        "when a file has drifted.",
    )
    k8s.add_argument("--config", type=Path, required=True, help="the Switchyard config file")
    k8s.add_argument(
        "--overlay", type=Path, required=True, help="the overlay folder, e.g. k8s/overlays/ray"
    )
    k8s.add_argument(
        "--check", action="store_true", help="only check that the overlay is in step (exit 1)"
    )
    k8s.set_defaults(handler=_render_k8s)

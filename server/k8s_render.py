"""`switchyard render k8s`: keeps a kustomize overlay of k8s/ in step with a config file.

An overlay holds the Switchyard config as `switchyard.yaml`, which its configMapGenerator turns
into the ConfigMap the pods mount at /etc/switchyard. The Ray overlay also holds
`serve-config.yaml`, the Serve config that kustomize copies into the RayService's
serveConfigV2 (a `replacements:` entry): it is `switchyard render ray` of that config, with the
application reading the file where the pods mount it. This command writes both from one config
file, or with --check says which of them have drifted from it (for CI).

TLS: k8s/components/tls mounts the Secret `switchyard-tls` at /etc/switchyard/tls and turns the
probes to HTTPS. A config whose server.tls (or metrics_tls) names files there is checked as the
pods read it (those files exist in the pod only: stand-ins take their place here), and refused
where the overlay and the config disagree: TLS files in the mount without the component, the
component (HTTPS probes) without server.tls, or require_client_cert (the kubelet's probes
present no client certificate).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from switchyard.demo.paths import config_base_dir
from switchyard.server.config import ConfigError, SwitchyardConfig, parse_config
from switchyard.server.config_yaml import load_yaml

CONFIG_FILE_NAME = "switchyard.yaml"  # in an overlay, and the ConfigMap's key
SERVE_CONFIG_FILE_NAME = "serve-config.yaml"  # the Ray overlay's serveConfigV2
# Where every pod mounts the ConfigMap (k8s/base/deployment.yaml, k8s/overlays/ray).
CLUSTER_CONFIG_PATH = Path("/etc/switchyard") / CONFIG_FILE_NAME
# k8s/components/tls: the Secret's mount in the pod, and its keys (kubernetes.io/tls, ca.crt
# as cert-manager writes it) as file names there.
TLS_MOUNT_PATH = CLUSTER_CONFIG_PATH.parent / "tls"
TLS_SECRET_KEYS = ("tls.crt", "tls.key", "ca.crt")
TLS_COMPONENT = Path("components") / "tls"
TLS_SECTIONS = ("tls", "metrics_tls")
TLS_FILE_KEYS = ("cert_file", "key_file", "client_ca_file")
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


def _tls_sections(raw: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """("server.tls", its mapping), likewise metrics_tls, where the raw config sets them."""
    server = raw.get("server") if isinstance(raw, dict) else None
    for name in TLS_SECTIONS:
        section = server.get(name) if isinstance(server, dict) else None
        if isinstance(section, dict):
            yield f"server.{name}", section


def mounted_tls_files(raw: Any) -> dict[str, Path]:
    """The TLS files (by key path, e.g. "server.tls.cert_file") that the raw config reads from
    the TLS Secret's mount; RenderError for a file there that is no key of the Secret."""
    mounted: dict[str, Path] = {}
    for where, section in _tls_sections(raw):
        for key in TLS_FILE_KEYS:
            value = section.get(key)
            if not isinstance(value, str) or not Path(value).is_relative_to(TLS_MOUNT_PATH):
                continue
            path = Path(value)
            if path.parent != TLS_MOUNT_PATH or path.name not in TLS_SECRET_KEYS:
                raise RenderError(
                    f"{where}.{key}: {value} is not a file of the TLS Secret's mount, whose "
                    f"files are {', '.join(str(TLS_MOUNT_PATH / k) for k in TLS_SECRET_KEYS)}"
                )
            mounted[f"{where}.{key}"] = path
    return mounted


def load_overlay_config(config_path: Path) -> SwitchyardConfig:
    """The config file validated as the pods read it: no SWITCHYARD_* variable of this shell
    applies, and the files of the TLS Secret's mount, which exist in the pod only, are stood
    in for by empty files (their contents are the gateway's to check when it starts)."""
    try:
        text = config_path.read_text()
    except OSError as exc:
        raise RenderError(f"cannot read {config_path}: {exc.strerror}") from None
    try:
        raw = load_yaml(text, str(config_path))
        mounted = mounted_tls_files(raw)
        with tempfile.TemporaryDirectory(prefix="switchyard-tls-") as stand_in_dir:
            for where, section in _tls_sections(raw):
                for key in TLS_FILE_KEYS:
                    if f"{where}.{key}" in mounted:
                        stand_in = Path(stand_in_dir) / Path(section[key]).name
                        stand_in.touch()
                        section[key] = str(stand_in)
            return parse_config(raw, config_base_dir(config_path), str(config_path), env={})
    except ConfigError as exc:
        raise RenderError(str(exc)) from None


def overlay_components(overlay_dir: Path) -> list[Path]:
    """The components the overlay's kustomization.yaml lists, as resolved folders."""
    try:
        kustomization = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"cannot read {overlay_dir / 'kustomization.yaml'}: {exc}") from None
    listed = kustomization.get("components") if isinstance(kustomization, dict) else None
    return [(overlay_dir / c).resolve() for c in listed or [] if isinstance(c, str)]


def check_tls_fits_the_overlay(raw: Any, config_path: Path, overlay_dir: Path) -> None:
    """RenderError where the raw config's TLS and the overlay's tls component disagree."""
    has_component = any(
        c.parts[-2:] == TLS_COMPONENT.parts for c in overlay_components(overlay_dir)
    )
    mounted = mounted_tls_files(raw)
    if mounted and not has_component:
        where = next(iter(mounted))
        raise RenderError(
            f"{where} is {mounted[where]}, in the TLS Secret's mount, but "
            f"{overlay_dir / 'kustomization.yaml'} lists no ../../components/tls, which mounts "
            f"it: add it to the overlay's components"
        )
    if not has_component:
        return
    tls = dict(_tls_sections(raw)).get("server.tls")
    if tls is None:
        raise RenderError(
            f"{overlay_dir} lists components/tls, whose probes speak HTTPS, but {config_path} "
            "sets no server.tls: the probes would fail on the plaintext ports; set server.tls "
            f"to the files in {TLS_MOUNT_PATH} (or drop the component)"
        )
    if tls.get("require_client_cert") is True:
        raise RenderError(
            "server.tls.require_client_cert: components/tls does not support mutual TLS: the "
            "kubelet's HTTPS probes present no client certificate, so no pod would get ready "
            "(README, Kubernetes: use exec probes with a client certificate instead)"
        )


def render_overlay(config_path: Path, overlay_dir: Path) -> list[RenderedFile]:
    """The overlay's files that follow from the config file at `config_path`: its
    switchyard.yaml, and serve-config.yaml where the overlay has one (the Ray overlay)."""
    if not (overlay_dir / "kustomization.yaml").is_file():
        raise RenderError(f"{overlay_dir} is not a kustomize overlay: no kustomization.yaml")
    config = load_overlay_config(config_path)
    config_text = config_path.read_text()
    check_tls_fits_the_overlay(load_yaml(config_text, str(config_path)), config_path, overlay_dir)
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

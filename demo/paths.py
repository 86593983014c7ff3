"""Where the demo's files live: its config in the package, its built files in a cache folder.

The build writes into artifacts_dir() and never into the installed package, so an installed
Switchyard runs the demo from a read-only site-packages too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEMO_CONFIG_PATH = Path(__file__).resolve().parent / "config.yaml"
# v1 against a worse v2 and a retrained v3, rolled out on quality (README, Feedback).
QUALITY_CONFIG_PATH = DEMO_CONFIG_PATH.parent / "quality_rollout.yaml"
DEMO_DIR_ENV = "SWITCHYARD_DEMO_DIR"


def artifacts_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of the demo's built files, which the embedded config's relative paths name:
    $SWITCHYARD_DEMO_DIR, else $XDG_CACHE_HOME/switchyard/demo (~/.cache/switchyard/demo)."""
    env = os.environ if env is None else env
    if env.get(DEMO_DIR_ENV):
        return Path(env[DEMO_DIR_ENV]).expanduser()
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "switchyard" / "demo"


def config_base_dir(config_path: Path) -> Path:
    """The folder a config file's relative paths are resolved against: its own folder, or the
    demo build's folder for the configs shipped in demo/ (config.yaml, quality_rollout.yaml)."""
    if config_path.resolve().parent == DEMO_CONFIG_PATH.parent:  # demo/*.yaml
        return artifacts_dir()
    return config_path.resolve().parent

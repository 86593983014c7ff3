"""The demo's quality rollout config (demo/quality_rollout.yaml) with absolute paths, for
gateways started from a test's own folder."""

from __future__ import annotations

from typing import Any

import yaml

from switchyard.demo.build_model import ensure_built
from switchyard.demo.paths import QUALITY_CONFIG_PATH, artifacts_dir


def quality_demo_config() -> dict[str, Any]:
    ensure_built()
    config: dict[str, Any] = yaml.safe_load(QUALITY_CONFIG_PATH.read_text())
    demo = artifacts_dir()
    for version in config["models"][0]["versions"]:
        version["path"] = str(demo / version["path"])
    seeds = config["features"]["store"]["seed_files"]
    for entity, file in seeds.items():
        seeds[entity] = str(demo / file)
    return config

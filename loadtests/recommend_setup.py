"""A gateway serving Recommend on the demo model, its features in Redis (tests, benchmarks)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from loadtests.gateway_process import REPO_ROOT
from switchyard.demo.paths import DEMO_CONFIG_PATH, artifacts_dir

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


def demo_features(prefix: str, store: dict[str, Any]) -> dict[str, Any]:
    """The demo's feature definitions, under key names of this test's own, in Redis."""
    features: dict[str, Any] = copy.deepcopy(
        yaml.safe_load(DEMO_CONFIG_PATH.read_text())["features"]
    )
    for entity in features["entities"].values():
        entity["key"] = prefix + entity["key"]
    features["store"] = store
    return features


def gateway_config(model_path: Path, features: dict[str, Any]) -> dict[str, Any]:
    demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    return {
        "models": [{"name": "ranker", "versions": [{"version": "1", "path": str(model_path)}]}],
        "endpoints": demo["endpoints"],
        "features": features,
        "recommend": {"max_candidates": 50},
    }


def load_features(config_path: Path) -> None:
    """Load the demo's users and items into the store of `config_path` with the CLI."""
    for entity, file in (("user", "users.csv"), ("item", "items.csv")):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "switchyard.server.cli",
                "features",
                "load",
                str(artifacts_dir() / file),
                "--entity",
                entity,
                "--config",
                str(config_path),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"switchyard features load failed:\n{result.stderr}")

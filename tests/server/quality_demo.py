"""The demo's quality rollout config (demo/quality_rollout.yaml) with absolute paths, for
gateways started from a test's own folder, and REST calls to such a gateway."""

from __future__ import annotations

import http.client
import json
from typing import Any

import yaml

from loadtests.gateway_process import Gateway
from switchyard.demo.build_model import ensure_built
from switchyard.demo.paths import QUALITY_CONFIG_PATH, artifacts_dir

ADMIN_TOKEN = "quality-demo-admin-token-0123456789"


def quality_demo_config() -> dict[str, Any]:
    """The config, its admin API on ADMIN_TOKEN."""
    ensure_built()
    config: dict[str, Any] = yaml.safe_load(QUALITY_CONFIG_PATH.read_text())
    demo = artifacts_dir()
    for version in config["models"][0]["versions"]:
        version["path"] = str(demo / version["path"])
    seeds = config["features"]["store"]["seed_files"]
    for entity, file in seeds.items():
        seeds[entity] = str(demo / file)
    config["admin"] = {"token": ADMIN_TOKEN}
    return config


def call(
    gateway: Gateway, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A REST call with the admin token (as alice): status, headers and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Switchyard-Actor": "alice"}
    connection.request(
        method, path, body=None if body is None else json.dumps(body), headers=headers
    )
    response = connection.getresponse()
    raw = response.read()
    return response.status, dict(response.getheaders()), json.loads(raw) if raw else {}

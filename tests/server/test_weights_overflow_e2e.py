"""Weights whose sum overflows (1e308 + 1e308 is inf): a config error at start and at
reload, a 400 from the admin API, never a traceback (a real gateway)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from loadtests.gateway_process import REPO_ROOT, metric_sum, scrape_metrics, start_gateway

ADMIN_TOKEN = "test-admin-token-0123456789"
OVERFLOWING = {"stable": 1e308, "canary": 1e308}


def config(model_path: Path, weights: dict[str, float], **routing: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "ranker", "versions": [{"version": "1", "path": str(model_path)}]}],
        "routing": routing,
        "admin": {"token": ADMIN_TOKEN},
        "endpoints": [
            {
                "name": "recs",
                "variants": {"stable": {"model": "ranker"}, "canary": {"model": "ranker"}},
                "weights": weights,
            }
        ],
    }


def test_overflowing_weights_at_start_are_a_config_error(
    demo_model_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config(demo_model_path, OVERFLOWING)))
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", "serve", "--config", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "endpoints.0.weights: the weights add up to more than the largest number" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_overflowing_weights_by_admin_api_and_reload_are_refused(
    demo_model_path: Path, tmp_path: Path
) -> None:
    gateway = start_gateway(
        config(demo_model_path, {"stable": 1, "canary": 1}, config_reload_s=0.1), tmp_path
    )
    try:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
        connection.request(
            "PUT",
            "/admin/v1/endpoints/recs/weights",
            body=json.dumps({"weights": OVERFLOWING}),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Switchyard-Actor": "alice"},
        )
        response = connection.getresponse()
        message = json.loads(response.read())["error"]
        assert response.status == 400, message
        assert "endpoints.recs.weights: the weights add up to more" in message

        path = tmp_path / "switchyard.yaml"
        written = yaml.safe_load(path.read_text())
        written["endpoints"][0]["weights"] = OVERFLOWING
        path.write_text(yaml.safe_dump(written))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = scrape_metrics(gateway)
            if metric_sum(text, "switchyard_config_reloads_total", result="invalid") >= 1:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the reload was not refused as invalid:\n{gateway.log()}")
        log = gateway.log()
        assert "endpoints.0.weights: the weights add up to more" in log, log
        assert "Traceback" not in log, log
    finally:
        assert gateway.stop() == 0, gateway.log()

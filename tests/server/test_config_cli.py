"""`switchyard config check` and `switchyard config schema`, run as the command is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from switchyard.demo.paths import DEMO_CONFIG_PATH


def switchyard(*args: str) -> subprocess.CompletedProcess[str]:
    # Settings from this environment would override the files' (SWITCHYARD_HTTP_PORT, ...).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWITCHYARD_") or k == "SWITCHYARD_DEMO_DIR"
    }
    return subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_demo_config_passes() -> None:
    result = switchyard("check", str(DEMO_CONFIG_PATH))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{DEMO_CONFIG_PATH}: OK (1 model(s), 1 endpoint(s))"


DEMO = DEMO_CONFIG_PATH.read_text()
OLD_UNIT_BATCHING = "    batching: {max_queue_delay_us: 100}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DEMO + "endpoints: []\n", "endpoints: duplicate key (line"),
        (DEMO.replace("intra_op_threads: 1", "intra_op_thread: 1"),
         "models.0.runtime_options.intra_op_thread: Extra inputs are not permitted"),
        (DEMO.replace("http_port: 8000", "http_port: '8000'"),
         "server.http_port: Input should be a valid integer"),
        (DEMO.replace("    runtime_options:", OLD_UNIT_BATCHING + "    runtime_options:"),
         "models.0.batching.max_queue_delay_us: renamed to max_queue_delay_s (seconds)"),
        (DEMO.replace("stable: {model: ranker, version: \"1\"}", "stable: {model: rankr}"),
         "endpoints.0.variants.stable.model: unknown model 'rankr' (models: ranker)"),
    ],
)  # fmt: skip
def test_invalid_files_exit_2_naming_the_key_path(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = switchyard("check", str(path))
    assert result.returncode == 2
    assert f"  {expected}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_every_error_is_printed(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        DEMO.replace("http_port: 8000", "http_port: x").replace("grpc_port", "grcp_port")
    )
    result = switchyard("check", str(path))
    assert result.returncode == 2
    assert "2 error(s)" in result.stderr
    assert "  server.http_port:" in result.stderr and "  server.grcp_port:" in result.stderr


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = switchyard("check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_schema_is_json_that_validates_the_demo_config() -> None:
    result = switchyard("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert {"server", "models", "endpoints", "features"} <= schema["properties"].keys()
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(yaml.safe_load(DEMO))
    bad = yaml.safe_load(DEMO.replace("http_port: 8000", "http_prot: 8000"))
    assert not validator.is_valid(bad)

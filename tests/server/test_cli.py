"""`switchyard serve` as a user runs it: clear messages and exit codes, no tracebacks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from loadtests.gateway_process import REPO_ROOT, demo_model_config, free_port, start_gateway


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.server.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "m", "version": []}]}))
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "models.0.version: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_file_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(demo_model_config(tmp_path / "absent.onnx", http_port=free_port()))
    )
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 1
    assert "file not found" in result.stderr and "absent.onnx" in result.stderr
    assert "Traceback" not in result.stderr


def serve_on_a_taken_port(
    tmp_path: Path, config_of: Callable[[dict[str, Any]], dict[str, Any]]
) -> Iterator[tuple[int, subprocess.CompletedProcess[str]]]:
    """`serve` with its HTTP port, then its gRPC port, taken by another socket: the taken
    port and the CLI's result, each time. `config_of` makes the config of `server:` keys."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for key in ("http_port", "grpc_port"):
            server = {"host": "127.0.0.1", "http_port": free_port(), "grpc_port": free_port(),
                      "metrics_port": free_port(), key: port}  # fmt: skip
            config = tmp_path / f"{key}.yaml"
            config.write_text(yaml.safe_dump(config_of(server)))
            yield port, run_cli("serve", "--config", str(config))


def test_taken_port_exits_1(tmp_path: Path, demo_model_path: Path) -> None:
    for port, result in serve_on_a_taken_port(
        tmp_path, lambda server: demo_model_config(demo_model_path, **server)
    ):
        assert result.returncode == 1, result.stderr
        assert f"{port}" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_stops_cleanly(tmp_path: Path, demo_model_path: Path) -> None:
    gateway = start_gateway(demo_model_config(demo_model_path), tmp_path)
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(20) == 0
    assert "switchyard stopped" in gateway.log()


def test_serve_with_no_arguments_answers_ready(tmp_path: Path) -> None:
    """The README's promise: `switchyard serve` alone serves the demo (ports moved by env)."""
    ports = {name: str(free_port()) for name in ("HTTP_PORT", "GRPC_PORT", "METRICS_PORT")}
    env = {f"SWITCHYARD_{name}": value for name, value in ports.items()}
    process = subprocess.Popen(
        [sys.executable, "-m", "switchyard.server.cli", "serve"],
        cwd=REPO_ROOT,
        env={**__import__("os").environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"http://127.0.0.1:{ports['HTTP_PORT']}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, "switchyard serve exited"
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0

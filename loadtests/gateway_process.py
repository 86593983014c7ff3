"""Run the real gateway in a subprocess on free ports (for tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_gateway(
    config: dict[str, Any],
    workdir: Path,
    ready_timeout_s: float = 60.0,
    *,
    command: list[str] | None = None,
    cwd: Path = REPO_ROOT,
    ssl_context: ssl.SSLContext | None = None,
) -> Gateway:
    """Write `config` with free ports, run `switchyard serve --config`, wait until ready.

    `command` replaces how `switchyard` is invoked (default: this interpreter running the
    CLI module), `cwd` the folder it runs in. A port another process took between our
    finding it free and the gateway binding it is a race of the test, not a failure: the
    start is tried again on other ports. `ssl_context`: the REST port serves TLS; readiness
    is asked over HTTPS with this client context."""
    for _ in range(BIND_ATTEMPTS - 1):
        try:
            return _start_once(config, workdir, ready_timeout_s, command, cwd, ssl_context)
        except _PortTaken:
            pass
    return _start_once(config, workdir, ready_timeout_s, command, cwd, ssl_context)


BIND_ATTEMPTS = 3


class _PortTaken(RuntimeError):
    """The gateway exited because one of its ports was taken."""


def _start_once(
    config: dict[str, Any],
    workdir: Path,
    ready_timeout_s: float,
    command: list[str] | None,
    cwd: Path,
    ssl_context: ssl.SSLContext | None = None,
) -> Gateway:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    config = {**config, "server": {**config.get("server", {}), "host": "127.0.0.1", **ports}}
    config_path = workdir / "switchyard.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "gateway.log"
    switchyard = command or [sys.executable, "-m", "switchyard.server.cli"]
    process = subprocess.Popen(
        [*switchyard, "serve", "--config", str(config_path)],
        cwd=cwd,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    gateway = Gateway(process, log_path=log_path, **ports)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = gateway.log()
            error = _PortTaken if "cannot bind" in log else RuntimeError
            raise error(f"gateway exited with {process.returncode}:\n{log}")
        scheme = "http" if ssl_context is None else "https"
        if http_ok(f"{scheme}://{gateway.http_url}/v2/health/ready", ssl_context):
            return gateway
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway not ready in {ready_timeout_s} s:\n{gateway.log()}")


def http_ok(url: str, ssl_context: ssl.SSLContext | None = None) -> bool:
    """Whether a GET of `url` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1, context=ssl_context) as response:
            status: int = response.status  # typeshed types urlopen's answer as Any
            return status == 200
    except OSError:
        return False


def demo_model_config(model_path: Path, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "models": [
            {
                "name": "ranker",
                "versions": [{"version": "1", "path": str(model_path)}],
                "runtime_options": {"intra_op_threads": 1},
            }
        ],
    }


def scrape_metrics(gateway: Gateway) -> str:
    """The gateway's Prometheus exposition text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as response:
        body: bytes = response.read()  # typeshed types urlopen's answer as Any
        return body.decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )

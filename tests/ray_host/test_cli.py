"""`switchyard serve --engine ray` as a user runs it: serves, and stops cleanly on SIGTERM;
from this checkout, and installed from the wheel into a fresh venv, run from a folder whose own
server.py, router.py and protos/ would shadow ours (Ray's workers must import our names)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml

from loadtests.gateway_process import REPO_ROOT, demo_model_config, free_port
from tests.packaging.install import build_wheel, install_into_fresh_venv, make_shadowing_folder

pytest.importorskip("ray.serve")

READY_TIMEOUT_S = 120.0  # a fresh local Ray, Serve and two replicas on a small machine


def wait_ready(process: subprocess.Popen[bytes], http_port: int, log: Path) -> None:
    deadline_s = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline_s:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        try:
            url = f"http://127.0.0.1:{http_port}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready in {READY_TIMEOUT_S} s:\n{log.read_text()}")


def wait_printed(pattern: str, log: Path, timeout_s: float = 30.0) -> tuple[str, ...]:
    """The groups of the one line of the log matching `pattern` (printed after ready)."""
    deadline_s = time.monotonic() + timeout_s
    while not (found := re.findall(pattern, log.read_text())) and time.monotonic() < deadline_s:
        time.sleep(0.5)
    assert len(found) == 1, log.read_text()
    groups: tuple[str, ...] = found[0]
    return groups


@pytest.fixture(params=["checkout", "installed-wheel"])
def switchyard_command(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[list[str], Path]:
    """How `switchyard` is run, and the folder it runs in."""
    if request.param == "checkout":
        return [sys.executable, "-m", "switchyard.server.cli"], REPO_ROOT
    venv = install_into_fresh_venv(build_wheel(tmp_path / "wheel"), tmp_path / "venv")
    return [str(venv / "bin" / "switchyard")], make_shadowing_folder(tmp_path / "project")


def test_serve_engine_ray_serves_and_stops_on_sigterm(
    switchyard_command: tuple[list[str], Path],
    demo_model_path: Path,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
    tmp_path: Path,
) -> None:
    command, cwd = switchyard_command
    http_port, grpc_port = free_port(), free_port()
    server = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port}
    config_path = tmp_path / "switchyard.yaml"
    config_path.write_text(yaml.safe_dump(demo_model_config(demo_model_path, **server)))
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [*command, "serve", "--engine", "ray", "--config", str(config_path)],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_ready(process, http_port, log)
        tensor = triton_grpc.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        result = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}").infer(
            "ranker", [tensor]
        )
        (score,) = direct_session.run(["score"], {"features": features})
        np.testing.assert_array_equal(result.as_numpy("score"), score)
        # Serve's fast path by default: the ingress replica's own gRPC port, as printed.
        host, port = wait_printed(r"ingress replica \S+: gRPC on (\S+):(\d+)", log)
        result = triton_grpc.InferenceServerClient(f"{host}:{port}").infer("ranker", [tensor])
        np.testing.assert_array_equal(result.as_numpy("score"), score)
        # REST too, on the replica's own HTTP port (the load tests' REST goes there).
        host, port = wait_printed(r"ingress replica \S+: HTTP on (\S+):(\d+)", log)
        rest = triton_http.InferenceServerClient(f"{host}:{port}")
        tensor = triton_http.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        np.testing.assert_array_equal(rest.infer("ranker", [tensor]).as_numpy("score"), score)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

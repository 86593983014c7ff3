"""The wheel as users get it: only `switchyard/` inside, and it serves from any folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from loadtests.gateway_process import demo_model_config, free_port, http_ok, start_gateway
from tests.packaging.install import build_wheel, install_into_fresh_venv, make_shadowing_folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_into_fresh_venv(wheel, tmp_path_factory.mktemp("venv"))


@pytest.fixture
def shadowing_folder(tmp_path: Path) -> Path:
    return make_shadowing_folder(tmp_path)


def test_the_wheel_holds_only_the_switchyard_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/", 1)[0] for name in names}
    assert {t for t in top_levels if not t.endswith(".dist-info")} == {"switchyard"}
    for subpackage in ("server", "router", "runtimes", "protos", "demo"):
        assert f"switchyard/{subpackage}/__init__.py" in names
    assert "switchyard/protos/open_inference.proto" in names
    assert "switchyard/demo/config.yaml" in names
    assert not [n for n in names if n.startswith(("switchyard/loadtests", "switchyard/tests"))]
    # Nothing the demo build writes is shipped, nor bytecode.
    assert not [
        n for n in names if n.startswith("switchyard/demo/") and n.endswith((".onnx", ".csv"))
    ]
    assert not [n for n in names if n.endswith(".pyc")]


def test_installed_gateway_serves_from_a_folder_with_its_own_server_module(
    installed_venv: Path,
    shadowing_folder: Path,
    demo_model_path: Path,
    direct_session: ort.InferenceSession,
) -> None:
    gateway = start_gateway(
        demo_model_config(demo_model_path),
        shadowing_folder,
        command=[str(installed_venv / "bin" / "switchyard")],
        cwd=shadowing_folder,
    )
    try:
        rows = np.random.default_rng(3).normal(size=(3, 16)).astype(np.float32)
        client = grpcclient.InferenceServerClient(gateway.grpc_url)
        tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        served = client.infer("ranker", [tensor]).as_numpy("score")
        (expected,) = direct_session.run(["score"], {"features": rows})
        np.testing.assert_allclose(served, expected, rtol=1e-6)
        metadata = client.get_server_metadata()
        assert metadata.name == "switchyard"
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_installed_modules_come_from_the_installed_copy(
    installed_venv: Path, shadowing_folder: Path
) -> None:
    # Run from the shadowing folder, where `import server` would find the user's file.
    script = (
        "import switchyard.server.cli, switchyard.protos.open_inference_pb2 as pb; "
        "print(switchyard.server.cli.__file__); print(pb.ModelInferRequest.__module__)"
    )
    result = subprocess.run(
        [str(installed_venv / "bin" / "python"), "-c", script],
        cwd=shadowing_folder,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, message_module = result.stdout.split()
    assert Path(module_file).is_relative_to(installed_venv)
    assert message_module == "switchyard.protos.open_inference_pb2"


def test_embedded_default_builds_the_demo_into_the_cache_folder_and_serves(
    installed_venv: Path, tmp_path: Path
) -> None:
    demo_dir = tmp_path / "demo-cache"
    ports = {name: free_port() for name in ("HTTP_PORT", "GRPC_PORT", "METRICS_PORT")}
    env = {**os.environ, "SWITCHYARD_DEMO_DIR": str(demo_dir), "SWITCHYARD_HOST": "127.0.0.1"}
    env.update({f"SWITCHYARD_{name}": str(port) for name, port in ports.items()})
    log_path = tmp_path / "serve.log"
    process = subprocess.Popen(
        [str(installed_venv / "bin" / "switchyard"), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{ports['HTTP_PORT']}/v2/models/ranker/ready"
        deadline = time.monotonic() + 120
        while not http_ok(url):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
    assert {p.name for p in demo_dir.iterdir()} >= {"ranker.onnx", "users.csv", "items.csv"}
    (demo_package,) = installed_venv.glob("lib/python*/site-packages/switchyard/demo")
    assert not [p for p in demo_package.rglob("*") if p.suffix in (".onnx", ".csv")]

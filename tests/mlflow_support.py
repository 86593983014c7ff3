"""Real parts for the model registry tests: an `mlflow server` of our own, tiny ONNX models,
and versions published to the registry the ways MLflow's own clients publish them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import onnx
from mlflow import MlflowClient
from onnx import TensorProto, helper

from loadtests.gateway_process import free_port

DEFAULT_EXPERIMENT_ID = "0"


class MlflowServer:
    """An MLflow tracking server with a model registry (SQLite) and served artifacts, all in
    `workdir`, which a stop and a start on the same port keep."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 60.0) -> None:
        command = [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{self._workdir / 'mlflow.db'}"),
            *("--artifacts-destination", str(self._workdir / "artifacts"), "--serve-artifacts"),
        ]
        with self._log_path.open("ab") as log:
            # Its own process group: the server runs its web workers as children.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ready_timeout_s
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mlflow server on port {self.port} did not start:\n{self.log()}"
                )
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
        self._process = None

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]


def scaling_model(scale: float) -> onnx.ModelProto:
    """y = x * scale over float32 rows of two: each version's output tells it apart."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    factor = helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "scaling", [x], [y], [factor]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every ONNX Runtime release since 1.10 reads
    onnx.checker.check_model(model)
    return model


def publish_logged_model(client: MlflowClient, name: str, model_dir: Path) -> int:
    """A new version of `name` from a saved MLflow model folder, as MLflow 3's log_model
    publishes it: a logged model (`models:/m-...` source) registered under the name."""
    logged = client.create_logged_model(DEFAULT_EXPERIMENT_ID, name=name)
    client.log_model_artifacts(logged.model_id, str(model_dir))
    return _register(client, name, f"models:/{logged.model_id}", model_id=logged.model_id)


def publish_run_artifacts(client: MlflowClient, name: str, model_dir: Path) -> int:
    """A new version of `name` from a model folder logged as a run's artifacts (the MLflow 2
    way): the version's source is the run's artifact folder."""
    run = client.create_run(DEFAULT_EXPERIMENT_ID)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    return _register(
        client, name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, model_id=None
    )


def _register(
    client: MlflowClient, name: str, source: str, *, model_id: str | None, run_id: str | None = None
) -> int:
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, source, run_id=run_id, model_id=model_id)
    return int(version.version)

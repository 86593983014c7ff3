"""Helpers of the model repository tests: Triton-layout folders of real ONNX rankers, the
repository API's token, and steady traffic that records every answer."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

TOKEN = "model-repository-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}", "x-switchyard-actor": "mlengineer"}
ROWS = np.random.default_rng(5).normal(size=(3, 16)).astype(np.float32)


def place_version(root: Path, model: str, version: int, source: Path) -> Path:
    """Copy `source` to root/model/version/model.onnx (a new file: a new mtime)."""
    target = root / model / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def repository_config(root: Path, **settings: Any) -> dict[str, Any]:
    return {
        "model_repository": {"path": str(root), **settings},
        "admin": {"token": TOKEN},
    }


def features_input(rows: np.ndarray = ROWS) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


@dataclass
class Answers:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    # (model version, variant) of every answer, in order per thread
    served: Counter[tuple[str, str]] = field(default_factory=Counter)
    duration_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


class SteadyTraffic:
    """`threads` callers sending gRPC ModelInfer to `model` back to back until stopped."""

    def __init__(self, url: str, model: str, threads: int = 4) -> None:
        self._url = url
        self._model = model
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers = Answers()
        self._started_s = 0.0

    def __enter__(self) -> SteadyTraffic:
        self._started_s = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.answers.duration_s = time.monotonic() - self._started_s

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Until `count` more answers came back (traffic really flows)."""
        target = self.answers.ok + count
        deadline = time.monotonic() + timeout_s
        while self.answers.ok < target:
            assert time.monotonic() < deadline, f"traffic stalled: {self.answers}"
            time.sleep(0.02)

    def _run(self) -> None:
        client = triton_grpc.InferenceServerClient(self._url)
        while not self._stop.is_set():
            try:
                result = client.infer(self._model, [features_input()], client_timeout=10)
            except InferenceServerException as exc:
                with self._lock:
                    self.answers.failures.append(f"{exc.status()}: {exc.message()}")
                continue
            response = result.get_response()
            variant = response.parameters["switchyard_variant"].string_param
            with self._lock:
                self.answers.ok += 1
                self.answers.served[(response.model_version, variant)] += 1
        client.close()

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from switchyard.runtimes.base import TensorSpec
from switchyard.runtimes.errors import ModelLoadError
from switchyard.runtimes.ort_runtime import OnnxRuntimeModel, OrtOptions, resolve_providers
from switchyard.runtimes.run_placement import WINDOW_RUNS
from tests.edge_models import build_warmup_failing_model


def test_signature_of_the_demo_model(demo_model_path: Path) -> None:
    model = OnnxRuntimeModel(demo_model_path, OrtOptions(), "ranker:1")
    signature = model.load()
    assert signature.platform == "onnxruntime_onnx"
    assert signature.inputs == (TensorSpec("features", "FP32", (-1, 16)),)
    assert signature.outputs == (
        TensorSpec("logit", "FP32", (-1, 1)),
        TensorSpec("score", "FP32", (-1, 1)),
    )
    model.close()


def test_infer_equals_a_direct_session(
    demo_model_path: Path, direct_session: ort.InferenceSession, features: np.ndarray
) -> None:
    model = OnnxRuntimeModel(demo_model_path, OrtOptions(intra_op_threads=1), "ranker:1")
    model.load()
    outputs = asyncio.run(model.infer({"features": features}, ["score"]))
    assert list(outputs) == ["score"]
    np.testing.assert_array_equal(
        outputs["score"], direct_session.run(["score"], {"features": features})[0]
    )
    model.close()


def test_missing_file_is_a_clear_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'m:1'.*file not found.*absent\.onnx"):
        OnnxRuntimeModel(tmp_path / "absent.onnx", OrtOptions(), "m:1").load()


def test_invalid_file_is_a_clear_load_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError, match=r"'m:1'.*broken\.onnx is not a loadable ONNX model"):
        OnnxRuntimeModel(broken, OrtOptions(), "m:1").load()


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        (
            ["auto"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (
            ["auto"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["auto"], ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (["CUDAExecutionProvider"], ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            ["CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CPUExecutionProvider"],
        ),
    ],
)
def test_provider_resolution_prefers_accelerators_and_ends_on_cpu(
    requested: list[str], available: list[str], expected: list[str]
) -> None:
    assert resolve_providers(requested, available) == expected


def test_unusable_accelerator_falls_back_to_cpu(
    demo_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The CPU build lists no CUDA; asking for it must still load, on the CPU, and say so.
    model = OnnxRuntimeModel(
        demo_model_path, OrtOptions(execution_providers=("CUDAExecutionProvider",)), "m:1"
    )
    with caplog.at_level("INFO"):
        model.load()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "not in this onnxruntime build" in caplog.text
    assert "runs on" in caplog.text
    model.close()


class TracedRuns:
    """Records the thread each run of `model` runs on; `slow` makes runs take 60 ms."""

    def __init__(self, model: OnnxRuntimeModel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.model = model
        self.slow = False
        self._real_run = model._run
        self._threads: list[str] = []
        monkeypatch.setattr(model, "_run", self._run)

    def _run(self, inputs: Any, output_names: Any) -> list[np.ndarray]:
        self._threads.append(threading.current_thread().name)
        if self.slow:
            time.sleep(0.06)
        return self._real_run(inputs, output_names)

    def threads(self, runs: int) -> list[str]:
        """Where each of `runs` consecutive infers ran."""
        feeds = {"features": np.zeros((1, 16), np.float32)}

        async def infer() -> None:
            for _ in range(runs):
                await self.model.infer(feeds, ["score"])

        del self._threads[:]
        asyncio.run(infer())
        return list(self._threads)


def test_fast_runs_move_onto_the_event_loop_and_slow_ones_move_them_off(
    demo_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.main_thread().name
    model = OnnxRuntimeModel(demo_model_path, OrtOptions(inline_below_s=0.05), "ranker:1")
    model.load()
    try:
        runs = TracedRuns(model, monkeypatch)
        first = runs.threads(5)
        assert first[0].startswith("ort-ranker:1")  # unknown cost: a thread first
        assert first[-1] == loop_thread  # fast: on the loop
        runs.slow = True  # 60 ms a run, over the 50 ms limit
        slow = runs.threads(WINDOW_RUNS)
        assert slow[0] == loop_thread  # one slow run is not enough
        assert slow[-1].startswith("ort-ranker:1")  # once the median is slow, a thread
        runs.slow = False
        back = runs.threads(2)
        assert back == [first[0], loop_thread]  # a fast threaded run proves it fast again
    finally:
        model.close()


def test_inline_below_zero_keeps_every_run_on_a_thread(
    demo_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = OnnxRuntimeModel(demo_model_path, OrtOptions(inline_below_s=0.0), "ranker:1")
    model.load()
    try:
        threads = TracedRuns(model, monkeypatch).threads(5)
        assert all(name.startswith("ort-ranker:1") for name in threads), threads
    finally:
        model.close()


def test_a_failing_warm_up_is_a_load_error_naming_the_model(tmp_path: Path) -> None:
    path = build_warmup_failing_model(tmp_path / "reshape.onnx")
    with pytest.raises(ModelLoadError) as error:
        OnnxRuntimeModel(path, OrtOptions(), "reshaper:2").load()
    message = str(error.value)
    assert "model 'reshaper:2': the warm-up run" in message
    assert "cannot be reshaped" in message  # onnxruntime's reason, its first line only
    assert "runtime_options.warmup: false" in message  # what the operator can do
    # Without the warm-up it loads, and runs the inputs it can take.
    model = OnnxRuntimeModel(path, OrtOptions(warmup=False), "reshaper:2")
    model.load()
    try:
        outputs = asyncio.run(model.infer({"x": np.arange(6, dtype=np.float32)}, ["y"]))
        np.testing.assert_array_equal(outputs["y"], np.arange(6, dtype=np.float32).reshape(2, 3))
    finally:
        model.close()

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from switchyard.runtimes.base import TensorSpec
from switchyard.runtimes.errors import ModelLoadError
from switchyard.runtimes.ort_runtime import OnnxRuntimeModel, OrtOptions, resolve_providers


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
